"""Grids (Tables 1-6): cells x seeds -> resolved configs -> run folders, trained by an executor.

A grid is ``params.grid.grids[NAME]``: named cells, each a set of overrides on
the base config (after the overrides the grid shares, ``grid_cells``). Every
cell runs once per seed of ``grid.seeds``; a *run* is one (cell, seed): its
resolved ``Params`` (``with_overrides(params, overrides | {"seed": s})``), their
``config_hash`` (``pipeline.rundir``) and a run folder
``<grid.runs>/<cell>-s<seed>-<hash10>/`` (the run-folder contract, README).
Identical configs are trained once: a run whose hash names an existing folder
(any grid, any cell name; a finished one first) reuses it, so ``fcn`` of
Tables 1-3 is one run, and so are Table 1's and Table 4's ResNet-101 cells.
A run is *done* when its folder holds ``metrics.json`` whose
``provenance.config_hash`` is the run's hash.

States (``status``), read fresh from the run folders and SLURM, never cached:

* ``done``     metrics.json with the run's hash;
* ``running``  its SLURM job runs (or completes);
* ``pending``  its SLURM job waits in the queue (also after a requeue), or it
               was never submitted (``active`` False: nothing will run it);
* ``failed``   its job ended without metrics.json, or, without a job, the run
               folder holds ``error.txt`` (the traceback ``CellJob`` wrote);
               ``reason`` says why in one line: the SLURM state (CANCELLED,
               TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED...), ``lost`` for
               a job SLURM does not know, else the last line of ``error.txt``.

A run whose folder lock (``pipeline.lock``) is live is ``running``, whatever
its job says: another process trains it (a failed local run trained again
shows as running). ``wait`` ends in bounded time for every SLURM outcome: a job
that stays UNKNOWN (not listed) or PREEMPTED without requeue for ``LOST_POLLS``
polls in a row is failed, and ``timeout_s`` bounds the whole wait.

The index ``<grid.runs>/grids/<grid>.json`` (written atomically by ``submit``
and ``wait`` under the indexes' lock ``<grid.runs>/grids/grar.lock``, so that
concurrent writers lose nothing; ``status`` only reads) records each run's
state, its failure reason, metrics, and the SLURM job id, log and submission
token of its last submission, so any later process (``grar grid
status`` on the login node, the next ``dvc repro``) finds the jobs again and
asks ``squeue`` (or ``sacct`` where the cluster keeps accounting) for their
state, through ``pipeline.slurm.SlurmStateWatcher``. The job ids of every
grid's index are consulted: a run shared by two grids is submitted once.

Executors (``executor.kind``): ``local`` trains on this machine, ``executor.parallel``
runs side by side in worker processes (1: in this process, one run after
another), skipping a run that another process trains (its lock is live);
``slurm`` submits the runs that are neither done nor queued as ONE job array
per grid (``pipeline.slurm.make_executor``: partition, GPUs and tasks per node,
time limit, array parallelism, extra sbatch options from ``executor.slurm``;
the array is named by a fresh submission token written into the index before
``sbatch``, so the jobs of a ``submit`` killed before it wrote their ids are
found by name and never submitted twice); ``debug`` is submitit's debug
executor (in-process, pdb on error). Submitting again runs only the missing
and failed runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import submitit
from tqdm import tqdm

from pipeline.config import Params, with_overrides
from pipeline.errors import ClusterError, ConfigError, DataError, GrarError
from pipeline.io import write_text_atomic
from pipeline.lock import Holder, Locked, acquire, create_exclusive, run_holder, run_lock
from pipeline.paths import grid_index, grid_indexes_dir, grid_logs_dir, runs_dir
from pipeline.rundir import CHECKPOINT_FILE, config_hash, finished_metrics
from pipeline.slurm import SQUEUE_UNKNOWN_JOBS, SlurmStateWatcher, jobs_named, make_executor

CellFn = Callable[[Params, Path], dict]
T = TypeVar("T")

STATES = ("pending", "running", "done", "failed")
HASH_CHARS = 10  # of the config hash in a run folder's name
FOLDERS = ".folders"  # <grid.runs>/.folders/<config hash>: the name of the config's run folder, set once
ERROR_FILE = "error.txt"  # the traceback of a run that raised
DEFAULT_POLL_S = 10.0
QUERY_ATTEMPTS = 10  # wait gives up after so many failed queries in a row
INDEX_LOCK_S = 300.0  # waiting longer than this for the indexes' lock is an error naming its holder
LOST_POLLS = 6  # wait fails a job that is UNKNOWN to SLURM or PREEMPTED (not requeued) in so many polls in a row
SLURM_JOB_ID = re.compile(r"^\d+(_\d+)?$")  # "123" or "123_4" (array task); debug jobs have none
# SLURM job states (squeue/sacct) of a job that will still run: running, or waiting to.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"})
PENDING_STATES = frozenset({
    "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "READY", "RESV_DEL_HOLD",
})
# States that may pass (sacct lists a job only some time after sbatch; a preempted job may be requeued):
# pending while they last fewer than LOST_POLLS polls of ``wait``, then failed ("lost", or the state).
DOUBTFUL_STATES = frozenset({"UNKNOWN", "PREEMPTED"})
LOST = ("UNKNOWN", "PURGED")  # SLURM does not know the job (any more): its failure reason is "lost"


class GridFailed(GrarError):
    """Runs of a grid failed or were never submitted; the message names each with its log, one per line."""

    multiline = True


class WaitTimeout(GrarError):
    """``wait`` ran out of time; the message lists the runs still queued or running."""


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
    active: bool = False  # a SLURM job or another process will still run it (pending in the queue, or running)
    reason: str | None = None  # one line: why it failed (SLURM state, "lost", error.txt), or who trains it
    submission: dict | None = None  # {"name": token, "task": i} of the SLURM array that was submitted for it

    def entry(self) -> dict[str, Any]:
        """The run's line of the grid index (run-folder contract)."""
        return {
            "cell": self.run.cell, "seed": self.run.seed, "config_hash": self.run.config_hash,
            "run_dir": str(self.run.run_dir), "state": self.state, "job_id": self.job_id, "log": self.log,
            "reason": self.reason, "submission": self.submission, "metrics": self.metrics,
        }


