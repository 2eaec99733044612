"""The paper profile end to end: `dvc repro` on the local SLURM cluster, from miniature datasets to Tables 1-6.

The profile is ``profiles/paper.yaml`` changed by the documented override file
``profiles/overrides/smoke.yaml`` only (iterations, crops, batch, head width,
CPU jobs without GPUs), plus the site's own file (``local.yaml`` below): the
miniature copies of the three datasets this test builds in their official
layouts (``data.local``) and the ImageNet weight files it makes (random, in the
layout of the files the profile loads: PyTorch-Encoding's deep-stem ResNets
and ResNeSt-101), declared as files of its own in ``weights.files``, which the
``weights`` stage checks and the runs load. Every training run and the
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
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "profiles", root / "profiles")
    (root / "reports").mkdir()
    shutil.copy(REPO / "reports" / "paper_tables.yaml", root / "reports" / "paper_tables.yaml")
    return root


def make_weights(root: Path) -> dict[str, str]:
    """Random ImageNet-format weight files of the files the paper profile loads (``Backbone.body``'s state dict):
    its deep stem (``model.stem: deep``) takes PyTorch-Encoding's resnet50s / resnet101s, and ResNeSt-101's."""
    import torch

    from model.backbones import BACKBONES

    root.mkdir(parents=True)
    files = {}
    torch.manual_seed(0)
    for name, backbone, stem in (
        ("resnet50s", "resnet50", "deep"),
        ("resnet101s", "resnet101", "deep"),
        ("resnest101", "resnest101", "deep"),
    ):
        path = root / f"{name}-smoke.pth"  # not the published name: files of the test's own (pipeline.weights)
        torch.save(BACKBONES[backbone](stem).body.state_dict(), path)
        files[name] = str(path.relative_to(root.parent))
    return files


# What each table's markdown must show: the run column of a measured row, "<grid>/<cell> · <backbone>".
MEASURED = {
    1: (
        "table1/r50-fcn · resnet50",
        "table1/r50-grar · resnet50",
        "table1/r50-grar-sr · resnet50",
        "table1/r101-grar-sr · resnet101",
        "table1/resnest101-grar-sr · resnest101",
    ),
    2: (
        "table2/fcn · resnet50",
        "table2/pos-conv · resnet50",
        "table2/neg-graph · resnet50",
        "table2/posneg-graph · resnet50",
        "table2/posneg-graph-row · resnet50",
    ),
    3: (
        "table3/fcn · resnet50",
        "table3/ppm · resnet50",
        "table3/aspp · resnet50",
        "table3/danet · resnet50",
        "table3/ocr · resnet50",
        "table3/grar · resnet50",
    ),
    4: ("table4/r101-grar-sr · resnet101", "table4/resnest101-grar-sr · resnest101"),
    5: ("table5/r101-grar-sr · resnet101", "table5/resnest101-grar-sr · resnest101"),
    6: ("table6/r101-grar-sr · resnet101", "table6/resnest101-grar-sr · resnest101"),
}


def submitted_jobs(project: Path) -> dict[str, str]:
    """Every run of every grid and every stage job: what ran it (its SLURM job id)."""
    jobs = {}
    for index in sorted((project / "runs" / "grids").glob("*.json")):
        for entry in json.loads(index.read_text())["cells"]:
            jobs[f"{index.stem}/{entry['cell']} seed {entry['seed']} ({entry['state']})"] = str(entry.get("job_id"))
    for record in sorted((project / "runs" / "slurm-logs" / "stages").glob("*.json")):
        jobs[f"stage {record.stem}"] = str(json.loads(record.read_text())["job_id"])
    return jobs


@pytest.mark.timeout(1500)  # ~210 s alone on 2 cores; a loaded machine more than pytest's 300 s default
def test_the_paper_profile_runs_through_dvc_on_slurm_to_tables_1_to_6(slurm_cluster, project, tmp_path):
    datasets = build_all(tmp_path / "datasets", train=10, val=3, size=(48, 64))
    site = {
        "data": {"local": {name: str(path) for name, path in datasets.items()}},
        "weights": {"files": make_weights(project / "weights")},
    }
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(site))
    use = command(
        project,
        str(BIN / "grar"),
        "profile",
        "use",
        "paper",
        "--with",
        "profiles/overrides/smoke.yaml",
        "--with",
        str(tmp_path / "local.yaml"),
    )
    assert use.returncode == 0, use.stderr
    assert command(project, str(BIN / "dvc"), "init", "--no-scm").returncode == 0

    repro = command(project, str(BIN / "dvc"), "repro", timeout=1500)
    jobs = submitted_jobs(project)
    print("\n".join(f"{what}: job {job}" for what, job in jobs.items()))
    assert repro.returncode == 0, (repro.stdout + repro.stderr)[-4000:]

    # Every training run and the module benchmark ran as a SLURM job; the data stages ran in place (the profile's).
    runs = {what: job for what, job in jobs.items() if not what.startswith("stage ")}
    assert len(runs) == 5 + 9 + 7 + 2 + 3 + 2 + 3 and all("(done)" in what for what in runs), runs  # + sr-weight
    assert all(SLURM_JOB.fullmatch(job) for job in runs.values()), runs
    assert len(set(runs.values())) == 24  # 31 grid runs, 24 configs: shared runs trained once
    assert SLURM_JOB.fullmatch(jobs["stage bench"])
    for number, rows in MEASURED.items():
        text = (project / "reports" / "tables" / f"table{number}.md").read_text()
        missing = [row for row in rows if row not in text]
        assert not missing, f"table {number}: no measured row {missing}\n{text}"
        assert "failed" not in text, text
    table3 = (project / "reports" / "tables" / "table3.md").read_text()
    assert "not benchmarked" not in table3 and "missing)" not in table3
    assert "profile paper-smoke;" in (project / "reports" / "tables" / "table1.md").read_text()  # numbers say whence
    assert "table5/r101-grar-sr-head-x1 · resnet101" in (project / "reports" / "tables" / "table5.md").read_text()
    assert sorted(p.name for p in (project / "data" / "downloads").iterdir()) == ["manifest.json"]  # nothing fetched
