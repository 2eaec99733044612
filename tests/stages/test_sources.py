"""`dvc repro` with a folder dataset: sources@NAME re-runs prepare@NAME exactly when the user's folder changed.

Runs the real DVC on a copy of ``dvc.yaml`` in a temporary project whose code
folders link to this repository's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(DVC), *args], cwd=project, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def project(tmp_path) -> Path:
    if not DVC.exists():
        pytest.fail(f"{DVC} not found: the project's environment (make venv) installs dvc")
    root = tmp_path / "project"
    root.mkdir()
    for name in ("pipeline", "stages", "model"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "examples" / "tiny-folder", tmp_path / "mine")
    raw = yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text())
    raw["data"]["datasets"] = ["mine"]
    raw["data"]["folders"] = {"mine": str(tmp_path / "mine")}
    raw["data"]["workers"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    assert dvc(root, "init", "--no-scm").returncode == 0
    return root


def test_prepare_reruns_only_when_the_folder_changed(project, tmp_path):
    first = dvc(project, "repro", "prepare@mine")
    assert first.returncode == 0, first.stderr
    label = project / "data" / "mine" / "train" / "labels" / "train000.png"
    assert label.is_file()
    marker = project / "data" / "mine" / ".grar-dataset"
    stamp = marker.stat().st_mtime_ns
    again = dvc(project, "repro", "prepare@mine")
    assert again.returncode == 0, again.stderr
    assert "Running stage 'sources@mine'" in again.stdout  # checked every time
    assert "Running stage 'prepare@mine'" not in again.stdout and marker.stat().st_mtime_ns == stamp
    edited = np.zeros((32, 192), np.uint8)
    Image.fromarray(edited, "L").save(tmp_path / "mine" / "labels" / "train000.png")
    changed = dvc(project, "repro", "prepare@mine")
    assert changed.returncode == 0, changed.stderr
    assert "Running stage 'prepare@mine'" in changed.stdout
    np.testing.assert_array_equal(np.array(Image.open(label)), edited)


def test_a_folder_where_prepare_writes_is_refused_before_dvc_removes_it(project):
    own = project / "data" / "mine"
    shutil.copytree(REPO / "examples" / "tiny-folder", own)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["folders"] = {"mine": "data/mine"}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    result = dvc(project, "repro", "prepare@mine")
    assert result.returncode != 0
    assert "data.folders.mine: data/mine overlaps data/mine, where grar writes the prepared 'mine' dataset" in (
        result.stdout + result.stderr)
    assert sorted(p.name for p in own.iterdir()) == ["README.md", "classes.csv", "images", "labels", "splits"]
    assert len(list((own / "images").iterdir())) == 60
