# trackd: `make run` serves on an embedded PostgreSQL; `make test` runs the whole suite;
# `make bench` / `bench-soak` / `bench-growth` / `bench-writer` / `bench-stats` / `bench-fleet` /
# `bench-rewrite` / `bench-verdicts` / `bench-ab` / `bench-trigger` / `loadtest` measure it
# (docs/benchmarks.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check --no-input
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast test-pythons typecheck lint deps-debian need-wrk constraints sizing clean \
	bench bench-soak bench-growth bench-writer bench-stats bench-fleet bench-rewrite bench-profile bench-hostile bench-verdicts \
	bench-ab bench-trigger loadtest eval-truth

# Debian packages the tests drive, as command:package. Installed with apt-get when we are root;
# otherwise make stops and names them. chromium: tests/test_dashboard.py; promtool (package
# prometheus): tests/test_observability.py; wrk: the benchmarks and tests/test_loadtests.py;
# node (package nodejs): tests/test_urls_whatwg.py compares the signing check with Node's WHATWG URL, and
# tests/test_tokens_node.py, test_tokens_vectors.py and test_links_v2.py run the Node token implementation.
# pgbouncer: tests/test_pgbouncer.py runs trackd through a real one in transaction pooling mode (by
# its full path: Debian puts it in /usr/sbin, which is not on a normal user's PATH).
DEBIAN_TOOLS := chromium:chromium promtool:prometheus wrk:wrk node:nodejs /usr/sbin/pgbouncer:pgbouncer

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
# $(call pytest_in,VENV,ARGS)
pytest_in = d=$$(mktemp -d /tmp/trackd-pytest-XXXXXX) && chmod 711 $$d && \
	{ $(1)/bin/python -m pytest --basetemp=$$d/t $(2); rc=$$?; rm -rf $$d; exit $$rc; }
PYTEST = $(call pytest_in,$(VENV),$(PYTEST_ARGS))

# The other Pythons trackd supports (requires-python), each in its own venv with the same pins.
# They run the unit tests only: the code under test is the same, and what differs between
# versions (the interpreter, asyncio, the compiled wheels) shows there, in seconds. A version
# this machine lacks is skipped with a message. PYENV_ROOT or PYTHON_3.xx=/path/python3 override.
OTHER_PYTHONS := 3.12 3.13
PYENV_ROOT    ?= $(HOME)/.pyenv
$(foreach v,$(OTHER_PYTHONS),$(eval PYTHON_$(v) ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/$(v).*/bin/python3))))
PRESENT_PYTHONS := $(strip $(foreach v,$(OTHER_PYTHONS),$(if $(PYTHON_$(v)),$(v))))
MISSING_PYTHONS := $(filter-out $(PRESENT_PYTHONS),$(OTHER_PYTHONS))
# Code-level tests plus the writer on an embedded PostgreSQL (asyncpg is the riskiest wheel):
# no server process, about 20 s per version.
UNIT_TESTS := -m "not e2e and not faults" tests/test_tokens.py tests/test_urls.py tests/test_journal.py \
	tests/test_writer.py tests/test_hotpath.py tests/test_ratelimit.py tests/test_settings.py tests/test_tokens_vectors.py

.venv-%/.installed: pyproject.toml constraints.txt
	$(PYTHON_$*) -m venv .venv-$*
	.venv-$*/bin/pip --disable-pip-version-check --no-input install --quiet -c constraints.txt -e '.[test]'
	touch $@

UNIT_RUNS := $(addprefix unit-,$(PRESENT_PYTHONS))
.PHONY: $(UNIT_RUNS)
$(UNIT_RUNS): unit-%: .venv-%/.installed
	@echo "unit tests on $$(.venv-$*/bin/python --version) ($(PYTHON_$*))"
	@$(call pytest_in,.venv-$*,-q $(UNIT_TESTS))

UNIT_PYTHONS_USED = $(foreach v,$(PRESENT_PYTHONS),$$(.venv-$(v)/bin/python -V) in .venv-$(v) (unit tests);)
test-pythons: $(UNIT_RUNS)
	@$(foreach v,$(MISSING_PYTHONS),echo "Python $(v): not found under $(PYENV_ROOT)/versions, its unit tests skipped";) true
	@if [ "$$CI" = true ]; then \
	  echo "CI: interpreters: $$($(BIN)/python -V) in $(VENV) (ruff, mypy, full suite);$(if $(PRESENT_PYTHONS), $(UNIT_PYTHONS_USED))" \
	    "missing: $(or $(MISSING_PYTHONS),none)"; \
	fi

