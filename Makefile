# mlcicd-dagster: `make demo`, `make test`, `make ui`. Each builds .venv when needed.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
export MLCICD_HOME ?= $(CURDIR)/.mlcicd

.PHONY: demo test test-extended ui lint typecheck pytest bench clean-home install

install: $(STAMP)

# torch first: with it installed, pip takes the machine's CPU wheel instead of
# fetching several GB of CUDA packages for the `torch==` pin in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlcicd demo

ui: $(STAMP)
	DAGSTER_HOME=$(MLCICD_HOME)/dagster $(BIN)/mlcicd ui

lint: $(STAMP)
	$(BIN)/ruff check mlcicd_dagster assets sensors definitions.py tests bench
	$(BIN)/ruff format --check mlcicd_dagster assets sensors definitions.py tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not extended" --durations=30 $(PYTEST_ARGS)

# `make test` runs every suite, the fault-injection suite (tests/faults: real kill -9 at
# each rollout phase) and the built wheel in a fresh virtual environment
# (tests/test_wheel.py: no network, ~3 min) included. `test-extended` runs what is marked
# `extended` (nothing at present), for suites too heavy for CI's time on 2 cores.
test-extended: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m extended $(PYTEST_ARGS)

test: lint typecheck pytest

# Every benchmark, each writing its section of docs/benchmarks.md (bench_serving needs
# Debian's `wrk` as its load generator).
BENCHES := bench_import bench_lead_time bench_validation bench_landing bench_gates \
	bench_gate_simulation bench_canary_analysis bench_canary_tasks bench_canary_guardrails \
	bench_monitoring bench_serving

bench: $(STAMP)
	set -e; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python -m bench.$$b; done

clean-home:
	rm -rf $(MLCICD_HOME)
