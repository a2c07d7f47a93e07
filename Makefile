# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint bench loadtest constraints sizing clean

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
