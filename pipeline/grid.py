"""Ablation grids (Tables 1-3): cells x seeds -> resolved configs -> run folders, trained by an executor.

A grid is ``params.grid.grids[NAME]``: named cells, each a set of overrides on
the base config. Every cell runs once per seed of ``grid.seeds``; a *run* is one
(cell, seed): its resolved ``Params`` (``with_overrides(params, cell.set |
{"seed": s})``), their ``config_hash`` (``pipeline.rundir``) and a run folder
``<grid.runs>/<cell>-s<seed>-<hash10>/`` (the run-folder contract, README).
Identical configs are trained once: a run whose hash names an existing folder
(any grid, any cell name; a finished one first) reuses it, so ``fcn`` of
Tables 1-3 is one run. A run is *done* when its folder holds ``metrics.json``
whose ``provenance.config_hash`` is the run's hash.

States (``status``), read fresh from the run folders and SLURM, never cached:

* ``done``     metrics.json with the run's hash;
* ``running``  its SLURM job runs (or completes);
* ``pending``  its SLURM job waits in the queue (also after a requeue), or it
               was never submitted (``active`` False: nothing will run it);
* ``failed``   its job ended without metrics.json, or, without a job, the run
               folder holds ``error.txt`` (the traceback ``CellJob`` wrote).

The index ``<grid.runs>/grids/<grid>.json`` (written atomically by ``submit``
and ``wait``; ``status`` only reads) records each run's state, metrics and the
SLURM job id and log of its last submission, so any later process (``grar grid
status`` on the login node, the next ``dvc repro``) finds the jobs again and
asks ``squeue`` (or ``sacct`` where the cluster keeps accounting) for their
state, through ``pipeline.slurm.SlurmStateWatcher``. The job ids of every
grid's index are consulted: a run shared by two grids is submitted once.

Executors (``executor.kind``): ``local`` trains in this process, one run after
another; ``slurm`` submits the runs that are neither done nor queued as ONE job
array per grid (``pipeline.slurm.make_executor``: partition, GPUs and tasks per
node, time limit, array parallelism, extra sbatch options from
``executor.slurm``); ``debug`` is submitit's debug executor (in-process, pdb on
error). Submitting again runs only the missing and failed runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from tqdm import tqdm

from pipeline.config import GridCell, Params, with_overrides
from pipeline.errors import ClusterError, ConfigError, DataError, GrarError
from pipeline.io import write_text_atomic
from pipeline.paths import grid_index, grid_indexes_dir, grid_logs_dir, runs_dir
from pipeline.rundir import CHECKPOINT_FILE, config_hash, finished_metrics
from pipeline.slurm import SlurmStateWatcher, make_executor

CellFn = Callable[[Params, Path], dict]

STATES = ("pending", "running", "done", "failed")
HASH_CHARS = 10  # of the config hash in a run folder's name
ERROR_FILE = "error.txt"  # the traceback of a run that raised
DEFAULT_POLL_S = 10.0
QUERY_ATTEMPTS = 10  # wait gives up after so many failed queries in a row
SLURM_JOB_ID = re.compile(r"^\d+(_\d+)?$")  # "123" or "123_4" (array task); debug jobs have none
# SLURM job states (squeue/sacct) of a job that will still run: running, or waiting to.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"})
PENDING_STATES = frozenset({
    "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "READY", "RESV_DEL_HOLD",
    "UNKNOWN",  # sacct may not list a job yet right after sbatch
})


class GridFailed(GrarError):
    """Runs of a grid failed or were never submitted; the message names each with its log, one per line."""

    multiline = True


@dataclass(frozen=True)
class Run:
    """One (cell, seed) of a grid: its resolved config, that config's hash and its run folder."""

    grid: str
    cell: str
    seed: int
    params: Params
    config_hash: str
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.grid}/{self.cell} seed {self.seed}"


