"""`dvc repro weights` on a fresh clone of the embedded profile: no network, nothing fetched, the out exists."""

from __future__ import annotations

import yaml
from test_sources import REPO, dvc, new_project


def test_the_weights_stage_creates_its_empty_out_when_nothing_is_needed(tmp_path):
    root = new_project(tmp_path / "project", yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text()))
    result = dvc(root, "repro", "weights")
    assert result.returncode == 0, result.stderr
    assert "model.pretrained is null in the base config and every grid cell: nothing to fetch" in result.stdout
    assert (root / "weights").is_dir() and list((root / "weights").iterdir()) == []
    again = dvc(root, "repro", "weights")
    assert again.returncode == 0 and "didn't change, skipping" in again.stdout, again.stdout
