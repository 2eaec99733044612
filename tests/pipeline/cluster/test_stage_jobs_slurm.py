"""The login-node workflow on the local SLURM test cluster: a stage process killed while its jobs run, started
again, collects the same jobs without a second ``sbatch``.

Runs the stages as `dvc repro` does (``python -m stages.<name>`` in a project
folder), kills them once their jobs are recorded, and runs them again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_run import make_project, tiny

from pipeline.config import Params, load_params, with_overrides

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[3]
SLURM = {
    "executor.slurm.cpus_per_task": 1,
    "executor.slurm.mem_gb": 1,
    "executor.slurm.timeout_min": 5,
    "executor.slurm.array_parallelism": 2,
    "grid.seeds": [0],
}


def write_project(root: Path, params: Params) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return root


def default_signals() -> None:
    """In the stage's process: SIGINT and SIGHUP as at a terminal (a shell's background job inherits them ignored)."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start(project: Path, stage: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=default_signals,
    )


def poll(condition, what: str, process: subprocess.Popen, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if process.poll() is not None:
            pytest.fail(f"the stage ended (exit {process.returncode}) before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def json_field(path: Path, *keys):
    """A field of a JSON file, ``None`` while it is missing or being replaced."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for key in keys:
        value = value[key] if isinstance(value, dict | list) and value else None
    return value


def kill(process: subprocess.Popen, signum: int) -> None:
    process.send_signal(signum)
    process.communicate(timeout=60)
    assert process.returncode == (130 if signum == signal.SIGINT else -signum)


def submissions(folder: Path) -> list[str]:
    """The sbatch scripts submitit wrote in ``folder``: one per ``sbatch``."""
    return sorted(path.name for path in folder.glob("*_submission.sh"))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_bench_stage_collects_its_job_when_run_again(slurm_cluster, tmp_path, signum):
    params = with_overrides(
        load_params(REPO / "params.yaml"),
        {
            **SLURM,
            "executor.log_dir": str(tmp_path / "logs"),
            "executor.stages.bench.kind": "slurm",
            "bench.out": str(tmp_path / "bench.json"),
            "bench.channels": 32,
            "bench.height": 9,
            "bench.width": 9,
            "bench.head_width": 16,
            "bench.num_classes": 5,
            "bench.warmup": 0,
            "bench.repeats": 1,
        },
    )
    project = write_project(tmp_path / "project", params)
    record = tmp_path / "logs" / "stages" / "bench.json"
    first = start(project, "bench")
    job_id = poll(lambda: json_field(record, "job_id"), "the job id in the record", first)
    kill(first, signum)

    again = start(project, "bench")
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    assert json_field(record, "job_id") == job_id
    assert submissions(tmp_path / "logs" / "stages" / "bench") == [f"{job_id.split('_')[0]}_submission.sh"]
    assert "submitted SLURM job" not in err and f"stage bench: job {job_id} done" in err
    assert json.loads((tmp_path / "bench.json").read_text())["input"] == [1, 32, 9, 9]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_train_stage_collects_its_jobs_when_run_again(slurm_cluster, tmp_path, signum):
    params = tiny(
        make_project(tmp_path),
        {
            **SLURM,
            "executor.kind": "slurm",
            "executor.log_dir": str(tmp_path / "logs"),
            "grid.grids": {"r": [{"name": "fcn", "set": {"model.head": "fcn"}}]},
            "train.schedules.embedded": {"lr": 0.02, "iterations": 30},
            "eval.multi_scale": False,
        },
    )
    project = write_project(tmp_path / "project", params)
    index = tmp_path / "runs" / "grids" / "r.json"
    first = start(project, "train")
    job_id = poll(lambda: json_field(index, "cells", 0, "job_id"), "the job id in the grid index", first)
    kill(first, signum)

    again = start(project, "train")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    cell = json_field(index, "cells", 0)
    assert (cell["state"], cell["job_id"]) == ("done", job_id)
    assert submissions(tmp_path / "logs" / "r") == [f"{job_id.split('_')[0]}_submission.sh"]


def test_stats_on_a_cpu_partition_runs_as_one_job_and_writes_where_dvc_expects(slurm_cluster, tmp_path):
    params = make_project(tmp_path)
    expected = sorted(path.name for path in (tmp_path / "stats" / "embedded").iterdir())
    shutil.rmtree(tmp_path / "stats")
    params = with_overrides(
        params,
        {
            **SLURM,
            "executor.log_dir": str(tmp_path / "logs"),
            "executor.stages.stats.kind": "slurm",
            "executor.stages.stats.slurm": {"partition": "local", "gpus_per_node": 0},
        },
    )
    project = write_project(tmp_path / "project", params)
    result = subprocess.run(
        [sys.executable, "-m", "stages.stats", "embedded"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    job_id = json_field(tmp_path / "logs" / "stages" / "stats-embedded.json", "job_id")
    script = (tmp_path / "logs" / "stages" / "stats-embedded" / f"{job_id}_submission.sh").read_text()
    assert "#SBATCH --partition=local" in script and "--gpus" not in script
    assert sorted(path.name for path in (tmp_path / "stats" / "embedded").iterdir()) == expected
    assert result.stderr.splitlines()[0] == (
        f"stage stats-embedded: submitted SLURM job {job_id} (log "
        f"{tmp_path}/logs/stages/stats-embedded/{job_id}_0_log.err)"
    )
