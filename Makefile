# Two commands on a fresh machine:
#   make run    - the collector against a local Upbit emulator (offline demo; Redis on 127.0.0.1:6379)
#   make test   - lint, type-check and the whole test suite
# Each target builds .venv from pyproject.toml first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run collector emulator test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/upbit-fanout demo

collector: $(STAMP)
	$(BIN)/upbit-fanout collector

emulator: $(STAMP)
	$(BIN)/upbit-fanout emulator

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/emulator_firehose.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
