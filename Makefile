# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint bench loadtest constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/trackd serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not faults"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

constraints: $(STAMP)
	{ echo "# Exact versions of every package trackd and its tests install, transitive ones included."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^trackd'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# promtool (Debian package `prometheus`) checks and unit-tests k8s/observability/alerts.yaml in
# tests/test_observability.py. Installed by apt-get when run as root; otherwise make says what to install.
.PHONY: deps-debian
test: deps-debian
deps-debian:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing promtool: apt-get install prometheus"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	      && command -v promtool >/dev/null 2>&1; \
	  else \
	    echo "promtool is missing: install the Debian package, as root: apt-get install prometheus" >&2; exit 1; \
	  fi; }
