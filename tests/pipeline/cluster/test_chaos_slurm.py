"""Chaos on the local SLURM cluster: a grid of real tiny runs whose jobs are cancelled, requeued (running and
completed), SIGKILLed inside the job, suspended and resumed, and whose node is drained and resumed, while
`grar grid wait` (first test) or `dvc repro` (second test) follows it.

Every run ends done, or failed with the reason of its fault; submitting again (`grar grid submit`, `dvc
repro`) finishes the failed ones from their checkpoints; every run's metrics then equal those of the same run
trained undisturbed. The node is always resumed (and a suspended job too), whatever happens. The faults, one
per seed of the grid's one cell (six runs, two at a time on the two CPUs):

seed 0  scancel while it trains, the node drained meanwhile   failed (CANCELLED), resumed by the next submit
seed 1  scontrol requeue while it trains                       done (it resumes from its checkpoint)
seed 2  waits while the node is drained (the status says why); SIGKILL of its trainer inside the job
                                                               failed (FAILED (task 0 on NODE: Killed)), resumed
seed 3  scontrol suspend, then resume, while it trains         done ("suspended" shown meanwhile, no ETA)
seed 4  none                                                   done
seed 5  scontrol requeue once it completed                     done (the job runs again and finds it done)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from tiny_run import make_project, tiny

from pipeline.cluster import grids
from pipeline.cluster.local_test_cluster import short_hostname
from pipeline.config import Params, with_overrides
from pipeline.rundir import read_log
from pipeline.training.run import run_cell

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SEEDS = (0, 1, 2, 3, 4, 5)
CHAOS = {
    "executor.kind": "slurm",
    "executor.slurm.cpus_per_task": 1,
    "executor.slurm.mem_gb": 1,
    "executor.slurm.timeout_min": 10,
    "executor.slurm.array_parallelism": 2,
    "grid.seeds": list(SEEDS),
    "grid.grids": {"chaos": [{"name": "fcn", "set": {"model.head": "fcn"}}]},
    "train.schedules.embedded": {"lr": 0.02, "iterations": 120},
    "train.checkpoint_every": 10,
    "eval.multi_scale": False,
}
DRAINED = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Params:
    """The tiny prepared dataset and statistics, and the chaos grid's params pointing there."""
    root = tmp_path_factory.mktemp("chaos")
    return with_overrides(tiny(make_project(root)), CHAOS)