@dataclass(frozen=True)
class Submission:
    """What ``submit`` did: the grid's states afterwards, and the SLURM job ids it submitted (one array)."""

    states: list[CellState]
    job_ids: list[str]
    ran: int  # runs started (submitted, or trained in-process)


# --- expansion ------------------------------------------------------------------------------------


def grid_cells(params: Params, grid: str) -> dict[str, dict[str, Any]]:
    """Cell name -> effective overrides (shared ``set`` ⊕ the cell's, ``Grid.overrides``) of grid ``grid``;
    ``ConfigError`` listing the grids when there is none of that name."""
    grids = params.grid.grids
    if grid not in grids:
        raise ConfigError(f"grid {grid!r} not in grid.grids; grids: {', '.join(grids) or '(none)'}")
    return grids[grid].overrides()


def expand(params: Params, grid: str, claimed: dict[str, Path] | None = None) -> list[Run]:
    """Every (cell, seed) of ``grid`` as a ``Run``, in params order (cells, then seeds).

    ``claimed`` maps config hashes to the run folders chosen so far (shared by the
    grids expanded together), so identical configs get one folder even before it exists.
    """
    claimed = {} if claimed is None else claimed
    runs = []
    for cell, overrides in grid_cells(params, grid).items():
        for seed in params.grid.seeds:
            resolved = with_overrides(params, {**overrides, "seed": seed})
            digest = config_hash(resolved)
            if digest not in claimed:
                claimed[digest] = choose_run_dir(runs_dir(params), f"{cell}-s{seed}", digest)
            runs.append(Run(grid, cell, seed, resolved, digest, claimed[digest]))
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


class Patience:
    """How many polls of ``wait`` in a row each job has been in a ``DOUBTFUL_STATES`` state.

    ``observe`` (once per poll) returns the jobs that have been so for
    ``polls`` polls: ``cell_state`` then fails them instead of waiting on.
    """

    def __init__(self, polls: int = LOST_POLLS) -> None:
        self.polls = polls
        self.seen: dict[str, int] = {}

    def observe(self, slurm: dict[str, str]) -> frozenset[str]:
        self.seen = {job: self.seen.get(job, 0) + 1 for job, state in slurm.items() if state in DOUBTFUL_STATES}
        return frozenset(job for job, polls in self.seen.items() if polls >= self.polls)