# mypy --strict over app/, configured in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) deps-debian
	$(BIN)/ruff check .
	$(BIN)/mypy
	@$(MAKE) --no-print-directory test-pythons
	$(PYTEST)

test-fast: PYTEST_ARGS = -m "not faults"
test-fast: $(STAMP) deps-debian
	$(PYTEST)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Replicas, CPU and database load for PEAK interactions/s from docs/bench/latest.json, written
# into k8s/overlays/prod (docs/scaling.md). e.g. make sizing PEAK=50000 HEADROOM=0.6 ZONES=3
PEAK     ?= 50000
HEADROOM ?= 0.6
ZONES    ?= 3
sizing: $(STAMP)
	$(BIN)/trackd sizing --peak $(PEAK) --headroom $(HEADROOM) --zones $(ZONES) --write-overlay

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

# The rollup trigger before and after migration 012, batch by batch in one database (a run of
# bench-writer against a run of bench-writer differs by more than a trigger change): µs/event of
# wall and PostgreSQL CPU for each. BENCH_TRIGGER_ARGS="--events 600000 --recipients 180000".
bench-trigger: $(STAMP)
	$(BIN)/python -m loadtests.bench_trigger $(BENCH_TRIGGER_ARGS)

# The hot path of this tree and another side by side: BENCH_AB_OTHER=/path/to/a/checkout (for
# instance `git worktree add --detach ../old <commit>`), BENCH_RUNS, BENCH_DURATION, BENCH_OUT.
bench-ab: $(STAMP) need-wrk
	@test -n "$(BENCH_AB_OTHER)" || { echo "bench-ab: set BENCH_AB_OTHER=/path/to/another/checkout"; exit 2; }
	BENCH_AB_OTHER=$(BENCH_AB_OTHER) $(BIN)/python -m loadtests.ab

# The read side at size (issue 13): a campaign of BENCH_STATS_EVENTS (10M) events built through the
# writer, then stats / links / series / feed p50 and p99 and the docs/analytics.md cookbook queries;
# docs/bench/stats.json. BENCH_STATS_EVENTS=200000 for a dry run of about a minute.
bench-stats: $(STAMP)
	$(BIN)/python -m loadtests.bench_stats

# Engagement truth (issue 14): the labelled evaluation set (tests/data/engagement/cases.json)
# through the real hot path and the deferred rules in PostgreSQL: machine recall and people
# flagged, overall and per class (docs/engagement.md). EVAL_ARGS=--verbose lists every miss.
eval-truth: $(STAMP)
	$(BIN)/python -m tests.tools.eval_truth $(EVAL_ARGS)

# Deferred verdicts (migration 011): BENCH_VERDICTS_EVENTS (200,000) new events, 10 % of them
# scanner bursts, judged by trackd_judge_verdicts in calls of BENCH_VERDICTS_LIMIT (50,000) over
# BENCH_VERDICTS_HISTORY (1,000,000) stored events; events/s judged, docs/bench/verdicts.json.
bench-verdicts: $(STAMP)
	$(BIN)/python -m loadtests.bench_verdicts

# Many pods, one primary: BENCH_FLEET (4) trackd processes with their own journals against one
# PostgreSQL, all under load at once, then one process; docs/bench/fleet.json (docs/scaling.md).
bench-fleet: $(STAMP) need-wrk
	$(BIN)/python -m loadtests.bench_fleet

# The rewrite engine in-process (compile MB/s, renders/s), then POST /v1/rewrite through a real
# server (p99 for a 100 KB email, click p99 with and without rewrites). Both run; either missing
# its target fails the target.
bench-rewrite: $(STAMP) need-wrk
	@$(BIN)/python -m loadtests.bench_rewrite; engine=$$?; \
	$(BIN)/python -m loadtests.bench_rewrite_api; api=$$?; \
	exit $$(( engine || api ))

loadtest: $(STAMP)
	$(BIN)/python -m loadtests.loadtest

constraints: $(STAMP)
	{ echo "# Exact versions of every package trackd and its tests install, transitive ones included."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^trackd'; } > constraints.txt

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(OTHER_PYTHONS)) .pytest_cache .ruff_cache .hypothesis .mypy_cache
