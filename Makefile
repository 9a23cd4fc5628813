# One tooling path for a laptop and CI: `make test` is exactly what .ci/run runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the test suite starts as real servers (command:package). Installed when root.
TEST_DEBS := mosquitto:mosquitto victoria-metrics:victoria-metrics prometheus-alertmanager:prometheus-alertmanager chromium:chromium pdftoppm:poppler-utils nats-server:nats-server initdb:postgresql
# ... and those the benchmarks use as references.
BENCH_DEBS := $(TEST_DEBS) mosquitto_pub:mosquitto-clients

.PHONY: venv kernels system-deps lint format typecheck unit test demo bench fuzz chaos soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The detection kernels (numba) compiled into their cache once, not by the first test or service.
kernels: venv
	$(BIN)/python -m detection.registry

system-deps:
	@bash scripts/system-deps.sh $(TEST_DEBS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy

test: venv system-deps lint kernels
	$(BIN)/python -m pytest

demo: venv kernels
	$(BIN)/boltwatch demo

bench: venv kernels
	@bash scripts/system-deps.sh $(BENCH_DEBS)
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/detect.py
	$(BIN)/python bench/alert_latency.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/cluster_e2e.py

# Coverage-guided fuzzing (atheris, installed on demand: not a dev dependency) of each decoder and
# the API's body parsers, FUZZ_SECONDS each; prints inputs, executions/s and crashes per harness.
# FUZZ_RUNS stops each harness after that many inputs (the README's figure: 10000000);
# FUZZ_RSS_MB is libFuzzer's memory limit (its own bookkeeping grows over millions of inputs).
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?= 0
FUZZ_RSS_MB ?= 2048
fuzz: venv
	@$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/python -m pip install --quiet atheris
	$(BIN)/python -m fuzz.run --seconds $(FUZZ_SECONDS) --runs $(FUZZ_RUNS) --rss-limit-mb $(FUZZ_RSS_MB)

# The chaos suite at full size (tests/chaos; `make test` runs it at short size): kill -9 x10 under
# 50,000 readings, a 10-minute webhook outage, a 10-minute overload, ... (tens of minutes).
chaos: venv system-deps
	CHAOS_FULL=1 $(BIN)/python -m pytest -m chaos -rA -s tests/chaos

# RSS of `boltwatch run` over SOAK_MINUTES at a rated load, with its flatness verdict.
SOAK_MINUTES ?= 30
soak: venv
	@bash scripts/system-deps.sh $(BENCH_DEBS)
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
