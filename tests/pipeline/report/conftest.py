"""Fixtures of the report tests: the project's params in an empty working folder, and a run writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_runs import REPO, Runs

from pipeline.config import load_params, with_overrides


@pytest.fixture
def params(tmp_path, monkeypatch):
    """The embedded params (every path relative) with the working folder an empty ``tmp_path``, seeds 0 and 1."""
    monkeypatch.chdir(tmp_path)
    return with_overrides(load_params(REPO / "params.yaml"), {"grid.seeds": [0, 1]})  # what the fabricated runs hold


@pytest.fixture
def paper_params(tmp_path, monkeypatch):
    """The paper profile's params, working folder ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return load_params(REPO / "profiles" / "paper.yaml")


@pytest.fixture
def runs(params) -> Runs:
    return Runs(Path(params.grid.runs))