def status_all(params: Params, grids: Iterable[str], patience: Patience | None = None) -> dict[str, list[CellState]]:
    """``status`` of several grids, expanded together (shared runs get one folder) with one SLURM query.

    ``patience`` (``wait``'s): fail the jobs that stayed UNKNOWN or PREEMPTED for its number of polls.
    """
    claimed: dict[str, Path] = {}
    expanded = {grid: expand(params, grid, claimed) for grid in grids}
    done = {run.run_dir: finished_metrics(run.run_dir, run.config_hash) for runs in expanded.values() for run in runs}
    jobs = recorded_jobs(params, set(done))
    slurm = slurm_states([job_id for run_dir, records in jobs.items() if done[run_dir] is None
                          for job_id, _, _ in records])
    expired = patience.observe(slurm) if patience is not None else frozenset()
    holders = {run_dir: run_holder(run_dir) for run_dir, metrics in done.items() if metrics is None}
    return {
        grid: [cell_state(run, done[run.run_dir], latest_job(jobs.get(run.run_dir, []), slurm), slurm,
                          holders.get(run.run_dir), expired)
               for run in runs]
        for grid, runs in expanded.items()
    }


def cell_state(run: Run, metrics: dict | None, job: tuple[str, str | None, dict | None] | None,
               slurm: dict[str, str], holder: Holder | None = None,
               expired: frozenset[str] = frozenset()) -> CellState:
    """The state of ``run`` from its metrics, its last SLURM job ``(job id, log, submission)``, the jobs'
    SLURM states, the live holder of its lock, and the jobs ``wait`` stopped waiting for (``expired``)."""
    job_id, log, submission = job if job is not None else (None, None, None)
    if metrics is not None:
        return CellState(run, "done", job_id, log, metrics, submission=submission)
    slurm_state = slurm.get(job_id, "UNKNOWN") if job_id is not None else None
    if holder is not None and holder.job and holder.job == job_id and slurm_state not in \
            RUNNING_STATES | PENDING_STATES | DOUBTFUL_STATES:
        holder = None  # its own job, which SLURM has ended (cancelled, timed out...): its process is going
    if holder is not None:  # another process (or its own job) trains it now
        reason = None if slurm_state in RUNNING_STATES else f"running elsewhere ({holder.describe()})"
        return CellState(run, "running", job_id, log, active=True, reason=reason, submission=submission)
    if job_id is not None:
        if slurm_state in RUNNING_STATES:
            return CellState(run, "running", job_id, log, active=True, submission=submission)
        if slurm_state in PENDING_STATES or (slurm_state in DOUBTFUL_STATES and job_id not in expired):
            reason = f"SLURM state {slurm_state}" if slurm_state in DOUBTFUL_STATES else None
            return CellState(run, "pending", job_id, log, active=True, reason=reason, submission=submission)
        reason = failure_reason(run, slurm_state)
        return CellState(run, "failed", job_id, log or error_log(run), reason=reason, submission=submission)
    error = error_log(run)
    if error is not None:
        return CellState(run, "failed", log=error, reason=failure_reason(run, None), submission=submission)
    return CellState(run, "pending", submission=submission)


