# Convenience targets; each works from a fresh clone with only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: venv demo test lint check bench bench-small bench-many bench-10m soak clean

$(BIN)/feedsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

venv: $(BIN)/feedsync

demo: venv          ## sync the bundled feeds into the bundled emulator
	$(BIN)/python -m feedsync.demo config/demo.yaml

test: venv          ## the test suite
	$(BIN)/pytest -q

lint: venv          ## mypy --strict and ruff
	$(BIN)/mypy --strict feedsync
	$(BIN)/ruff check feedsync tests bench

check: test lint    ## what CI runs

bench: venv         ## 1M-row cycles over HTTP(S) against the strict emulator, issue 18's table
	$(BIN)/python bench/run.py 1000000 --churn 0.01

bench-small: venv   ## the same at 20k rows (a few seconds; CI runs it in tests/test_bench.py)
	$(BIN)/python bench/run.py 20000 --churn 0.01

bench-many: venv    ## 200 feeds (small and large, shared suppliers) over HTTP: full and unchanged cycles
	$(BIN)/python bench/many.py

bench-10m: venv     ## the same at 10M rows (about 10 minutes and 12 GB of disk; the emulator keeps nothing)
	$(BIN)/python bench/run.py 10000000 --churn 0.01 --sink

soak: venv          ## the daemon for 10 minutes on short schedules; fails if RSS or descriptors grow
	$(BIN)/python bench/soak.py --duration 600

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info demo-state
