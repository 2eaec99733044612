"""Grids on the local SLURM test cluster: one job array per grid, failures, resubmission, requeue and resume.

Every test here submits real jobs (marker ``slurm``, fixture ``slurm_cluster``),
1 CPU each. The stand-in trainer of ``test_grid`` is pickled by value (a job's
Python cannot import a test module); the requeue test trains for real.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch
import yaml
from test_grids import GRIDS, BlockedTrainer, FakeTrainer, calls, grid_params
from tiny_run import make_project, tiny

from pipeline.cluster import grids, submit
from pipeline.config import Params
from pipeline.rundir import read_log
from pipeline.training.run import load_run_model, run_cell

pytestmark = pytest.mark.slurm

SLURM = {
    "executor.kind": "slurm",
    "executor.slurm.cpus_per_task": 1,
    "executor.slurm.mem_gb": 1,
    "executor.slurm.timeout_min": 5,
    "executor.slurm.array_parallelism": 2,
    "grid.seeds": [0],
}


@pytest.fixture
def by_value():
    """Pickle the stand-in trainer by value."""
    module = sys.modules[FakeTrainer.__module__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def slurm_params(tmp_path: Path, **overrides) -> Params:
    return grid_params(tmp_path, **{**SLURM, "grid.grids": {"g": GRIDS["g"]}, **overrides})


def test_a_grid_is_one_job_array_whose_metrics_are_collected(slurm_cluster, by_value, tmp_path):
    params = slurm_params(tmp_path)
    submission = submit.submit(params, "g", FakeTrainer())
    array = submission.job_ids[0].split("_")[0]
    assert submission.ran == 3 and submission.job_ids == [f"{array}_{task}" for task in range(3)]
    assert [(s.state, s.job_id, s.active) for s in submission.states] == [
        ("pending", f"{array}_{task}", True) for task in range(3)
    ]
    script = (tmp_path / "logs" / "g" / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --cpus-per-task=1" in script
    name = submission.states[0].submission["name"]
    assert re.fullmatch(r"grar-g-[0-9a-f]{8}", name) and f"#SBATCH --job-name={name}" in script

    states = submit.wait(params, ["g"], poll_s=0.5)["g"]
    assert [(s.run.cell, s.state, s.job_id, s.metrics["miou"]) for s in states] == [
        ("fcn", "done", f"{array}_0", 0.5),
        ("ppm", "done", f"{array}_1", 0.25),
        ("grar", "done", f"{array}_2", 0.75),
    ]
    assert [calls(s) for s in states] == [1, 1, 1]
    assert all(Path(s.log).is_file() for s in states)
    assert [s.state for s in grids.status(params, "g")] == ["done"] * 3
    assert submit.submit(params, "g", FakeTrainer()).ran == 0


def test_a_failing_cell_is_reported_with_its_log_and_resubmission_runs_only_it(slurm_cluster, by_value, tmp_path):
    params = slurm_params(tmp_path)
    first = submit.submit(params, "g", FakeTrainer(fail=frozenset({"ppm"})))
    with pytest.raises(
        submit.GridFailed,
        match=r"1 run\(s\) not done:\n  g/ppm seed 0: failed \(RuntimeError: ppm "
        r"exploded\), log ",
    ) as caught:
        submit.wait(params, ["g"], poll_s=0.5)
    failed = grids.status(params, "g")[1]
    assert (failed.state, failed.job_id, failed.log) == ("failed", first.job_ids[1], str(caught.value).split()[-1])
    assert failed.log.endswith(f"{first.job_ids[1]}_0_log.err")
    assert "RuntimeError: ppm exploded" in Path(failed.log).read_text()
    assert "RuntimeError: ppm exploded" in (failed.run.run_dir / "error.txt").read_text()

    second = submit.submit(params, "g", FakeTrainer())
    assert second.ran == 1 and len(second.job_ids) == 1  # only ppm: a single job
    states = submit.wait(params, ["g"], poll_s=0.5)["g"]
    assert [(s.state, calls(s)) for s in states] == [("done", 1), ("done", 2), ("done", 1)]
    assert states[1].job_id == second.job_ids[0] and not (failed.run.run_dir / "error.txt").exists()


def test_status_from_another_process_finds_the_jobs_of_the_index(slurm_cluster, by_value, tmp_path):
    params = slurm_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:1]}})
    submission = submit.submit(params, "g", FakeTrainer())
    script = (
        "import sys, yaml; from pipeline.config import validate; from pipeline.cluster import submit; "
        "params = validate(yaml.safe_load(sys.stdin.read())); "
        "print(*(f'{s.state} {s.job_id}' for s in submit.wait(params, ['g'], poll_s=0.5)['g']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=yaml.safe_dump(params.model_dump(mode="json")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["done", submission.job_ids[0]], result.stderr


def test_a_cancelled_job_ends_the_wait_with_its_run_failed_as_cancelled(slurm_cluster, by_value, tmp_path):
    params = slurm_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:1]}})
    (job_id,) = submit.submit(params, "g", BlockedTrainer(gate=str(tmp_path / "never"))).job_ids
    run = grids.expand(params, "g")[0]
    poll(lambda: (run.run_dir / "started").exists(), "the job to start training")
    (running,) = grids.status(params, "g")
    assert (running.state, running.job_id, running.reason) == ("running", job_id, None)  # its own job holds the lock
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    with pytest.raises(submit.GridFailed, match=r"g/fcn seed 0: failed \(CANCELLED\), log "):
        submit.wait(params, ["g"], poll_s=0.5, timeout_s=120)
    (failed,) = grids.status(params, "g")
    assert (failed.state, failed.job_id, failed.reason, failed.active) == ("failed", job_id, "CANCELLED", False)


KILLED_AFTER_SBATCH = """
import os, sys, yaml
import submitit.core.utils
from pipeline.config import validate
from pipeline.cluster import submit
submitit.core.utils.JobPaths.move_temporary_file = lambda *args, **kwargs: os._exit(137)  # killed there
submit.submit(validate(yaml.safe_load(sys.stdin.read())), "g")
"""


def test_a_submit_killed_between_sbatch_and_its_job_files_is_adopted_and_its_jobs_run(
    slurm_cluster, by_value, tmp_path, capsys
):
    params = slurm_params(tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_SBATCH],
        input=yaml.safe_dump(params.model_dump(mode="json")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 137, killed.stderr
    found = grids.status(params, "g")  # by the array's name: queued, but without their job files
    assert all(s.active and s.job_id for s in found) and not list((tmp_path / "logs" / "g").glob("*_submitted.pkl"))
    again = submit.submit(params, "g", FakeTrainer())
    assert (again.ran, again.job_ids) == (0, [])  # nothing submitted twice
    jobs = [s.job_id for s in found]
    states = grids.status(params, "g")
    with contextlib.suppress(submit.GridFailed):  # before: each job waited 60 s for its file, then failed
        states = submit.wait(params, ["g"], poll_s=0.5, timeout_s=240)["g"]
    assert [(s.run.cell, s.state, s.job_id, s.metrics and s.metrics["miou"], calls(s)) for s in states] == [
        ("fcn", "done", jobs[0], 0.5, 1),
        ("ppm", "done", jobs[1], 0.25, 1),
        ("grar", "done", jobs[2], 0.75, 1),
    ]
    assert f"grar: SLURM job(s) {', '.join(jobs)} of a submit killed after sbatch" in capsys.readouterr().err


# --- requeue and resume, with real training -------------------------------------------------------


@pytest.fixture
def tiny_training(tmp_path) -> Params:
    """A grid of one GRAr cell training 200 iterations (tens of ms each) on the trainer tests' tiny project."""
    return tiny(
        make_project(tmp_path),
        {
            **SLURM,
            "executor.log_dir": str(tmp_path / "logs"),
            "grid.grids": {"r": [{"name": "grar", "set": {"model.head": "grar"}}]},
            "train.schedules.embedded": {"lr": 0.02, "iterations": 200},
            "train.checkpoint_every": 10,
            "eval.multi_scale": False,
        },
    )