def failure_reason(run: Run, slurm_state: str | None) -> str:
    """One line: ``lost`` for a job SLURM does not know, the SLURM state unless the job merely FAILED (or
    there is none), else the last line of ``error.txt`` (the exception)."""
    if slurm_state in LOST:
        return "lost (SLURM does not know the job)"
    if slurm_state not in (None, "FAILED"):
        return slurm_state if slurm_state != "COMPLETED" else "COMPLETED without metrics.json"
    error = run.run_dir / ERROR_FILE
    try:
        lines = [line.strip() for line in error.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return slurm_state or "failed"
    return next((line for line in reversed(lines) if line), slurm_state or "failed")


def error_log(run: Run) -> str | None:
    """``error.txt`` of the run folder when present (the traceback of a failed run)."""
    error = run.run_dir / ERROR_FILE
    return str(error) if error.is_file() else None


def recorded_jobs(params: Params, run_dirs: set[Path]) -> dict[Path, list[tuple[str, str | None, dict | None]]]:
    """The SLURM jobs (id, log, submission) that any grid index records for the runs in ``run_dirs``.

    An entry with a submission token but no job id (``submit`` was killed after
    ``sbatch``) gets the job SLURM knows under that name (``jobs_named``).
    """
    folder = grid_indexes_dir(params)
    entries = [entry for path in (sorted(folder.glob("*.json")) if folder.is_dir() and run_dirs else [])
               for entry in read_index(path) if Path(str(entry.get("run_dir"))) in run_dirs]
    tokens = {entry["submission"]["name"] for entry in entries if entry.get("job_id") is None
              and submission_of(entry) is not None}
    named = jobs_named(tokens) if tokens and shutil.which("squeue") is not None else {}
    jobs: dict[Path, list[tuple[str, str | None, dict | None]]] = {}
    for entry in entries:
        job_id, log, submission = entry.get("job_id"), entry.get("log"), submission_of(entry)
        if job_id is None and submission is not None:
            job_id = named.get(submission["name"], {}).get(submission["task"])
            log = submission.get("log_dir") and str(Path(submission["log_dir"]) / f"{job_id}_0_log.err")
        if isinstance(job_id, str) and SLURM_JOB_ID.match(job_id):
            jobs.setdefault(Path(str(entry.get("run_dir"))), []).append((job_id, log, submission))
    return jobs


def submission_of(entry: dict[str, Any]) -> dict | None:
    """The ``submission`` of an index entry when well formed (``{"name": str, "task": int, ...}``)."""
    submission = entry.get("submission")
    if isinstance(submission, dict) and isinstance(submission.get("name"), str) \
            and isinstance(submission.get("task"), int):
        return submission
    return None


def latest_job(records: list[tuple[str, str | None, dict | None]], slurm: dict[str, str]
               ) -> tuple[str, str | None, dict | None] | None:
    """Of the jobs recorded for one run: one that will still run, else the last submitted (highest id)."""
    if not records:
        return None

    def key(record: tuple[str, str | None, dict | None]) -> tuple[bool, tuple[int, ...]]:
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
    except subprocess.CalledProcessError as err:
        if SQUEUE_UNKNOWN_JOBS not in (err.stderr or ""):
            raise ClusterError(f"cannot read the state of SLURM jobs {', '.join(job_ids)}: {command[0]} failed "
                               f"({(err.stderr or str(err)).strip()}); is the cluster up?") from None
        output = ""  # squeue knows none of them any more
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
    """Write ``<grid.runs>/grids/<grid>.json`` atomically (hold ``index_lock`` around reading and writing)."""
    path = grid_index(params, grid)
    write_text_atomic(path, json.dumps({"grid": grid, "cells": [s.entry() for s in states]}, indent=2) + "\n")
    return path


def index_lock(params: Params):
    """The lock of the grid indexes (``<grid.runs>/grids/grar.lock``): one writer at a time, waited for at
    most ``INDEX_LOCK_S`` seconds (then ``Locked`` naming its holder)."""
    return acquire(grid_indexes_dir(params) / "grar.lock", f"grid indexes in {grid_indexes_dir(params)}", wait=True,
                   poll_s=0.2, timeout_s=INDEX_LOCK_S)


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
        # Rank 0 holds the run folder's lock over train + evaluate (``Locked``: another process trains it).
        with run_lock(run_dir) if main else contextlib.nullcontext():
            done = finished_metrics(run_dir, config_hash(params)) if main else None
            if done is not None:  # trained by another process since this one looked
                return done
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
    from pipeline.train import run_cell as train_run_cell

    return train_run_cell(params, run_dir)


def job_rank() -> int:
    """This task's global rank in a submitit SLURM job (0 outside one)."""
    in_job = "SLURM_JOB_ID" in os.environ and "SUBMITIT_FOLDER" in os.environ
    return int(os.environ.get("SLURM_PROCID", "0")) if in_job else 0


def submit(params: Params, grid: str, cell_fn: CellFn | None = None) -> Submission:
    """Run or submit every run of ``grid`` that is neither done nor queued (missing and failed ones).

    ``local``: trains them here, ``executor.parallel`` side by side (``run_locally``; a
    ``cell_fn`` given here runs in this process, one run after another); a failing run is recorded
    (``error.txt``, state failed) and the others go on; a run another process
    trains (its lock is live) is skipped and reported as running elsewhere.
    ``slurm``: submits them as one job array and returns at once, holding the
    indexes' lock from reading the states to recording the job ids, with the
    array's name (a fresh token) recorded before ``sbatch``. ``debug``:
    submitit's debug executor, run here. The index is written afterwards
    (``local``: after every run).
    """
    if params.executor.kind == "slurm":
        with index_lock(params):
            return submit_slurm(params, grid, cell_fn)
    states = status(params, grid)
    todo = runs_to_submit(states)
    for s in states:
        if s.active and s.job_id is None:
            print(f"{s.run.label}: skipped, {s.reason}", file=sys.stderr, flush=True)
    job = CellJob(cell_fn)
    started = 0
    if params.executor.kind == "local":
        parallel = params.executor.parallel if cell_fn is None else 1  # a caller's cell_fn runs here
        for run, outcome, detail in tqdm(run_locally(job, todo, parallel), total=len(todo),
                                         desc=f"grid {grid}", unit="run", disable=None):
            started += outcome != "skipped"
            if outcome == "skipped":
                tqdm.write(f"{run.label}: skipped, {detail}", file=sys.stderr)
            elif outcome == "failed":
                tqdm.write(f"{run.label}: failed ({detail}); traceback in {run.run_dir / ERROR_FILE}", file=sys.stderr)
            record(params, [grid])
    elif todo:
        jobs = make_executor(params.executor, grid_logs_dir(params, grid), f"grar-{grid}").map_array(
            job, [run.params for run in todo], [run.run_dir for run in todo])
        started = len(todo)
        for run, debug_job in zip(todo, jobs, strict=True):
            try:
                debug_job.result()
            except Exception as err:  # noqa: BLE001 - recorded in error.txt; the other runs go on
                print(f"{run.label}: failed ({type(err).__name__}: {err})", file=sys.stderr)
    return Submission(record(params, [grid])[grid], [], started)


def run_locally(job: CellJob, runs: list[Run], parallel: int) -> Iterator[tuple[Run, str, Any]]:
    """Train ``runs`` here (``executor.kind: local``); yield (run, outcome, detail) as each run ends.

    Outcomes: ``done`` (detail: the metrics), ``skipped`` (another process trains
    it; detail: who), ``failed`` (detail: "ErrorType: message"; the traceback is
    in the run's ``error.txt``). ``parallel`` 1: one run after another in this
    process. More: that many runs side by side, each in a worker process
    (spawned: a fresh torch; each decodes the dataset once), started in the order
    of ``runs``, yielded as they finish. A run's numbers do not depend on the
    process that trains it nor on what runs beside it: its CPU threads are
    ``train.threads``, part of its identity (``pipeline.train.cpu_threads``).
    """
    if parallel == 1 or len(runs) <= 1:
        for run in runs:
            tqdm.write(f"{run.label}: training into {run.run_dir}", file=sys.stderr)
            yield (run, *run_outcome(job, run.params, run.run_dir))
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(parallel, len(runs)), mp_context=context) as pool:
        tqdm.write(f"training {len(runs)} runs, {min(parallel, len(runs))} side by side", file=sys.stderr)
        futures = {}
        for run in runs:
            tqdm.write(f"{run.label}: training into {run.run_dir} (queued)", file=sys.stderr)
            futures[pool.submit(run_outcome, job, run.params, run.run_dir)] = run
        for future in concurrent.futures.as_completed(futures):
            yield (futures[future], *future.result())


