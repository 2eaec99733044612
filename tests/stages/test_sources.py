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


def new_project(root: Path, raw: dict) -> Path:
    """A DVC project at ``root`` whose code folders link to this repository's, with params ``raw``."""
    if not DVC.exists():
        pytest.fail(f"{DVC} not found: the project's environment (make venv) installs dvc")
    root.mkdir()
    for name in ("pipeline", "stages", "model"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    assert dvc(root, "init", "--no-scm").returncode == 0
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copytree(REPO / "examples" / "tiny-folder", tmp_path / "mine")
    raw = yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text())
    raw["data"]["datasets"] = ["mine"]
    raw["data"]["folders"] = {"mine": str(tmp_path / "mine")}
    raw["data"]["workers"] = 1
    return new_project(tmp_path / "project", raw)


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
        result.stdout + result.stderr
    )
    assert sorted(p.name for p in own.iterdir()) == ["README.md", "classes.csv", "images", "labels", "splits"]
    assert len(list((own / "images").iterdir())) == 60


def test_a_local_copy_is_prepared_in_place_and_again_only_when_it_changed(project, tmp_path):
    shared = tmp_path / "shared" / "ade20k"  # the folder holding ADEChallengeData2016/, as the archive unpacks
    shutil.copytree(REPO / "tests" / "fixtures" / "ade20k_sample", shared)
    base = shared / "ADEChallengeData2016"
    for kind in ("images", "annotations"):
        shutil.copytree(base / kind / "validation", base / kind / "training")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["datasets"] = ["ade20k"]
    raw["data"]["local"] = {"ade20k": str(shared)}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    before = sorted((p, p.stat().st_mtime_ns) for p in shared.rglob("*"))
    first = dvc(project, "repro", "prepare@ade20k")
    assert first.returncode == 0, first.stderr
    assert "ade20k: using the local copy" in first.stdout and "Running stage 'prepare@ade20k'" in first.stdout
    assert len(list((project / "data" / "ade20k" / "val" / "labels").iterdir())) == 3
    assert sorted((p, p.stat().st_mtime_ns) for p in shared.rglob("*")) == before
    assert not (project / "data" / "downloads" / "ade20k").exists()
    again = dvc(project, "repro", "prepare@ade20k")
    assert again.returncode == 0 and "Running stage 'prepare@ade20k'" not in again.stdout, again.stdout
    (base / "images" / "training" / "ADE_val_00000001.jpg").unlink()
    (base / "annotations" / "training" / "ADE_val_00000001.png").unlink()
    changed = dvc(project, "repro", "prepare@ade20k")
    assert changed.returncode == 0, changed.stderr
    assert "Running stage 'prepare@ade20k'" in changed.stdout
    assert len(list((project / "data" / "ade20k" / "train" / "labels").iterdir())) == 2
