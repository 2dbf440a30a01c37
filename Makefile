# Two commands for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each installs only what it needs into .venv: the demo ~320 MB (~40 s), the tests and
# tools ~1 GB (~60 s), measured on a 2-core machine with a warm pip cache.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint unit integration bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/processor demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check processor
	$(BIN)/mypy
	$(BIN)/lint-imports  # the layering contracts in .importlinter

test: lint
	$(BIN)/python -m pytest

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit

integration: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/integration

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-output spill .pytest_cache .mypy_cache .ruff_cache