def run_outcome(job: CellJob, params: Params, run_dir: Path) -> tuple[str, Any]:
    """``job(params, run_dir)`` as (outcome, detail) (see ``run_locally``): plain values a worker can send back."""
    try:
        return "done", job(params, run_dir)
    except Locked as err:
        return "skipped", str(err)
    except Exception as err:  # noqa: BLE001 - recorded in error.txt; the other runs go on
        return "failed", f"{type(err).__name__}: {err}"


def runs_to_submit(states: list[CellState]) -> list[Run]:
    """The runs of ``states`` nobody runs (pending or failed, not active), once each, in their settled
    folders (``settle_run_dir``), created."""
    todo = list({s.run.run_dir: s.run for s in states if s.state in ("pending", "failed") and not s.active}.values())
    todo = list({run.config_hash: settle_run_dir(run) for run in todo}.values())
    for run in todo:
        run.run_dir.mkdir(parents=True, exist_ok=True)  # claims the folder for the other grids' expansion
    return todo


def settle_run_dir(run: Run) -> Run:
    """``run`` in the one folder of its config: the first process to submit the config names it, atomically.

    Two processes expanding grids that name the same config differently (``fcn``,
    ``fcn-again``) before either folder exists would choose two folders; the
    first to create ``<grid.runs>/.folders/<hash>`` (exclusive create) fixes
    the name, and the other trains there too, after it, under the folder's lock.
    """
    record = run.run_dir.parent / FOLDERS / run.config_hash
    if create_exclusive(record, run.run_dir.name + "\n"):
        return run
    try:
        name = record.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise DataError(f"{record}: cannot read the run folder of this config ({err.strerror or err})") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*-" + run.config_hash[:HASH_CHARS], name):
        raise DataError(f"{record}: not the name of a run folder of config {run.config_hash[:HASH_CHARS]} "
                        f"({name!r}); delete it to let the next submit name the folder")
    return dataclasses.replace(run, run_dir=run.run_dir.parent / name)


