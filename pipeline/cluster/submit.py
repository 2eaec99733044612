"""Running grids: every run that is neither done nor queued, through ``executor.kind``; waiting for them.

Executors (``executor.kind``): ``local`` trains on this machine, ``executor.parallel``
runs side by side in worker processes (1: in this process, one run after
another), skipping a run that another process trains (its lock is live);
``slurm`` submits the runs that are neither done nor queued as ONE job array
per grid (``pipeline.cluster.executors.make_executor``: partition, GPUs and tasks per node,
time limit, array parallelism, extra sbatch options from ``executor.slurm``;
the array is named by a fresh submission token written into the index before
``sbatch``, so the jobs of a ``submit`` killed before it wrote their ids are
found by name and never submitted twice, and those killed before submitit
wrote their job files get them from the next ``submit`` or ``wait``:
``adopt_orphans``); ``debug`` is submitit's debug
executor (in-process, pdb on error). Submitting again runs only the missing
and failed runs; a run finished in another runs folder (a DVC experiment's
workspace, ``GRAR_REUSE_RUNS``) is linked in instead of trained
(``pipeline.cluster.reuse``). ``wait`` ends in bounded time for every SLURM outcome (the
states and the lost-polls rule: ``pipeline.cluster.grids``), and ``timeout_s``
bounds the whole wait. ``train_grids`` is the DVC stage ``train``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from tqdm import tqdm

from pipeline.cluster.executors import make_executor
from pipeline.cluster.grids import ERROR_FILE, STATES, CellState, Run, record, runs_to_submit, status, write_states
from pipeline.cluster.index import index_lock
from pipeline.cluster.reuse import adopt_finished
from pipeline.cluster.slurm_jobs import DEFAULT_POLL_S, Patience, retried
from pipeline.config import Params
from pipeline.errors import GrarError, describe_os_error, one_line
from pipeline.io import write_text_atomic
from pipeline.lock import Locked, LockLost, run_lock
from pipeline.paths import grid_logs_dir, portable
from pipeline.rundir import CHECKPOINT_FILE, config_hash, finished_metrics

CellFn = Callable[[Params, Path], dict]


class GridFailed(GrarError):
    """Runs of a grid failed or were never submitted; the message names each with its log, one per line."""

    multiline = True


class WaitTimeout(GrarError):
    """``wait`` ran out of time; the message lists the runs still queued or running."""


@dataclass(frozen=True)
class Submission:
    """What ``submit`` did: the grid's states afterwards, and the SLURM job ids it submitted (one array)."""

    states: list[CellState]
    job_ids: list[str]
    ran: int  # runs started (submitted, or trained in-process)


