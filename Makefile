# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite;
# `make bench` / `bench-soak` / `bench-growth` / `bench-writer` / `loadtest` measure it (docs/benchmarks.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint deps-debian need-wrk constraints sizing clean \
	bench bench-soak bench-growth bench-writer bench-profile bench-hostile loadtest

# Debian packages the tests drive, as command:package. Installed with apt-get when we are root;
# otherwise make stops and names them. chromium: tests/test_dashboard.py; promtool (package
# prometheus): tests/test_observability.py; wrk: the benchmarks and tests/test_loadtests.py;
# node (package nodejs): tests/test_urls_whatwg.py compares the signing check with Node's WHATWG URL.
DEBIAN_TOOLS := chromium:chromium promtool:prometheus wrk:wrk node:nodejs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@ $(RUN_STAMP)

# `make run` installs only what serving needs (no test stack: ~600 MB less).
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

run: $(RUN_STAMP)
	$(BIN)/trackd serve

deps-debian:
	@missing=""; \
	for pair in $(DEBIAN_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	  else \
	    echo "the tests need the Debian packages:$$missing -- run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

# The benchmarks need only wrk.
need-wrk:
	@$(MAKE) --no-print-directory deps-debian DEBIAN_TOOLS=wrk:wrk

# Each run gets its own pytest base directory: pytest re-chmods the shared /tmp/pytest-of-<user> to
# 0700 at every session start, which locks the embedded PostgreSQL's unprivileged user out of the
# data directory of any other session running at that moment (pg_ctl stop then fails).
PYTEST = d=$$(mktemp -d /tmp/trackd-pytest-XXXXXX) && chmod 711 $$d && \
	{ $(BIN)/python -m pytest --basetemp=$$d/t $(PYTEST_ARGS); rc=$$?; rm -rf $$d; exit $$rc; }

test: $(STAMP) deps-debian
	$(BIN)/ruff check .
	$(PYTEST)

test-fast: PYTEST_ARGS = -m "not faults"
test-fast: $(STAMP) deps-debian
	$(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Replicas, CPU and database load for PEAK interactions/s from docs/bench/latest.json, written
# into k8s/overlays/prod (docs/scaling.md). e.g. make sizing PEAK=50000 HEADROOM=0.6
PEAK     ?= 50000
HEADROOM ?= 0.6
sizing: $(STAMP)
	$(BIN)/trackd sizing --peak $(PEAK) --headroom $(HEADROOM) --write-overlay

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

# Clicks with and without hostile clients (non-reading pipeliners, slowloris, a 128 MB stream).
bench-hostile: $(STAMP) need-wrk
	$(BIN)/python -m loadtests.hostile

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
