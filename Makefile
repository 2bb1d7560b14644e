# Quick start: `make demo` and `make test` each build .venv from nothing and run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
# bench_peers' peers; mosaicml-streaming pins numpy<2.2, so it goes in without its pins
# (the bench extra holds what it imports).
STREAMING := mosaicml-streaming==0.13.0
# A CPU build of this torch lies on disk on our machines; an unpinned torch pulls CUDA.
TORCH  := torch==2.13.0

.PHONY: venv demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,bench]"
	$(BIN)/python -m pip install --quiet --no-deps "$(STREAMING)"
	touch $(BENCH_STAMP)

demo: venv
	$(BIN)/python examples/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
