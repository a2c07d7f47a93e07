# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite;
# `make bench` / `bench-soak` / `bench-growth` / `bench-writer` / `loadtest` measure it (docs/benchmarks.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint bench bench-soak bench-growth bench-writer bench-profile loadtest need-wrk constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/trackd serve

# wrk (Debian package `wrk`) drives the benchmarks and one test: installed when we are root.
need-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is not installed: install the Debian package 'wrk' (apt-get install wrk) and run make again" >&2; \
	    exit 1; \
	  fi; }

# Each run gets its own pytest base directory: pytest re-chmods the shared /tmp/pytest-of-<user> to
# 0700 at every session start, which locks the embedded PostgreSQL's unprivileged user out of the
# data directory of any other session running at that moment (pg_ctl stop then fails).
PYTEST = d=$$(mktemp -d /tmp/trackd-pytest-XXXXXX) && chmod 711 $$d && \
	{ $(BIN)/python -m pytest --basetemp=$$d/t $(PYTEST_ARGS); rc=$$?; rm -rf $$d; exit $$rc; }

test: $(STAMP) need-wrk
	$(BIN)/ruff check .
	$(PYTEST)

test-fast: PYTEST_ARGS = -m "not faults"
test-fast: $(STAMP)
	$(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Load generator and servers share this machine: see docs/benchmarks.md for how to read the numbers.
bench: $(STAMP) need-wrk
	$(BIN)/python -m loadtests.bench

bench-profile: $(STAMP) need-wrk
	BENCH_PROFILE=1 BENCH_RUNS=1 BENCH_OUT=loadtests/results/profile.json $(BIN)/python -m loadtests.bench

BENCH_EVENTS ?= 2000000
bench-soak: $(STAMP) need-wrk
	BENCH_EVENTS=$(BENCH_EVENTS) $(BIN)/python -m loadtests.bench

BENCH_GROWTH_ROWS ?= 10000000
bench-growth: $(STAMP) need-wrk
	BENCH_GROWTH_ROWS=$(BENCH_GROWTH_ROWS) BENCH_RUNS=$${BENCH_RUNS:-2} $(BIN)/python -m loadtests.bench

bench-writer: $(STAMP)
	$(BIN)/python -m loadtests.bench_writer

loadtest: $(STAMP)
	$(BIN)/python -m loadtests.loadtest

constraints: $(STAMP)
	{ echo "# Exact versions of every package trackd and its tests install, transitive ones included."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^trackd'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