@dataclass(frozen=True)
class CellState:
    """What became of a run: ``state`` (one of ``STATES``), its last job, its log and its metrics."""

    run: Run
    state: str
    job_id: str | None = None
    log: str | None = None  # the job's stderr log, or error.txt of a failed in-process run
    metrics: dict | None = None  # metrics.json when done
    active: bool = False  # a SLURM job will still run it (pending in the queue, or running)

    def entry(self) -> dict[str, Any]:
        """The run's line of the grid index (run-folder contract)."""
        return {
            "cell": self.run.cell, "seed": self.run.seed, "config_hash": self.run.config_hash,
            "run_dir": str(self.run.run_dir), "state": self.state, "job_id": self.job_id, "log": self.log,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Submission:
    """What ``submit`` did: the grid's states afterwards, and the SLURM job ids it submitted (one array)."""

    states: list[CellState]
    job_ids: list[str]
    ran: int  # runs started (submitted, or trained in-process)


# --- expansion ------------------------------------------------------------------------------------


def grid_cells(params: Params, grid: str) -> tuple[GridCell, ...]:
    """The cells of grid ``grid``; ``ConfigError`` listing the grids when there is none of that name."""
    grids = params.grid.grids
    if grid not in grids:
        raise ConfigError(f"grid {grid!r} not in grid.grids; grids: {', '.join(grids) or '(none)'}")
    return grids[grid]


def expand(params: Params, grid: str, claimed: dict[str, Path] | None = None) -> list[Run]:
    """Every (cell, seed) of ``grid`` as a ``Run``, in params order (cells, then seeds).

    ``claimed`` maps config hashes to the run folders chosen so far (shared by the
    grids expanded together), so identical configs get one folder even before it exists.
    """
    claimed = {} if claimed is None else claimed
    runs = []
    for cell in grid_cells(params, grid):
        for seed in params.grid.seeds:
            resolved = with_overrides(params, {**cell.set, "seed": seed})
            digest = config_hash(resolved)
            if digest not in claimed:
                claimed[digest] = choose_run_dir(runs_dir(params), f"{cell.name}-s{seed}", digest)
            runs.append(Run(grid, cell.name, seed, resolved, digest, claimed[digest]))
    return runs


def choose_run_dir(root: Path, stem: str, digest: str) -> Path:
    """The folder of the config ``digest``: a finished folder with that hash (this run's own name first),
    else an existing one (own name first), else ``root/<stem>-<hash10>``."""
    own = root / f"{stem}-{digest[:HASH_CHARS]}"
    same = [path for path in root.glob(f"*-{digest[:HASH_CHARS]}") if path.is_dir()] if root.is_dir() else []
    if not same:
        return own
    return min(same, key=lambda path: (finished_metrics(path, digest) is None, path != own, path.name))


# --- states ---------------------------------------------------------------------------------------


def status(params: Params, grid: str) -> list[CellState]:
    """The state of every run of ``grid`` (reads run folders, grid indexes and SLURM; writes nothing)."""
    return status_all(params, [grid])[grid]


def status_all(params: Params, grids: Iterable[str]) -> dict[str, list[CellState]]:
    """``status`` of several grids, expanded together (shared runs get one folder) with one SLURM query."""
    claimed: dict[str, Path] = {}
    expanded = {grid: expand(params, grid, claimed) for grid in grids}
    done = {run.run_dir: finished_metrics(run.run_dir, run.config_hash) for runs in expanded.values() for run in runs}
    jobs = recorded_jobs(params, set(done))
    slurm = slurm_states([job_id for run_dir, records in jobs.items() if done[run_dir] is None for job_id, _ in records])
    return {
        grid: [cell_state(run, done[run.run_dir], latest_job(jobs.get(run.run_dir, []), slurm), slurm)
               for run in runs]
        for grid, runs in expanded.items()
    }


def cell_state(run: Run, metrics: dict | None, job: tuple[str, str | None] | None, slurm: dict[str, str]) -> CellState:
    """The state of ``run`` from its metrics, its last SLURM job ``(job id, log)`` and the jobs' SLURM states."""
    job_id, log = job if job is not None else (None, None)
    if metrics is not None:
        return CellState(run, "done", job_id, log, metrics)
    if job_id is not None:
        slurm_state = slurm.get(job_id, "UNKNOWN")
        if slurm_state in RUNNING_STATES:
            return CellState(run, "running", job_id, log, active=True)
        if slurm_state in PENDING_STATES:
            return CellState(run, "pending", job_id, log, active=True)
        return CellState(run, "failed", job_id, log or error_log(run))
    error = error_log(run)
    return CellState(run, "failed", log=error) if error is not None else CellState(run, "pending")


def error_log(run: Run) -> str | None:
    """``error.txt`` of the run folder when present (the traceback of a failed run)."""
    error = run.run_dir / ERROR_FILE
    return str(error) if error.is_file() else None


def recorded_jobs(params: Params, run_dirs: set[Path]) -> dict[Path, list[tuple[str, str | None]]]:
    """The SLURM jobs (id, log) that any grid index records for the runs in ``run_dirs``."""
    folder = grid_indexes_dir(params)
    jobs: dict[Path, list[tuple[str, str | None]]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() and run_dirs else []:
        for entry in read_index(path):
            job_id, run_dir = entry.get("job_id"), Path(str(entry.get("run_dir")))
            if run_dir in run_dirs and isinstance(job_id, str) and SLURM_JOB_ID.match(job_id):
                jobs.setdefault(run_dir, []).append((job_id, entry.get("log")))
    return jobs


def latest_job(records: list[tuple[str, str | None]], slurm: dict[str, str]) -> tuple[str, str | None] | None:
    """Of the jobs recorded for one run: one that will still run, else the last submitted (highest id)."""
    if not records:
        return None

    def key(record: tuple[str, str | None]) -> tuple[bool, tuple[int, ...]]:
        state = slurm.get(record[0], "UNKNOWN")
        return state in RUNNING_STATES | PENDING_STATES, tuple(int(part) for part in record[0].split("_"))

    return max(records, key=key)


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The SLURM state of each job (``RUNNING``, ``COMPLETED``...; ``PURGED`` when squeue forgot it), one query.

    The query is the one of ``pipeline.slurm.SlurmStateWatcher`` (squeue, or sacct
    where the cluster keeps accounting); ``ClusterError`` when it fails.
    """
    job_ids = sorted(set(job_ids))
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise ConfigError(f"SLURM jobs {', '.join(job_ids)} are recorded, but SLURM is not installed here: "
                          "ask from the cluster's login node")
    watcher = SlurmStateWatcher()
    for job_id in job_ids:
        watcher.register_job(job_id)
    command = watcher._make_command()  # the watcher's own query, run here so that a failure is seen
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise ClusterError(f"cannot read the state of SLURM jobs {', '.join(job_ids)}: {command[0]} failed "
                           f"({str(detail).strip()}); is the cluster up?") from None
    info = watcher.read_info(output)
    return {job_id: info.get(job_id, {}).get("State", "UNKNOWN").split(" ")[0].upper() for job_id in job_ids}


# --- the index ------------------------------------------------------------------------------------


def read_index(path: Path) -> list[dict[str, Any]]:
    """The cell entries of a grid index; ``DataError`` naming the file when it is not one."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the grid index ({err})") from None
    cells = index.get("cells") if isinstance(index, dict) else None
    if not isinstance(cells, list) or not all(isinstance(entry, dict) for entry in cells):
        raise DataError(f"{path}: not a grid index (expected {{\"grid\": ..., \"cells\": [{{...}}, ...]}})")
    return cells


def write_index(params: Params, grid: str, states: list[CellState]) -> Path:
    """Write ``<grid.runs>/grids/<grid>.json`` atomically."""
    path = grid_index(params, grid)
    write_text_atomic(path, json.dumps({"grid": grid, "cells": [s.entry() for s in states]}, indent=2) + "\n")
    return path


# --- running --------------------------------------------------------------------------------------


class CellJob(submitit.helpers.Checkpointable):
    """The callable every executor runs for one run: ``fn(params, run_dir)`` (``pipeline.train.run_cell``).

    A failure writes the traceback to ``run_dir/error.txt`` (rank 0) and is raised
    again, so SLURM marks the job FAILED; a success removes a stale ``error.txt``.
    Preemption and time-out: on SLURM's warning signal (SIGUSR2) the trainer writes
    a checkpoint and hands the signal to submitit, which calls ``checkpoint`` and
    requeues the job with the returned call; on SIGTERM (``scontrol requeue``,
    preemption) the trainer writes a checkpoint and exits, and SLURM requeues the
    job. Either way the job starts again and ``run_cell`` resumes from
    ``run_dir/checkpoint.pt``.
    """

    def __init__(self, fn: CellFn | None = None) -> None:
        self.fn = fn  # None: pipeline.train.run_cell

    def __call__(self, params: Params, run_dir: Path) -> dict:
        run_dir = Path(run_dir)
        main = job_rank() == 0
        if main and (run_dir / CHECKPOINT_FILE).is_file():
            restarts = os.environ.get("SLURM_RESTART_COUNT")
            print(f"grar: {run_dir}: resuming from its {CHECKPOINT_FILE}"
                  + (f" (job started {int(restarts) + 1} times)" if restarts else ""), file=sys.stderr, flush=True)
        try:
            result = (self.fn or run_cell)(params, run_dir)
        except Exception:
            if main:
                write_text_atomic(run_dir / ERROR_FILE, traceback.format_exc())
            raise
        if main:
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
        return result

    def checkpoint(self, params: Params, run_dir: Path) -> submitit.helpers.DelayedSubmission:
        """The same call again: the requeued job resumes from ``run_dir/checkpoint.pt``."""
        return submitit.helpers.DelayedSubmission(self, params, run_dir)


def run_cell(params: Params, run_dir: Path) -> dict:
    """``pipeline.train.run_cell``, imported on first use: finding and naming runs needs no torch."""
    from pipeline.train import run_cell as train_and_evaluate

    return train_and_evaluate(params, run_dir)


def job_rank() -> int:
    """This task's global rank in a submitit SLURM job (0 outside one)."""
    in_job = "SLURM_JOB_ID" in os.environ and "SUBMITIT_FOLDER" in os.environ
    return int(os.environ.get("SLURM_PROCID", "0")) if in_job else 0


def submit(params: Params, grid: str, cell_fn: CellFn | None = None) -> Submission:
    """Run or submit every run of ``grid`` that is neither done nor queued (missing and failed ones).

    ``local``: trains them here, one after another; a failing run is recorded
    (``error.txt``, state failed) and the others go on. ``slurm``: submits them as
    one job array and returns at once. ``debug``: submitit's debug executor, run here.
    The index is written afterwards (``local``: after every run).
    """
    states = status(params, grid)
    todo = list({s.run.run_dir: s.run for s in states if s.state in ("pending", "failed") and not s.active}.values())
    for run in todo:
        run.run_dir.mkdir(parents=True, exist_ok=True)  # claims the folder for the other grids' expansion
    job = CellJob(cell_fn)
    kind = params.executor.kind
    job_ids: list[str] = []
    if kind == "local":
        for run in tqdm(todo, desc=f"grid {grid}", unit="run", disable=None):
            tqdm.write(f"{run.label}: training into {run.run_dir}", file=sys.stderr)
            try:
                job(run.params, run.run_dir)
            except Exception as err:  # noqa: BLE001 - recorded in error.txt; the other runs go on
                tqdm.write(f"{run.label}: failed ({type(err).__name__}: {err}); traceback in {run.run_dir / ERROR_FILE}",
                           file=sys.stderr)
            write_index(params, grid, status(params, grid))
    elif todo:
        executor = make_executor(params.executor, grid_logs_dir(params, grid), f"grar-{grid}")
        jobs = executor.map_array(job, [run.params for run in todo], [run.run_dir for run in todo])
        if kind == "debug":
            for run, debug_job in zip(todo, jobs, strict=True):
                try:
                    debug_job.result()
                except Exception as err:  # noqa: BLE001 - recorded in error.txt; the other runs go on
                    print(f"{run.label}: failed ({type(err).__name__}: {err})", file=sys.stderr)
        else:
            job_ids = [j.job_id for j in jobs]
            submitted = {run.run_dir: (j.job_id, portable(j.paths.stderr)) for run, j in zip(todo, jobs, strict=True)}
            states = [CellState(s.run, "pending", *submitted[s.run.run_dir], active=True)
                      if s.run.run_dir in submitted else s for s in states]
    if kind != "slurm":
        states = status(params, grid)
    write_index(params, grid, states)
    return Submission(states, job_ids, len(todo))


def portable(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the index then survives moving the project)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def wait(params: Params, grids: list[str], poll_s: float = DEFAULT_POLL_S) -> dict[str, list[CellState]]:
    """Block (with a progress bar) until no run of ``grids`` has a job still to run, write their indexes.

    Raises ``GridFailed`` naming every failed run with its log, and every run that
    was never submitted; returns the states when all are done.
    """
    name, last, failures = f"grid {' '.join(grids)}", "", 0
    with tqdm(desc=name, unit="run", disable=None) as progress:
        while True:
            try:
                states = status_all(params, grids)
            except ClusterError as err:  # slurmctld busy or restarting: try again, for a while
                failures += 1
                if failures >= QUERY_ATTEMPTS:
                    raise
                tqdm.write(f"{err} (attempt {failures} of {QUERY_ATTEMPTS})", file=sys.stderr)
                time.sleep(poll_s)
                continue
            failures = 0
            runs = {s.run.run_dir: s for grid_states in states.values() for s in grid_states}
            counts = {state: sum(s.state == state for s in runs.values()) for state in STATES}
            progress.total = len(runs)
            progress.n = counts["done"] + counts["failed"]
            progress.set_postfix(counts, refresh=True)
            line = ", ".join(f"{n} {state}" for state, n in counts.items())
            if progress.disable and line != last:  # no terminal (a DVC log): one line per change
                print(f"{name}: {len(runs)} runs: {line}", file=sys.stderr, flush=True)
            last = line
            if not any(s.active for s in runs.values()):
                break
            time.sleep(poll_s)
    for grid, grid_states in states.items():
        write_index(params, grid, grid_states)
    check_complete(states)
    return states


def check_complete(states: dict[str, list[CellState]]) -> None:
    """``GridFailed`` listing failed runs (with logs) and runs nobody will run (not submitted)."""
    problems = []
    for grid, grid_states in states.items():
        for s in grid_states:
            if s.state == "failed":
                problems.append(f"{s.run.label}: failed, log {s.log or '(none)'}")
            elif s.state == "pending" and not s.active:
                problems.append(f"{s.run.label}: not submitted (grar grid submit {grid})")
    if problems:
        raise GridFailed(f"{len(problems)} run(s) not done:\n  " + "\n  ".join(problems))


def train_grids(params: Params, poll_s: float = DEFAULT_POLL_S, cell_fn: CellFn | None = None) -> None:
    """The DVC stage ``train``: submit every grid through the configured executor, wait, collect.

    Runs submitted earlier (``grar grid submit``) and still queued are waited for,
    not submitted again; finished runs are collected, not rerun.
    """
    grids = list(params.grid.grids)
    for grid in grids:
        submit(params, grid, cell_fn)
    wait(params, grids, poll_s)
