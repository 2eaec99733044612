"""DVC's comparison tools on the pipeline: metrics and plots travel with commits and experiments.

A trimmed embedded profile (64 training strips, 3 iterations, grid ``table1`` with
``fcn`` and ``grar-sr``, one seed) in a git repository whose code folders link to
this one's: ``dvc repro``, commit, ``dvc exp run -S train.loss.sr=0.5``; then
``dvc exp show``, ``dvc metrics diff`` and ``dvc plots diff`` see both sides, and
an experiment in a temporary copy (``--temp``, as queued ones run) reuses the
workspace's finished ``fcn`` run instead of training it again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METRICS = "artifacts/metrics/table1/{}.json"


def run(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env = {key: value for key, value in env.items() if not key.startswith("DVC_")}
    result = subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def trimmed_params() -> dict:
    raw = yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text(encoding="utf-8"))
    raw["data"]["embedded"] |= {"train_images": 64, "val_images": 16}
    raw["train"]["schedules"]["embedded"]["iterations"] = 3
    raw["executor"]["parallel"] = 1
    raw["bench"] |= {"channels": 32, "height": 9, "width": 9, "head_width": 16, "warmup": 0, "repeats": 1}
    raw["grid"] |= {"seeds": [0], "bootstrap": 100}
    raw["grid"]["grids"] = {"table1": [cell for cell in raw["grid"]["grids"]["table1"] if cell["name"] != "grar"]}
    return raw


@pytest.fixture
def project(tmp_path) -> Path:
    """A git repository with a trimmed embedded profile, its pipeline run and committed (``main``)."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("pipeline", "stages", "model"):
        (root / name).symlink_to(REPO / name)
    (root / "reports").mkdir()
    for name in ("dvc.yaml", ".gitignore", "reports/paper_tables.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(trimmed_params(), sort_keys=False), encoding="utf-8")
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "config", "user.email", "test@example.org")
    run(root, "git", "config", "user.name", "test")
    run(root, str(BIN / "dvc"), "init", "-q")
    run(root, str(BIN / "dvc"), "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "baseline")
    return root


def metric(data: dict, cell: str) -> float:
    return data["metrics"][METRICS.format(cell)]["data"]["miou"]


@pytest.mark.timeout(1500)
def test_experiments_and_commits_carry_their_metrics_and_plots(project):
    tracked = run(project, "git", "ls-files", "artifacts").stdout.split()
    assert METRICS.format("grar-sr") in tracked and "artifacts/plots/table1/grar-sr.csv" in tracked
    assert not any(path.startswith(("artifacts/scores", "artifacts/stats", "runs/")) for path in tracked)

    run(project, str(BIN / "dvc"), "exp", "run", "-S", "train.loss.sr=0.5")
    shown = json.loads(run(project, str(BIN / "dvc"), "exp", "show", "--json").stdout)
    baseline = next(row for row in shown if row["name"] == "main")
    experiment = baseline["experiments"][0]["revs"][0]["data"]
    assert experiment["params"]["params.yaml"]["data"]["train"]["loss"]["sr"] == 0.5
    assert metric(baseline["data"], "fcn") == metric(experiment, "fcn")  # the same run, not trained again
    assert metric(baseline["data"], "grar-sr") != metric(experiment, "grar-sr")

    diff = run(project, str(BIN / "dvc"), "metrics", "diff", "HEAD", "--json")
    assert "failed to load" not in diff.stderr
    changed = json.loads(diff.stdout)[METRICS.format("grar-sr")]["miou"]
    assert changed["old"] == metric(baseline["data"], "grar-sr") and changed["new"] == metric(experiment, "grar-sr")

    plots = json.loads(run(project, str(BIN / "dvc"), "plots", "diff", "HEAD", "--json").stdout)["data"]
    curve = plots["artifacts/plots/table1/grar-sr.csv"][0]
    assert set(curve["revisions"]) == {"HEAD", "workspace"}
    values = curve["content"]["data"]["values"]
    assert {row["rev"] for row in values} == {"HEAD", "workspace"} and len(values) == 2 * 3  # 3 iterations each

    temp = run(project, str(BIN / "dvc"), "exp", "run", "--temp", "-S", "train.loss.sr=0.3")
    assert "table1/fcn seed 0: finished in" in temp.stderr + temp.stdout  # linked from the workspace's runs/
    assert "table1/grar-sr seed 0: training into" in temp.stderr + temp.stdout
    shown = json.loads(run(project, str(BIN / "dvc"), "exp", "show", "--json").stdout)
    experiments = next(row for row in shown if row["name"] == "main")["experiments"]
    weights = {exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["loss"]["sr"] for exp in experiments}
    assert weights == {0.5, 0.3}
