# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs prunus from the lock, runs dense FedAvg and
#               a pruned federation on synthetic data and prints their comparison
#   make test   installs the dev extras and runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Every transitive dependency is pinned in the locks (made by `make lock`, with
# uv from PyPI and the CPU build of torch 2.13.0 these machines hold in
# /opt/wheels); pip installs them as they are, without resolving anything.
PIP    := $(BIN)/pip install --no-deps
LOCK   := $(BIN)/uv pip compile pyproject.toml -c constraints.txt --find-links /opt/wheels --python-version 3.11

.PHONY: demo test install install-dev lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

install: $(BIN)/python
	$(PIP) -r requirements.lock
	$(PIP) -e .

install-dev: $(BIN)/python
	$(PIP) -r requirements-dev.lock
	$(PIP) -e .
# npm: dclint, the Compose linter of tests/docker, pinned in package-lock.json
	npm ci --no-audit --no-fund

demo: install
	$(BIN)/prunus demo --out runs/demo

test: install-dev
	$(BIN)/python -m pytest

# regenerate both locks after changing a dependency in pyproject.toml or constraints.txt
lock: install
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock

clean:
	rm -rf runs .pytest_cache
