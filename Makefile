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
LOCK   := $(BIN)/uv pip compile pyproject.toml -c constraints.txt --find-links /opt/wheels --no-sources --no-config --python-version 3.11
# Where torch's CPU build (the locks' torch==2.13.0+cpu) comes from: the PyTorch
# CPU index; PyPI's Linux wheel is the CUDA build (gigabytes). `make lock` writes
# it into each lock as an --extra-index-url line, which pip honours.
TORCH_INDEX := https://download.pytorch.org/whl/cpu
# TORCH=REQUIREMENT installs that torch instead of the lock's pin (macOS, where
# no +cpu build exists: make demo TORCH=torch==2.13.0, PyPI's wheel).
TORCH ?=
TORCH_LINES := ^(--extra-index-url|torch==)

# Install a lock, $(2), with the pip of a venv, $(1), in two steps. First torch
# alone: the lock's pin from the index the lock names (or $(TORCH)); --retries 2
# keeps a machine that cannot reach that index from waiting on it (here torch
# comes from /opt/wheels). Then every other pin, without the index line: torch
# is installed, and asking the PyTorch index about each of ~100 packages would
# only slow the install down.
define install-lock
	$(1) install --no-deps --retries 2 $(or $(TORCH),$(shell grep -E '$(TORCH_LINES)' $(2)))
	grep -vE '$(TORCH_LINES)' $(2) | $(1) install --no-deps -r /dev/stdin
endef

# the compatibility job: another venv, the lock with flwr 1.42.0, and the tests
# that exercise Flower (engine equivalence with the accelerators on and off,
# end-to-end runs, the accelerators' own tests, wire sizes, the Flower edge)
COMPAT := .venv-flwr142
COMPAT_TESTS := tests/simulations/test_engines.py tests/simulations/test_simulate_e2e.py \
	tests/common/test_flower_compat.py tests/common/test_flower_compat_contracts.py tests/common/test_wire_size.py \
	tests/simulations/test_flower_free.py tests/client/test_client_app.py tests/server/test_discovery.py \
	tests/simulations/test_actor_share.py

.PHONY: demo test test-compat install install-dev lock clean images deploy-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

install: $(BIN)/python
	$(call install-lock,$(BIN)/pip,requirements.lock)
	$(PIP) -e .

install-dev: $(BIN)/python
	$(call install-lock,$(BIN)/pip,requirements-dev.lock)
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
	$(call install-lock,$(COMPAT)/bin/pip,requirements-dev-flwr142.lock)
	$(COMPAT)/bin/pip install --no-deps -e .
	$(COMPAT)/bin/python -c "import flwr; print('compatibility job: flwr', flwr.__version__)"
	$(COMPAT)/bin/python -m pytest $(COMPAT_TESTS)

# After uv's two header lines, the line that names where the lock's torch comes
# from (uv cannot write it here: it would ask that index, which this machine
# cannot reach, and the index line of an output it rewrites is dropped).
define name-torch-index
	awk 'NR == 3 { print "--extra-index-url $(TORCH_INDEX)" } { print }' $(1) > $(1).tmp && mv $(1).tmp $(1)
endef

# The Flower App's pins: pyproject.toml's [tool.uv] constraint-dependencies, the
# list `uv sync` resolves `flwr run`'s environment under, rewritten from the
# lock $(1), one quoted pin a line; torch's +cpu pin holds on Linux (its source
# there is the CPU index), its release elsewhere (PyPI's wheel).
define pin-flower-app
	awk 'FNR == NR { if ($$0 ~ /^[A-Za-z0-9].*==/) pins[++n] = $$1; next } \
		/^constraint-dependencies = \[$$/ { print; skip = 1; \
			for (i = 1; i <= n; i++) if (pins[i] ~ /^torch==.*\+/) { \
				release = pins[i]; sub(/\+.*/, "", release); \
				printf "    \"%s; sys_platform == \047linux\047\",\n", pins[i]; \
				printf "    \"%s; sys_platform != \047linux\047\",\n", release \
			} else printf "    \"%s\",\n", pins[i]; \
			next } \
		skip && /^\]/ { skip = 0 } !skip' $(1) pyproject.toml > pyproject.toml.tmp && mv pyproject.toml.tmp pyproject.toml
endef

# regenerate the locks (and the Flower App's pins) after changing a dependency
# in pyproject.toml or constraints.txt
lock: install
	$(LOCK) -o requirements.lock
	$(call name-torch-index,requirements.lock)
	$(call pin-flower-app,requirements.lock)
	$(LOCK) --extra dev -o requirements-dev.lock
	$(call name-torch-index,requirements-dev.lock)
	cp requirements-dev.lock requirements-dev-flwr142.lock  # the same pins but Flower's (uv keeps an output's pins)
	$(BIN)/uv pip compile pyproject.toml -c constraints-flwr142.txt --find-links /opt/wheels --no-sources --no-config --python-version 3.11 \
		--extra dev -o requirements-dev-flwr142.lock
	$(call name-torch-index,requirements-dev-flwr142.lock)

# The images of a deployment (docker/Dockerfile's targets superlink, serverapp,
# supernode; tag TAG), on the official Python base, or on a local Debian base
# where no registry is reachable (docker/README.md). ENGINE: podman or docker.
TAG ?= cpu
images:
	TAG=$(TAG) bash docker/images.sh

# A federation and a Ray cluster across containers, checked and torn down
# (docker/deploy_test.py; transcript in runs/deploy-test/transcript.md). The
# host runs flwr run and the same config in one process: DEPLOY_PYTHON, by
# default this checkout's .venv, installed from the lock.
ML100K ?= ../shared/datasets/ml-100k
DEPLOY_PYTHON ?= $(BIN)/python
deploy-test: images $(if $(filter $(BIN)/python,$(DEPLOY_PYTHON)),install)
	rm -rf runs/deploy-test
	nice -n 19 $(DEPLOY_PYTHON) docker/deploy_test.py --data $(ML100K) --tag $(TAG) --work runs/deploy-test

clean:
	rm -rf runs .pytest_cache $(COMPAT)
