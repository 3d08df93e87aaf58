# The two set-up commands: `make demo` runs lamp's main job, `make test` runs the test suite.
# Each creates its own virtual environment (.venv) from nothing on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is enough for the demo and the tests; set TORCH_SPEC for another.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint clean venv

$(BIN)/lamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q torch
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/lamp

venv: $(BIN)/lamp

# The demo writes into out/demo/ (ignored by git, like every lamp-demo-*/ folder).
demo: $(BIN)/lamp
	$(BIN)/lamp demo --out out/demo

# Each test keeps torch on one thread (tests/conftest.py), so one worker per core (pytest-xdist).
TEST_WORKERS ?= 2

test: $(BIN)/lamp
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

lint: $(BIN)/lamp
	$(BIN)/ruff check lamp_cli tests

clean:
	rm -rf $(VENV) build *.egg-info