def submit_slurm(params: Params, grid: str, cell_fn: CellFn | None) -> Submission:
    """``submit`` with ``executor.kind`` slurm; the caller holds ``index_lock``."""
    states = status(params, grid)
    todo = runs_to_submit(states)
    if not todo:
        write_index(params, grid, states)
        return Submission(states, [], 0)
    token = f"grar-{grid}-{uuid.uuid4().hex[:8]}"
    logs = grid_logs_dir(params, grid)
    settled = {run.config_hash: run for run in todo}
    tokens = {run.config_hash: {"name": token, "task": i, "log_dir": portable(logs)} for i, run in enumerate(todo)}

    def moved(s: CellState) -> Run:
        return dataclasses.replace(s.run, run_dir=settled[s.run.config_hash].run_dir)

    # Recorded before sbatch: killed after it, the next status finds the array by its name.
    write_index(params, grid, [CellState(moved(s), "pending", submission=tokens[s.run.config_hash])
                               if s.run.config_hash in settled else s for s in states])
    jobs = make_executor(params.executor, logs, token).map_array(
        CellJob(cell_fn), [run.params for run in todo], [run.run_dir for run in todo])
    submitted = {run.config_hash: (j.job_id, portable(j.paths.stderr)) for run, j in zip(todo, jobs, strict=True)}
    states = [CellState(moved(s), "pending", *submitted[s.run.config_hash], active=True,
                        submission=tokens[s.run.config_hash])
              if s.run.config_hash in submitted else s for s in states]
    write_index(params, grid, states)
    return Submission(states, [j.job_id for j in jobs], len(todo))


def record(params: Params, grids: list[str], patience: Patience | None = None) -> dict[str, list[CellState]]:
    """Under the indexes' lock, read the states of ``grids`` afresh and write their indexes."""
    with index_lock(params):
        states = status_all(params, grids, patience)
        for grid, grid_states in states.items():
            write_index(params, grid, grid_states)
    return states


def portable(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the index then survives moving the project)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def wait(params: Params, grids: list[str], poll_s: float = DEFAULT_POLL_S,
         timeout_s: float | None = None) -> dict[str, list[CellState]]:
    """Block (with a progress bar) until no run of ``grids`` has a job still to run, write their indexes.

    Every poll reads the states and writes the indexes under the indexes' lock,
    so a concurrent ``submit`` loses no job id. A job UNKNOWN to SLURM or
    PREEMPTED without requeue for ``LOST_POLLS`` polls is failed. Raises
    ``GridFailed`` naming every failed run with its log, and every run that was
    never submitted; ``WaitTimeout`` listing the runs still queued or running
    after ``timeout_s`` seconds; returns the states when all are done.
    """
    name, last = f"grid {' '.join(grids)}", ""
    patience = Patience()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with tqdm(desc=name, unit="run", disable=None) as progress:
        while True:
            states = retried(lambda: record(params, grids, patience), poll_s,
                             lambda text: tqdm.write(text, file=sys.stderr))
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
            if deadline is not None and time.monotonic() + poll_s > deadline:
                left = [f"{s.run.label} ({s.state}" + (f", job {s.job_id}" if s.job_id else "") + ")"
                        for s in runs.values() if s.active]
                raise WaitTimeout(f"{name}: timed out after {timeout_s:g} s with {len(left)} run(s) not finished: "
                                  + ", ".join(left))
            time.sleep(poll_s)
    check_complete(states)
    return states


def retried(query: Callable[[], T], poll_s: float, say: Callable[[str], object]) -> T:
    """``query()``, asked again every ``poll_s`` after a ``ClusterError`` (slurmctld busy or restarting), each
    failure said; the error of the ``QUERY_ATTEMPTS``-th failure in a row is raised."""
    attempt = 1
    while True:
        try:
            return query()
        except ClusterError as err:
            if attempt >= QUERY_ATTEMPTS:
                raise
            say(f"{err} (attempt {attempt} of {QUERY_ATTEMPTS})")
            attempt += 1
            time.sleep(poll_s)


def check_complete(states: dict[str, list[CellState]]) -> None:
    """``GridFailed`` listing failed runs (with logs) and runs nobody will run (not submitted)."""
    problems = []
    for grid, grid_states in states.items():
        for s in grid_states:
            if s.state == "failed":
                problems.append(f"{s.run.label}: failed ({s.reason}), log {s.log or '(none)'}")
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
