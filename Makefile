# hookfleet: `make demo` runs the fleet locally; `make test` runs every check. Nothing else is needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CODE := hookfleet schemas producer dispatcher retry_scheduler recorder api demo tests bench
PYTEST_ARGS ?=

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install stack down status lint test demo bench clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium through Playwright; no browser is ever downloaded.
$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver

browser: $(CHROMIUM)

stack: install
	$(BIN)/hookfleet dev up

down: install
	$(BIN)/hookfleet dev down

status: install
	$(BIN)/hookfleet dev status

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)

# The observability test runs a real Prometheus: Debian's package, installed once. Its service is not
# used (tests start their own binary with a private config, storage and port).
/usr/bin/prometheus:
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)

test: stack lint /usr/bin/prometheus browser
	$(BIN)/pytest -p no:cacheprovider --timeout=300 $(PYTEST_ARGS)

demo: stack
	$(BIN)/hookfleet db migrate
	$(BIN)/hookfleet topics ensure
	$(BIN)/hookfleet demo

bench: stack
	$(BIN)/python -m bench

clean: down
	rm -rf $(VENV) deploy/local/.cache
