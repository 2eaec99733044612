"""Fixtures of the dataset tests: params in a temp folder.

The loopback server, ``server``, is in tests/pipeline/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Params, load_params, with_overrides

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def params(tmp_path: Path) -> Params:
    """The embedded profile with downloads and prepared data under ``tmp_path``, one worker."""
    return with_overrides(
        load_params(REPO / "profiles" / "embedded.yaml"),
        {"data.downloads": str(tmp_path / "downloads"), "data.root": str(tmp_path / "data"), "data.workers": 1},
    )
