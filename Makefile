# hookfleet: `make demo` runs the fleet locally; `make test` runs every check. Nothing else is needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
# Every Python package is pinned with its hashes in requirements-test.lock (`make lock` refreshes it): a
# changed lock or pyproject.toml reinstalls.
LOCK := requirements-test.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)
CODE := hookfleet devstack schemas producer delivery dispatcher retry_scheduler recorder api demo tests bench
PYTEST_ARGS ?=
STEP := deploy/local/step.sh
# Two test processes (pytest-xdist), one test file each at a time: most integration tests wait on the
# network or a retry delay, and every test has its own topics, consumer groups and database schema.
TEST_WORKERS ?= 2

.PHONY: install lock system system-core system-test system-test-late tools tools-kustomize tools-validate test-setup containers stack down status lint unit test demo bench clean node-packages

$(STAMP): pyproject.toml $(LOCK)
	@$(STEP) "python packages" $(SHELL) $(.SHELLFLAGS) '\
	  { test -x $(BIN)/python || python3 -m venv $(VENV); } && \
	  $(BIN)/pip install -q --disable-pip-version-check --require-hashes -r $(LOCK) && \
	  $(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The locks, from pyproject.toml with uv (installed into .venv for this): requirements.lock (what the image
# installs) and requirements-test.lock (that plus the test tools, what .venv installs), with every file's
# sha256. Versions already locked are kept unless pyproject.toml rules them out; `make lock UPGRADE=1`
# takes the newest allowed. pip and setuptools (the build backend) are locked too: the project itself is
# installed with --no-deps --no-build-isolation, so nothing is fetched unpinned.
UV_VERSION := 0.13.8
LOCK_INPUT := printf 'setuptools>=77\npip\n'
LOCK_FLAGS = --python-version 3.11 --generate-hashes --custom-compile-command "make lock" -q $(if $(UPGRADE),--upgrade)
lock:
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(LOCK_INPUT) | $(BIN)/uv pip compile pyproject.toml - $(LOCK_FLAGS) -o requirements.lock
	$(LOCK_INPUT) | $(BIN)/uv pip compile pyproject.toml - --extra test -c requirements.lock $(LOCK_FLAGS) -o $(LOCK)

# Debian packages, installed only when missing, with a single `apt-get update` (apt-get takes one lock, so
# this is one step: the other steps that need a package wait for it). The browser tests drive Debian's
# Chromium through Playwright (no browser is ever downloaded); the observability test runs Debian's
# Prometheus binary with its own config, storage and port (the packaged service is not used).
SYSTEM_SETS := core
system:
	@$(STEP) "debian packages ($(SYSTEM_SETS))" deploy/local/system-packages.sh $(SYSTEM_SETS)

system-core: system

system-test: SYSTEM_SETS := core test
system-test: system

# `make test`: Chromium and Prometheus after the rest (apt-get takes one lock), so that the steps waiting
# for Debian packages (images, stack) start first.
system-test-late: system
	@$(STEP) "debian packages (test)" deploy/local/system-packages.sh test

# kustomize and the strict manifest validator (deploy/validate) for the manifest rendering test: built once
# with Go into ~/.cache/hookfleet, side by side under `make -j`.
tools: tools-kustomize tools-validate

tools-kustomize:
	@$(STEP) "kustomize" deploy/local/kustomize.sh

tools-validate:
	@$(STEP) "manifest validator" deploy/local/validate.sh

# kafkajs for the test that publishes from Node.js (tests/node, tests/integration/test_node_publisher.py):
# `npm ci` installs exactly what tests/node/package-lock.json pins, after the Debian packages (node, npm).
node-packages: system-test-late
	@$(STEP) "node packages" $(SHELL) $(.SHELLFLAGS) 'cd tests/node && npm ci --no-audit --no-fund'

# Every image deploy/docker-compose.yml needs, built under podman from Debian packages and Maven Central
# (deploy/podman/containers.sh: tools installed when missing, the Debian base bootstrapped once into
# ~/.cache/hookfleet/podman, images rebuilt only when their inputs change). Exit status 3 (no containers
# on this host) is not a failure: the container test then skips and says why.
containers: system
	@STEP_SKIP_STATUS=3 $(STEP) "container images" deploy/podman/containers.sh images

# Waits for the Debian packages (PostgreSQL, Java, Maven) and the venv; fetches the Kafka jars once.
stack: system install
	@$(STEP) "local stack (kafka jars, postgresql, kafka)" $(BIN)/hookfleet dev up

down: install
	$(BIN)/hookfleet dev down

status: install
	$(BIN)/hookfleet dev status

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)

# The pure tests alone: only the venv (no broker, database, promtool or Go), under a minute. The broker and
# database addresses point at a closed port, so a test that wrongly asks for them fails instead of starting
# the stack.
unit: install
	HOOKFLEET_TEST_NO_DOCKER=1 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9 DATABASE_URL=postgresql://127.0.0.1:9/none \
	  $(BIN)/pytest -p no:cacheprovider -q tests/unit -m "not tooling and not integration" $(PYTEST_ARGS)

# The set-up steps run at once (each prints "setup: STEP N s"; its output is in deploy/local/.cache/setup/),
# each waiting only for what it needs: Debian packages -> {container images, local stack, test packages};
# venv -> {local stack, lint}; kustomize on its own. A failed step stops the run and prints its log's end.
test-setup: SYSTEM_SETS := core containers
test-setup: system system-test-late install tools-kustomize containers stack lint node-packages

# The manifest validator's first build (minutes of Go) runs beside the set-up and the tests: only the
# manifest test needs it, and it waits for that build (deploy/local/validate.sh takes a lock).
test:
	@start=$$SECONDS; $(STEP) "manifest validator" deploy/local/validate.sh & validator=$$!; \
	  $(MAKE) --no-print-directory -j6 test-setup; \
	  echo "setup: all done in $$((SECONDS - start)) s (the manifest validator builds beside the tests when new)"; \
	  rc=0; $(BIN)/pytest -p no:cacheprovider --timeout=300 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || rc=$$?; \
	  wait $$validator || rc=$$((rc ? rc : 1)); exit $$rc

demo: stack
	$(BIN)/hookfleet db migrate
	$(BIN)/hookfleet topics ensure
	$(BIN)/hookfleet demo

bench: stack
	$(BIN)/python -m bench

clean: down
	rm -rf $(VENV) deploy/local/.cache
