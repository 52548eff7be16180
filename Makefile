# hookfleet: `make demo` runs the fleet locally; `make test` runs every check. Nothing else is needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CODE := hookfleet schemas producer dispatcher retry_scheduler recorder api demo tests bench
PYTEST_ARGS ?=
# Two test processes (pytest-xdist), one test file each at a time: most integration tests wait on the
# network or a retry delay, and every test has its own topics, consumer groups and database schema.
TEST_WORKERS ?= 2

.PHONY: install system-core system-test tools containers stack down status lint test demo bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Debian packages, installed only when missing, with a single `apt-get update`. The browser tests drive
# Debian's Chromium through Playwright (no browser is ever downloaded); the observability test runs
# Debian's Prometheus binary with its own config, storage and port (the packaged service is not used).
system-core:
	deploy/local/system-packages.sh core

system-test:
	deploy/local/system-packages.sh core test

# kustomize and the strict manifest validator (deploy/validate) for the manifest rendering test and Jaeger v2
# for the tracing test: built once with Go into ~/.cache/hookfleet.
tools:
	deploy/local/kustomize.sh >/dev/null
	deploy/local/validate.sh >/dev/null
	deploy/local/jaeger.sh >/dev/null

# Every image deploy/docker-compose.yml needs, built under podman from Debian packages and Maven Central
# (deploy/podman/containers.sh: tools installed when missing, the Debian base bootstrapped once into
# ~/.cache/hookfleet/podman, images rebuilt only when their inputs change). Exit status 3 (no containers
# on this host) is not a failure: the container test then skips and says why.
containers: install
	PATH="$(CURDIR)/$(BIN):$$PATH" deploy/podman/containers.sh images || [ $$? -eq 3 ]

stack: system-core install
	$(BIN)/hookfleet dev up

down: install
	$(BIN)/hookfleet dev down

status: install
	$(BIN)/hookfleet dev status

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)

test: system-test tools containers stack lint
	$(BIN)/pytest -p no:cacheprovider --timeout=300 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: stack
	$(BIN)/hookfleet db migrate
	$(BIN)/hookfleet topics ensure
	$(BIN)/hookfleet demo

bench: stack
	$(BIN)/python -m bench

clean: down
	rm -rf $(VENV) deploy/local/.cache
