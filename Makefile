# The two commands of the README:
#   make repro   create the environment if missing, then `dvc repro` (the whole pipeline)
#   make test    create the environment if missing, start the local SLURM cluster, run pytest
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test venv cluster-up cluster-down slurm-packages clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

repro: venv
	$(BIN)/dvc repro

test: venv cluster-up
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
