"""The paper profile end to end: `dvc repro` on the local SLURM cluster, from miniature datasets to Tables 1-6.

The profile is ``profiles/paper.yaml`` changed by the documented override file
``profiles/overrides/smoke.yaml`` only (iterations, crops, batch, head width,
CPU jobs without GPUs), plus the site's own file (``local.yaml`` below): the
miniature copies of the three datasets this test builds in their official
layouts (``data.local``) and the ImageNet weight files it makes (random, in the
published files' format, under their published names in a local mirror
folder that the ``weights`` stage fetches from). Every training run and the
module benchmark must run as a SLURM job; the report must hold measured rows
from the real backbones in all six tables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from miniature_datasets import build_all

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SLURM_JOB = re.compile(r"^\d+(_\d+)?$")

pytestmark = pytest.mark.slurm


def command(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder whose code links to this repository's, with the paper profile's inputs on disk."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("pipeline", "stages", "model"):
        (root / name).symlink_to(REPO / name)
    for name in ("dvc.yaml",):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "profiles", root / "profiles")
    (root / "reports").mkdir()
    shutil.copy(REPO / "reports" / "paper_tables.yaml", root / "reports" / "paper_tables.yaml")
    return root