@pytest.fixture(scope="module")
def undisturbed(data, tmp_path_factory) -> dict[int, dict]:
    """Each seed's metrics, trained here without a fault (one thread, as in a job of one CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("undisturbed")
        return {
            seed: run_cell(with_overrides(data, {"model.head": "fcn", "seed": seed}), root / f"s{seed}")
            for seed in SEEDS
        }
    finally:
        torch.set_num_threads(threads)


# --- what the test looks at -----------------------------------------------------------------------


def until(
    condition: Callable[[], object],
    what: str,
    follower: subprocess.Popen,
    timeout_s: float = 240.0,
    seen: Callable[[], object] = lambda: None,
):
    """Poll ``condition`` until true; fail naming ``what`` (and ``seen()``, what there is instead) when time
    runs out or the follower ended first."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if follower.poll() is not None:
            pytest.fail(f"the follower ended (exit {follower.returncode}) before {what}: {follower.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}; instead: {seen()}"
        time.sleep(0.05)
    return value


def logged(run_dir: Path) -> int:
    """The last iteration ``train_log.csv`` holds (0 before one)."""
    try:
        rows = read_log(run_dir / "train_log.csv")
    except (OSError, ValueError):
        return 0
    return int(rows[-1]["iteration"]) if rows and rows[-1].get("iteration", "").isdigit() else 0


def trainer_pid(run_dir: Path) -> int:
    """The pid of the process that holds the run's lock: the trainer inside the job (this host)."""
    lock = max(run_dir.glob("grar.lock.*"), key=lambda path: int(path.name.rsplit(".", 1)[1]))
    holder = json.loads(lock.read_text())
    assert holder["host"] == os.uname().nodename
    return int(holder["pid"])


def slurm_state(job: str) -> str:
    answer = subprocess.run(["squeue", "-h", "--states=all", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return answer.stdout.strip()


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, timeout=60, capture_output=True)


def index_cells(params: Params) -> list[dict]:
    path = Path(params.grid.runs) / "grids" / "chaos.json"
    try:
        return json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return []


def jobs_of(params: Params, follower: subprocess.Popen) -> tuple[dict[int, str], dict[int, Path]]:
    """Each seed's job id and run folder, once the grid index records all six."""
    cells = until(
        lambda: (found := index_cells(params)) and all(cell.get("job_id") for cell in found) and found,
        "the job ids in the grid index",
        follower,
    )
    return {cell["seed"]: cell["job_id"] for cell in cells}, {cell["seed"]: Path(cell["run_dir"]) for cell in cells}


def run_state(params: Params, seed: int) -> grids.CellState:
    return grids.status(params, "chaos")[SEEDS.index(seed)]


# --- the faults -----------------------------------------------------------------------------------


def inject_faults(params: Params, follower: subprocess.Popen) -> list[str]:
    """The faults of the module docstring, in order, while ``follower`` follows the grid; the node is resumed
    (and seed 3's job) whatever happens. Returns what was done, in words."""
    jobs, runs = jobs_of(params, follower)
    node = short_hostname()
    done: list[str] = []
    drained = suspended = False
    try:
        until(lambda: logged(runs[0]) >= 10 and logged(runs[1]) >= 10, "seeds 0 and 1 to train", follower)
        scontrol("update", f"NodeName={node}", "State=DRAIN", "Reason=grar chaos test")
        drained = True
        done.append(f"node {node} drained")
        subprocess.run(["scancel", jobs[0]], check=True, timeout=60)
        done.append(f"scancel {jobs[0]} (seed 0, at iteration {logged(runs[0])})")
        scontrol("requeue", jobs[1])
        done.append(f"scontrol requeue {jobs[1]} (seed 1, running, at iteration {logged(runs[1])})")
        waiting = wait_for_the_drained_node(params, jobs[2])
        scontrol("update", f"NodeName={node}", "State=RESUME")
        drained = False
        done.append(f"node {node} resumed (seed 2 had waited: {waiting.reason})")
        until(lambda: slurm_state(jobs[1]) == "PENDING", "seed 1's job to be queued again", follower)
        scontrol("update", f"JobId={jobs[1]}", "StartTime=now")  # a requeued job waits ~2 min (BeginTime) else

        until(lambda: logged(runs[2]) >= 20, "seed 2 to train", follower)
        os.kill(trainer_pid(runs[2]), signal.SIGKILL)
        done.append(f"SIGKILL of the trainer of {jobs[2]} (seed 2, at iteration {logged(runs[2])})")

        until(lambda: logged(runs[3]) >= 20, "seed 3 to train", follower)
        scontrol("suspend", jobs[3])
        suspended = True
        at = logged(runs[3])
        shown = until(lambda: (state := run_state(params, 3)).suspended and state, "seed 3 shown suspended", follower)
        assert (shown.state, shown.reason) == ("running", "suspended by SLURM: no progress until it is resumed")
        time.sleep(2)
        assert logged(runs[3]) == at  # no progress while suspended
        scontrol("resume", jobs[3])
        suspended = False
        done.append(f"scontrol suspend, 2 s, resume {jobs[3]} (seed 3, at iteration {at})")

        until(lambda: slurm_state(jobs[5]) == "COMPLETED", "seed 5's job to complete", follower)
        scontrol("requeue", jobs[5])
        until(lambda: slurm_state(jobs[5]) == "PENDING", "seed 5's completed job to be queued again", follower)
        scontrol("update", f"JobId={jobs[5]}", "StartTime=now")
        done.append(f"scontrol requeue {jobs[5]} (seed 5, completed)")
    finally:
        if drained:
            scontrol("update", f"NodeName={node}", "State=RESUME")
        if suspended:
            scontrol("resume", jobs[3])
    return done


def wait_for_the_drained_node(params: Params, job: str, timeout_s: float = 30.0) -> grids.CellState:
    """Seed 2's state while the node is drained: pending, its reason SLURM's for the drained node. The node is
    shared (other users' jobs wait too), so at most ``timeout_s`` is waited for it; a job queued behind someone
    else's shows SLURM's reason for that instead (``Priority``), which must then be the one squeue gives."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = run_state(params, 2)
        why = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True).stdout.strip()
        if state.reason == f"queued: {DRAINED}" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (state.state, state.active) == ("pending", True)
    assert state.reason in (f"queued: {DRAINED}", f"queued: {why}"), (state.reason, why)
    return state


def check_failed_as_their_faults(params: Params, states: list[grids.CellState]) -> None:
    """After the faults: seeds 0 and 2 failed with their fault's reason, the others done."""
    node = short_hostname()
    assert [(s.run.seed, s.state, s.reason) for s in states] == [
        (0, "failed", "CANCELLED"),
        (1, "done", None),
        (2, "failed", f"FAILED (task 0 on {node}: Killed)"),
        (3, "done", None),
        (4, "done", None),
        (5, "done", None),
    ]


def check_identical(states: list[grids.CellState], undisturbed: dict[int, dict]) -> None:
    """Every run done, with the metrics of the same run trained undisturbed (and its whole log)."""
    for s in states:
        expected = undisturbed[s.run.seed]
        assert s.state == "done", (s.run.seed, s.state, s.reason)
        for key in ("miou", "pixel_accuracy", "mean_accuracy", "per_class_iou"):
            assert s.metrics[key] == expected[key], (s.run.seed, key)
        assert [int(row["iteration"]) for row in read_log(s.run.run_dir / "train_log.csv")] == list(range(1, 121))


def grar(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "grar"), *args], cwd=project, capture_output=True, text=True, timeout=timeout, env=environment()
    )


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def follow_under_faults(params: Params, project: Path, command: list[str]) -> tuple[subprocess.Popen, str, str]:
    """Run ``command`` in ``project`` (it follows the chaos grid), inject the faults while it runs, print them;
    the finished process, its stdout and stderr."""
    started = time.monotonic()
    follower = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
    )
    try:
        faults = inject_faults(params, follower)
        out, err = follower.communicate(timeout=600)
    finally:
        if follower.poll() is None:
            follower.kill()
    print(f"faults, in {time.monotonic() - started:.0f} s:", *faults, sep="\n  ")
    return follower, out, err


