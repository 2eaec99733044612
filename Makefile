# The two commands of the README:
#   make repro   create the environment if missing, then `dvc repro` (the whole pipeline)
#   make test    create the environment if missing, start the local SLURM cluster, run pytest
# and the habit before a commit:
#   make lint    ruff's linter and formatter check (configured in pyproject.toml; CI runs it)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test lint format venv cluster-up cluster-down slurm-packages browser-packages clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

repro: venv
	$(BIN)/dvc repro

test: venv cluster-up browser-packages
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrites the tree: ruff's safe fixes (import order...) and its formatter.
format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The local one-node SLURM test cluster (pipeline/cluster/local_test_cluster.py; needs root).
# Outside CI a cluster that cannot start only warns (`-`): the SLURM tests then
# skip with the reason. With CI=true it fails the run.
SLURM_PACKAGES := munge slurmctld slurmd slurm-client
OPTIONAL := $(if $(filter true,$(CI)),,-)

slurm-packages:
	$(OPTIONAL)@for program in munged slurmctld slurmd sbatch srun; do command -v $$program >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SLURM_PACKAGES); fi

# Headless Chromium for the report site's browser test (tests/pipeline/report/test_site_browser.py).
browser-packages:
	$(OPTIONAL)@test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

cluster-up: venv slurm-packages
	$(OPTIONAL)$(BIN)/grar cluster up

cluster-down: venv
	$(BIN)/grar cluster down

clean-venv:
	rm -rf $(VENV)
