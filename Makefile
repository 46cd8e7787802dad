# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs prunus, runs a federated simulation on
#               the embedded synthetic data and prints the final table
#   make test   installs the dev extras and runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -c constraints.txt

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

install: $(BIN)/python
	$(PIP) -e .

install-dev: $(BIN)/python
	$(PIP) -e ".[dev]"
# npm: dclint, the Compose linter of tests/docker, pinned in package-lock.json
	npm ci --no-audit --no-fund

demo: install
	$(BIN)/prunus demo --out runs/demo

test: install-dev
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache
