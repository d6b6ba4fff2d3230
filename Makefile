# feedback-loop — the two commands a new machine needs are `make run` and `make test`.
# Both create .venv and install the pinned dependencies (requirements.lock) when missing.
PYTHON ?= python3
# Let Python cache bytecode in the venv even where the environment turns it off: the tests start
# many Python processes (Prefect engine, worker, CLI children) that would recompile every module.
export PYTHONDONTWRITEBYTECODE :=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: install run test chromium test-server test-slow lint format lock bench-load bench-load-10m clean-data help

help:
	@echo "make run         run the nightly flow on the demo data (generated on first run)"
	@echo "make test        run the test suite (default, fast)"
	@echo "make test-slow   run the slow scale tests"
	@echo "make test-server real Prefect server + work pool + workers: deploy, queue, alerts, extraction on two workers (~8 min)"
	@echo "make lint        ruff + sqlfluff"
	@echo "make generated   rewrite every file the source declarations give (tasks/generated.py)"
	@echo "make bench-load  load-to-staging benchmark on 1M events (N=... to change)"
	@echo "make bench-ingest  ingest benchmark: 10M file events vs DuckDB's read_json, 1M over HTTP"
	@echo "make bench-validate  GX vs plain-SQL validation of a 10M-row staging table (ROWS=...)"
	@echo "make bench-names  name redaction: recall, product words kept, tickets/s, load slowdown"
	@echo "make bench-parallel  load step of the demo on 10 API fakes, serial vs parallel pulls (LATENCY_MS=30 PULLS=4)"
	@echo "make bench-scale  nights 1 (first), 2 (no new data), 3 (one new day) per history size (SIZES=...)"
	@echo "make evaluate    scenario suite: 11 planted worlds replayed 14 nights each, targets checked"
	@echo "make drill       robustness/privacy drill: crashes, faulty APIs, bad inputs/settings, secret scan"
	@echo "make lock        re-pin requirements.lock from pyproject.toml"
	@echo "make clean-data  delete data/ (demo files, DuckDB, tracker)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q -p $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q -p $(BIN)/python --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/feedback-loop run

# DuckDB 1.1.3 and duckdb-cli 1.5.6 in their own small environment: the analyst snapshot must open
# in the DuckDB people have (tests/test_nightly_e2e.py; the fixture makes it too when missing).
DUCKDB1 := .venv-duckdb1/.installed
$(DUCKDB1): $(STAMP)
	@test -x .venv-duckdb1/bin/python || $(BIN)/uv venv -q -p $(BIN)/python .venv-duckdb1
	$(BIN)/uv pip install -q -p .venv-duckdb1/bin/python duckdb==1.1.3 duckdb-cli==1.5.6
	@echo "duckdb==1.1.3 duckdb-cli==1.5.6" > $(DUCKDB1)

# Headless Chromium for the report's browser test (tests/test_nightly_e2e.py): Debian's chromium,
# installed when missing and we are root with apt-get; otherwise the test tries, then skips loudly.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	echo "chromium could not be installed: the report's browser test will be skipped"

test: $(STAMP) $(DUCKDB1) chromium
	$(BIN)/python -m pytest -m "not slow and not server"

test-server: $(STAMP)
	$(BIN)/python -m pytest -m server -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint sql

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

N ?= 1000000
bench-load: $(STAMP)
	$(BIN)/python benchmarks/bench_load.py --events $(N)

bench-load-10m: $(STAMP)
	$(BIN)/python benchmarks/bench_load.py --events 10000000

.PHONY: bench-validate
ROWS ?= 10000000
bench-validate: $(STAMP)
	$(BIN)/python benchmarks/bench_validate.py --rows $(ROWS)

# Every checked-in file that follows from the vendors' declarations (raw DDL and suites, the
# staging suites' source sets, raw docs, the staging unions, tasks/sources.json);
# tests/test_generated.py fails while one differs. `make unions` is the old name.
.PHONY: generated unions
generated: $(STAMP)
	$(BIN)/python -m tasks.generated

unions: generated

.PHONY: bench-ingest
EVENTS ?= 10000000
HTTP_EVENTS ?= 1000000
REPEAT ?= 1
bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py --events $(EVENTS) --http-events $(HTTP_EVENTS) \
		--repeat $(REPEAT)

.PHONY: bench-names
TICKETS ?= 2000
LOAD_TICKETS ?= 20000
BASELINE ?=
bench-names: $(STAMP)
	$(BIN)/python benchmarks/bench_names.py --tickets $(TICKETS) --load-tickets $(LOAD_TICKETS) \
		$(if $(BASELINE),--baseline $(BASELINE))

.PHONY: bench-parallel
LATENCY_MS ?= 30
PULLS ?= 4
bench-parallel: $(STAMP)
	$(BIN)/python benchmarks/bench_parallel.py --latency-ms $(LATENCY_MS) --parallel $(PULLS) \
		--repeat $(REPEAT)

.PHONY: bench-scale
SIZES ?= 1000000 10000000
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py --sizes $(SIZES)

.PHONY: evaluate
EVAL_JOBS ?= 2
evaluate: $(STAMP)
	$(BIN)/feedback-loop evaluate --jobs $(EVAL_JOBS)

.PHONY: drill
DRILL_JOBS ?= 2
drill: $(STAMP)
	$(BIN)/python -m benchmarks.drill --jobs $(DRILL_JOBS)

clean-data:
	rm -rf data