class CellJob(submitit.helpers.Checkpointable):
    """The callable every executor runs for one run: ``fn(params, run_dir)`` (``pipeline.training.run.run_cell``).

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
        self.fn = fn  # None: pipeline.training.run.run_cell

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
                print(
                    f"grar: {run_dir}: resuming from its {CHECKPOINT_FILE}"
                    + (f" (job started {int(restarts) + 1} times)" if restarts else ""),
                    file=sys.stderr,
                    flush=True,
                )
            try:
                result = (self.fn or run_cell)(params, run_dir)
            except LockLost:
                raise  # the folder is another process's now: not even error.txt is written there
            except Exception as err:
                if main:
                    record_failure(run_dir, err)
                raise
            if main:
                (run_dir / ERROR_FILE).unlink(missing_ok=True)
            return result

    def checkpoint(self, params: Params, run_dir: Path) -> submitit.helpers.DelayedSubmission:
        """The same call again: the requeued job resumes from ``run_dir/checkpoint.pt``."""
        return submitit.helpers.DelayedSubmission(self, params, run_dir)


def record_failure(run_dir: Path, err: BaseException) -> None:
    """The failure of a run, where ``status`` reads its reason: ``error.txt`` (the traceback, then one line
    ``grar: error: <what happened>``), and that line on stderr (a SLURM job's log) too; when error.txt cannot be
    written (a full disk) the log is where the reason is found, beside the failed write."""
    line = f"grar: error: {error_summary(err)}"
    try:
        write_text_atomic(run_dir / ERROR_FILE, traceback.format_exc() + line + "\n")
    except OSError as write_error:
        print(f"grar: error: {run_dir / ERROR_FILE} not written: {describe_os_error(write_error)}", file=sys.stderr)
        print(line, file=sys.stderr, flush=True)
        return
    if in_slurm_job():  # the job's log says it too (a local run's failure is said by submit)
        print(line, file=sys.stderr, flush=True)


def error_summary(err: BaseException) -> str:
    """One line for an exception: a ``GrarError``'s message, an ``OSError``'s file and reason, else type: message."""
    if isinstance(err, GrarError):
        return one_line(str(err))
    if isinstance(err, OSError):
        return describe_os_error(err)
    return one_line(f"{type(err).__name__}: {err}")


def run_cell(params: Params, run_dir: Path) -> dict:
    """``pipeline.training.run.run_cell``, imported on first use: finding and naming runs needs no torch."""
    from pipeline.training.run import run_cell as train_run_cell

    return train_run_cell(params, run_dir)


def in_slurm_job() -> bool:
    """Whether this process is a task of a submitit SLURM job."""
    return "SLURM_JOB_ID" in os.environ and "SUBMITIT_FOLDER" in os.environ


def job_rank() -> int:
    """This task's global rank in a submitit SLURM job (0 outside one)."""
    return int(os.environ.get("SLURM_PROCID", "0")) if in_slurm_job() else 0


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
    states, todo = runs_to_train(params, grid)
    for s in states:
        if s.active and s.job_id is None:
            print(f"{s.run.label}: skipped, {s.reason}", file=sys.stderr, flush=True)
    job = CellJob(cell_fn)
    started = 0
    if params.executor.kind == "local":
        parallel = params.executor.parallel if cell_fn is None else 1  # a caller's cell_fn runs here
        for run, outcome, detail in tqdm(
            run_locally(job, todo, parallel), total=len(todo), desc=f"grid {grid}", unit="run", disable=None
        ):
            started += outcome != "skipped"
            if outcome == "skipped":
                tqdm.write(f"{run.label}: skipped, {detail}", file=sys.stderr)
            elif outcome == "failed":
                tqdm.write(f"{run.label}: failed ({detail}); traceback in {run.run_dir / ERROR_FILE}", file=sys.stderr)
            record(params, [grid])
    elif todo:
        jobs = make_executor(params.executor, grid_logs_dir(params, grid), f"grar-{grid}").map_array(
            job, [run.params for run in todo], [run.run_dir for run in todo]
        )
        started = len(todo)
        for run, debug_job in zip(todo, jobs, strict=True):
            try:
                debug_job.result()
            except Exception as err:
                print(f"{run.label}: failed ({type(err).__name__}: {err})", file=sys.stderr)
    return Submission(record(params, [grid])[grid], [], started)


def runs_to_train(params: Params, grid: str) -> tuple[list[CellState], list[Run]]:
    """The states of ``grid`` and its runs that nobody runs (``runs_to_submit``), after reusing the finished
    runs of other runs folders (``pipeline.cluster.reuse``): those are done, not trained."""
    states = status(params, grid)
    todo = runs_to_submit(states)
    if adopt_finished(params, todo):
        states = status(params, grid)
        todo = runs_to_submit(states)
    return states, todo


def run_locally(job: CellJob, runs: list[Run], parallel: int) -> Iterator[tuple[Run, str, Any]]:
    """Train ``runs`` here (``executor.kind: local``); yield (run, outcome, detail) as each run ends.

    Outcomes: ``done`` (detail: the metrics), ``skipped`` (another process trains
    it; detail: who), ``failed`` (detail: "ErrorType: message"; the traceback is
    in the run's ``error.txt``). ``parallel`` 1: one run after another in this
    process. More: that many runs side by side, each in a worker process
    (spawned: a fresh torch; each decodes the dataset once), started in the order
    of ``runs``, yielded as they finish. A run's numbers do not depend on the
    process that trains it nor on what runs beside it: its CPU threads are
    ``train.threads``, part of its identity (``pipeline.training.loop.cpu_threads``).
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
    except Exception as err:
        return "failed", f"{type(err).__name__}: {err}"


def submit_slurm(params: Params, grid: str, cell_fn: CellFn | None) -> Submission:
    """``submit`` with ``executor.kind`` slurm; the caller holds ``index_lock``."""
    states, todo = runs_to_train(params, grid)
    adopt_orphans(params, {grid: states}, cell_fn)
    if not todo:
        write_states(params, grid, states)
        return Submission(states, [], 0)
    token = f"grar-{grid}-{uuid.uuid4().hex[:8]}"
    logs = grid_logs_dir(params, grid)
    settled = {run.config_hash: run for run in todo}
    tokens = {run.config_hash: {"name": token, "task": i, "log_dir": portable(logs)} for i, run in enumerate(todo)}

    def moved(s: CellState) -> Run:
        return dataclasses.replace(s.run, run_dir=settled[s.run.config_hash].run_dir)

    # Recorded before sbatch: killed after it, the next status finds the array by its name.
    write_states(
        params,
        grid,
        [
            CellState(moved(s), "pending", submission=tokens[s.run.config_hash]) if s.run.config_hash in settled else s
            for s in states
        ],
    )
    jobs = make_executor(params.executor, logs, token).map_array(
        CellJob(cell_fn), [run.params for run in todo], [run.run_dir for run in todo]
    )
    submitted = {run.config_hash: (j.job_id, portable(j.paths.stderr)) for run, j in zip(todo, jobs, strict=True)}
    states = [
        CellState(moved(s), "pending", *submitted[s.run.config_hash], active=True, submission=tokens[s.run.config_hash])
        if s.run.config_hash in submitted
        else s
        for s in states
    ]
    write_states(params, grid, states)
    return Submission(states, [j.job_id for j in jobs], len(todo))


def adopt_orphans(params: Params, states: dict[str, list[CellState]], cell_fn: CellFn | None = None) -> list[str]:
    """Give the jobs of a ``submit`` killed between ``sbatch`` and submitit's moving each job's pickle into place
    (``<log_dir>/<job>_submitted.pkl``) the pickle they wait for; return their ids.

    Such jobs are found by the array's name (``grids.recorded_jobs``) and are queued or running, but would wait
    60 s for their pickle and fail. Each gets the call submitit would have written: ``CellJob(cell_fn)`` on
    its run's params and folder, with submitit's time-out countdown, written atomically (the job polls for
    it). Called under the indexes' lock (by ``submit`` and by every poll of ``wait``), so no submit is between
    ``sbatch`` and its own pickles meanwhile; a job already given up is failed, and the next submit reruns it.
    """
    if params.executor.kind != "slurm":
        return []
    repaired: list[str] = []
    for s in (s for grid_states in states.values() for s in grid_states):
        folder = (s.submission or {}).get("log_dir")
        if not (s.active and s.job_id and isinstance(folder, str)) or s.job_id in repaired:
            continue
        pickle = submitit.core.utils.JobPaths(folder, s.job_id).submitted_pickle
        if pickle.exists():
            continue
        executor = make_executor(params.executor, Path(folder), str(s.submission["name"]))
        delayed = submitit.helpers.DelayedSubmission(CellJob(cell_fn), s.run.params, s.run.run_dir)
        delayed.set_timeout(executor.parameters.get("time", 5), executor.max_num_timeout)
        temporary = pickle.with_name(f".{pickle.name}.{uuid.uuid4().hex}.tmp")
        try:
            delayed.dump(temporary)
            os.replace(temporary, pickle)
        finally:
            temporary.unlink(missing_ok=True)
        repaired.append(s.job_id)
    if repaired:
        print(
            f"grar: SLURM job(s) {', '.join(repaired)} of a submit killed after sbatch: their job files written, "
            "they run",
            file=sys.stderr,
            flush=True,
        )
    return repaired


def wait(
    params: Params, grids: list[str], poll_s: float = DEFAULT_POLL_S, timeout_s: float | None = None
) -> dict[str, list[CellState]]:
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
            states = retried(
                lambda: record(params, grids, patience, adopt=lambda found: adopt_orphans(params, found)),
                poll_s,
                lambda text: tqdm.write(text, file=sys.stderr),
            )
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
                left = [
                    f"{s.run.label} ({s.state}" + (f", job {s.job_id}" if s.job_id else "") + ")"
                    for s in runs.values()
                    if s.active
                ]
                raise WaitTimeout(
                    f"{name}: timed out after {timeout_s:g} s with {len(left)} run(s) not finished: " + ", ".join(left)
                )
            time.sleep(poll_s)
    check_complete(states)
    return states


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
