# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint deps-debian constraints sizing clean

# Debian packages the tests drive, as command:package. Installed with apt-get when we are root;
# otherwise make stops and names them.
# chromium: tests/test_dashboard.py; promtool (package prometheus): tests/test_observability.py.
DEBIAN_TOOLS := chromium:chromium promtool:prometheus

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/trackd serve

deps-debian:
	@missing=""; \
	for pair in $(DEBIAN_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "the tests need the Debian packages:$$missing -- run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

test: $(STAMP) deps-debian
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP) deps-debian
	$(BIN)/python -m pytest -m "not faults"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Replicas, CPU and database load for PEAK interactions/s from docs/bench/latest.json, written
# into k8s/overlays/prod (docs/scaling.md). e.g. make sizing PEAK=50000 HEADROOM=0.6
PEAK     ?= 50000
HEADROOM ?= 0.6
sizing: $(STAMP)
	$(BIN)/trackd sizing --peak $(PEAK) --headroom $(HEADROOM) --write-overlay

constraints: $(STAMP)
	{ echo "# Exact versions of every package trackd and its tests install, transitive ones included."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^trackd'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
