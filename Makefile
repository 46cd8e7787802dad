# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs prunus from the lock, runs dense FedAvg and
#               a pruned federation on synthetic data and prints their comparison
#   make test   installs the dev extras and runs the test suite, then the
#               compatibility job (`test-compat`: the Flower part of the suite
#               on the current Flower release, in a venv of its own)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Every transitive dependency is pinned in the locks (made by `make lock`, with
# uv from PyPI and the CPU build of torch 2.13.0 these machines hold in
# /opt/wheels); pip installs them as they are, without resolving anything.
PIP    := $(BIN)/pip install --no-deps
LOCK   := $(BIN)/uv pip compile pyproject.toml -c constraints.txt --find-links /opt/wheels --python-version 3.11

# the compatibility job: another venv, the lock with flwr 1.42.0, and the tests
# that exercise Flower (engine equivalence with the accelerators on and off,
# end-to-end runs, the accelerators' own tests, wire sizes, the Flower edge)
COMPAT := .venv-flwr142
COMPAT_TESTS := tests/simulations/test_engines.py tests/simulations/test_simulate_e2e.py \
	tests/common/test_flower_compat.py tests/common/test_flower_compat_contracts.py tests/common/test_wire_size.py \
	tests/simulations/test_flower_free.py tests/client/test_client_app.py tests/server/test_discovery.py \
	tests/simulations/test_actor_share.py

.PHONY: demo test test-compat install install-dev lock clean

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
	$(MAKE) test-compat

$(COMPAT)/bin/python:
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --upgrade pip

test-compat: $(COMPAT)/bin/python
	$(COMPAT)/bin/pip install --no-deps -r requirements-dev-flwr142.lock
	$(COMPAT)/bin/pip install --no-deps -e .
	$(COMPAT)/bin/python -c "import flwr; print('compatibility job: flwr', flwr.__version__)"
	$(COMPAT)/bin/python -m pytest $(COMPAT_TESTS)

# regenerate both locks after changing a dependency in pyproject.toml or constraints.txt
lock: install
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock
	cp requirements-dev.lock requirements-dev-flwr142.lock  # the same pins but Flower's (uv keeps an output's pins)
	$(BIN)/uv pip compile pyproject.toml -c constraints-flwr142.txt --find-links /opt/wheels --python-version 3.11 \
		--extra dev -o requirements-dev-flwr142.lock

clean:
	rm -rf runs .pytest_cache $(COMPAT)