def logged_iterations(run_dir: Path) -> list[int]:
    """The iterations ``train_log.csv`` holds so far."""
    path = run_dir / "train_log.csv"
    return [int(row["iteration"]) for row in read_log(path)] if path.exists() else []


def slurm_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def poll(condition, what: str, timeout_s: float = 90.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)
    return value


def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(
    slurm_cluster, tiny_training, tmp_path
):
    params = tiny_training
    (job_id,) = submit.submit(params, "r").job_ids
    run = grids.expand(params, "r")[0]
    poll(lambda: len(logged_iterations(run.run_dir)) >= 25, "25 iterations in the job")
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    poll(lambda: slurm_state(job_id) == "PENDING", "the requeued job to wait in the queue")
    stopped = logged_iterations(run.run_dir)[-1]
    assert 25 <= stopped < 200  # stopped mid-training, with a checkpoint at that iteration
    # A requeued job waits ~2 minutes (BeginTime) before it may start again: let it start now.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)

    reference = tmp_path / "uninterrupted"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job (1 CPU per task): the same float reductions
    try:
        expected = run_cell(run.params, reference)
    finally:
        torch.set_num_threads(threads)

    (state,) = submit.wait(params, ["r"], poll_s=0.5)["r"]
    assert (state.state, state.job_id) == ("done", job_id)
    log = Path(state.log).read_text()
    first, _, resumed = log.partition(f"grar: {run.run_dir}: resuming from its checkpoint.pt (job started 2 times)")
    assert resumed, log
    printed = [int(line.split()[1].split("/")[0]) for line in resumed.splitlines() if line.startswith("iteration ")]
    assert printed[0] > stopped and printed[-1] == 200  # went on from the checkpoint, not from iteration 0
    assert logged_iterations(run.run_dir) == list(range(1, 201))
    model, _ = load_run_model(run.run_dir)
    uninterrupted, _ = load_run_model(reference)
    weights, reference_weights = model.state_dict(), uninterrupted.state_dict()
    assert weights.keys() == reference_weights.keys()
    assert all(torch.equal(weights[key], reference_weights[key]) for key in weights)
    assert state.metrics["miou"] == expected["miou"]