# --- the tests ------------------------------------------------------------------------------------


def test_chaos_while_grar_grid_wait_follows_the_grid(slurm_cluster, data, undisturbed, tmp_path):
    params = with_overrides(data, {"grid.runs": str(tmp_path / "runs"), "executor.log_dir": str(tmp_path / "logs")})
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    submitted = grar(project, "grid", "submit", "chaos")
    assert submitted.returncode == 0, submitted.stderr
    started = time.monotonic()
    follower, out, err = follow_under_faults(
        params, project, [str(BIN / "grar"), "grid", "wait", "chaos", "--poll", "1", "--timeout", "600"]
    )
    assert follower.returncode == 1, err  # two runs failed, named
    node = short_hostname()
    assert "2 run(s) not done:\n  chaos/fcn seed 0: failed (CANCELLED), log " in err
    assert f"  chaos/fcn seed 2: failed (FAILED (task 0 on {node}: Killed)), log " in err
    check_failed_as_their_faults(params, grids.status(params, "chaos"))

    again = grar(project, "grid", "submit", "chaos")
    assert again.returncode == 0 and "submitted 2 run(s)" in again.stdout, again.stderr
    finished = grar(project, "grid", "wait", "chaos", "--poll", "1", "--timeout", "600")
    assert finished.returncode == 0, finished.stderr
    print(f"chaos grid finished in {time.monotonic() - started:.0f} s")
    check_identical(grids.status(params, "chaos"), undisturbed)


def test_chaos_while_dvc_repro_trains_the_grid(slurm_cluster, data, undisturbed, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)  # the grid index names the logs relative to the project, as dvc ran there
    for name in ("pipeline", "stages", "model"):
        (project / name).symlink_to(REPO / name)
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    params = with_overrides(
        data,
        {
            "data.root": str(project / "data"),  # prepared and counted again by dvc, the same bytes
            "stats.root": str(project / "stats"),
            "grid.runs": str(project / "runs"),
            "executor.log_dir": str(project / "logs"),
        },
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert subprocess.run([str(BIN / "dvc"), "init", "--no-scm"], cwd=project, capture_output=True).returncode == 0
    started = time.monotonic()
    follower, out, err = follow_under_faults(params, project, [str(BIN / "dvc"), "repro", "train"])
    assert follower.returncode != 0, out + err  # the train stage failed, naming the two runs
    node = short_hostname()
    assert "chaos/fcn seed 0: failed (CANCELLED), log " in out + err
    assert f"chaos/fcn seed 2: failed (FAILED (task 0 on {node}: Killed)), log " in out + err
    check_failed_as_their_faults(params, grids.status(params, "chaos"))

    again = subprocess.run(
        [str(BIN / "dvc"), "repro", "train"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(),
    )
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    print(f"chaos grid finished in {time.monotonic() - started:.0f} s")
    check_identical(grids.status(params, "chaos"), undisturbed)
