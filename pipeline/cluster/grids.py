"""Grids (Tables 1-6): cells x seeds -> resolved configs -> run folders, and the state of each run.

A grid is ``params.grid.grids[NAME]``: named cells, each a set of overrides on
the base config (after the overrides the grid shares, ``GridConfig.cells``). Every
cell runs once per seed of ``grid.seeds``; a *run* is one (cell, seed): its
resolved ``Params`` (``with_overrides(params, overrides | {"seed": s})``), their
``config_hash`` (``pipeline.rundir``) and a run folder
``<grid.runs>/<cell>-s<seed>-<hash10>/`` (the run-folder contract, ``pipeline.rundir``).
Identical configs are trained once: a run whose hash names an existing folder
(any grid, any cell name; a finished one first) reuses it, so ``fcn`` of
Tables 1-3 is one run, and so are Table 1's and Table 4's ResNet-101 cells.
A run is *done* when its folder holds ``metrics.json`` whose
``provenance.config_hash`` is the run's hash.

States (``status``), read fresh from the run folders and SLURM, never cached:

* ``done``     metrics.json with the run's hash;
* ``running``  its SLURM job runs (or completes), or is suspended (``reason``
               says so, and ``status`` shows no ETA: it makes no progress);
* ``pending``  its SLURM job waits in the queue (also after a requeue; the
               ``reason`` is squeue's, e.g. ``queued: ReqNodeNotAvail,
               UnavailableNodes:node1`` while its node is drained), or it
               was never submitted (``active`` False: nothing will run it);
* ``failed``   its job ended without metrics.json, or, without a job, the run
               folder holds ``error.txt`` (the traceback ``CellJob`` wrote);
               ``reason`` says why in one line: the SLURM state (CANCELLED,
               TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED...), ``lost`` for
               a job SLURM does not know, else the last line of ``error.txt``.

A run whose folder lock (``pipeline.lock``) is live is ``running``, whatever
its job says: another process trains it (a failed local run trained again
shows as running). A job that stays UNKNOWN (not listed) or PREEMPTED without
requeue for ``LOST_POLLS`` polls in a row of ``wait`` is failed
(``pipeline.cluster.slurm_jobs.Patience``); one ``status`` cannot tell yet and
shows it pending with the SLURM state as reason.

The grid index ``<grid.runs>/grids/<grid>.json`` (``pipeline.cluster.index``)
records each run's state, its failure reason, metrics, and the SLURM job id,
log and submission token of its last submission, so any later process (``grar
grid status`` on the login node, the next ``dvc repro``) finds the jobs again
and asks SLURM for their state (``pipeline.cluster.slurm_jobs``). The job ids
of every grid's index are consulted: a run shared by two grids is submitted
once. Running the runs: ``pipeline.cluster.submit``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cluster.index import grid_index_paths, index_lock, readable_entries, write_index
from pipeline.cluster.slurm_jobs import (
    DOUBTFUL_STATES,
    LOST,
    PENDING_STATES,
    RUNNING_STATES,
    SLURM_JOB_ID,
    SUSPENDED,
    Patience,
    jobs_named,
    pending_reasons,
    slurm_states,
)
from pipeline.config import Params, with_overrides
from pipeline.errors import DataError
from pipeline.lock import Holder, create_exclusive, run_holder
from pipeline.paths import runs_dir
from pipeline.rundir import config_hash, finished_metrics

STATES = ("pending", "running", "done", "failed")
HASH_CHARS = 10  # of the config hash in a run folder's name
FOLDERS = ".folders"  # <grid.runs>/.folders/<config hash>: the name of the config's run folder, set once
ERROR_FILE = "error.txt"  # the traceback of a run that raised, then its one line (ERROR_PREFIX ...)
ERROR_PREFIX = "grar: error: "
SRUN_TASK_ERROR = re.compile(r"^srun: error: (?P<node>\S+): task (?P<task>\d+): (?P<what>.+)$")  # "...: Killed"


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
    suspended: bool = False  # its SLURM job is SUSPENDED: shown running, without an ETA

    def entry(self) -> dict[str, Any]:
        """The run's line of the grid index (run-folder contract)."""
        return {
            "cell": self.run.cell,
            "seed": self.run.seed,
            "config_hash": self.run.config_hash,
            "run_dir": str(self.run.run_dir),
            "state": self.state,
            "job_id": self.job_id,
            "log": self.log,
            "reason": self.reason,
            "submission": self.submission,
            "metrics": self.metrics,
        }


# --- expansion ------------------------------------------------------------------------------------


def expand(params: Params, grid: str, claimed: dict[str, Path] | None = None) -> list[Run]:
    """Every (cell, seed) of ``grid`` as a ``Run``, in params order (cells, then seeds).

    ``claimed`` maps config hashes to the run folders chosen so far (shared by the
    grids expanded together), so identical configs get one folder even before it exists.
    """
    claimed = {} if claimed is None else claimed
    runs = []
    for cell, overrides in params.grid.cells(grid).items():
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
        raise DataError(
            f"{record}: not the name of a run folder of config {run.config_hash[:HASH_CHARS]} "
            f"({name!r}); delete it to let the next submit name the folder"
        )
    return dataclasses.replace(run, run_dir=run.run_dir.parent / name)


# --- states ---------------------------------------------------------------------------------------


def status(params: Params, grid: str) -> list[CellState]:
    """The state of every run of ``grid`` (reads run folders, grid indexes and SLURM; writes nothing)."""
    return status_all(params, [grid])[grid]


def status_all(params: Params, grids: Iterable[str], patience: Patience | None = None) -> dict[str, list[CellState]]:
    """``status`` of several grids, expanded together (shared runs get one folder) with one SLURM query.

    ``patience`` (``wait``'s): fail the jobs that stayed UNKNOWN or PREEMPTED for its number of polls.
    """
    claimed: dict[str, Path] = {}
    expanded = {grid: expand(params, grid, claimed) for grid in grids}
    done = {run.run_dir: finished_metrics(run.run_dir, run.config_hash) for runs in expanded.values() for run in runs}
    jobs = recorded_jobs(params, set(done))
    slurm = slurm_states(
        [job_id for run_dir, records in jobs.items() if done[run_dir] is None for job_id, _, _ in records]
    )
    waiting = pending_reasons(job for job, state in slurm.items() if state in PENDING_STATES - {SUSPENDED})
    expired = patience.observe(slurm) if patience is not None else frozenset()
    holders = {run_dir: run_holder(run_dir) for run_dir, metrics in done.items() if metrics is None}
    return {
        grid: [
            cell_state(
                run,
                done[run.run_dir],
                latest_job(jobs.get(run.run_dir, []), slurm),
                slurm,
                holders.get(run.run_dir),
                expired,
                waiting,
            )
            for run in runs
        ]
        for grid, runs in expanded.items()
    }


def cell_state(
    run: Run,
    metrics: dict | None,
    job: tuple[str, str | None, dict | None] | None,
    slurm: dict[str, str],
    holder: Holder | None = None,
    expired: frozenset[str] = frozenset(),
    waiting: dict[str, str] | None = None,
) -> CellState:
    """The state of ``run`` from its metrics, its last SLURM job ``(job id, log, submission)``, the jobs'
    SLURM states, the live holder of its lock, the jobs ``wait`` stopped waiting for (``expired``) and why
    SLURM keeps the pending ones waiting (``waiting``: squeue's reason)."""
    job_id, log, submission = job if job is not None else (None, None, None)
    if metrics is not None:
        return CellState(run, "done", job_id, log, metrics, submission=submission)
    slurm_state = slurm.get(job_id, "UNKNOWN") if job_id is not None else None
    if slurm_state == SUSPENDED:  # its node and its processes are kept, stopped: its lock's heartbeat too
        reason = "suspended by SLURM: no progress until it is resumed"
        return CellState(run, "running", job_id, log, active=True, reason=reason, submission=submission, suspended=True)
    if (
        holder is not None
        and holder.job
        and holder.job == job_id
        and slurm_state not in RUNNING_STATES | PENDING_STATES | DOUBTFUL_STATES
    ):
        holder = None  # its own job, which SLURM has ended (cancelled, timed out...): its process is going
    if holder is not None:  # another process (or its own job) trains it now
        reason = None if slurm_state in RUNNING_STATES else f"running elsewhere ({holder.describe()})"
        return CellState(run, "running", job_id, log, active=True, reason=reason, submission=submission)
    if job_id is not None:
        if slurm_state in RUNNING_STATES:
            return CellState(run, "running", job_id, log, active=True, submission=submission)
        if slurm_state in PENDING_STATES or (slurm_state in DOUBTFUL_STATES and job_id not in expired):
            why = (waiting or {}).get(job_id)
            reason = f"SLURM state {slurm_state}" if slurm_state in DOUBTFUL_STATES else why and f"queued: {why}"
            return CellState(run, "pending", job_id, log, active=True, reason=reason, submission=submission)
        reason = failure_reason(run, slurm_state, log)
        return CellState(run, "failed", job_id, log or error_log(run), reason=reason, submission=submission)
    error = error_log(run)
    if error is not None:
        return CellState(run, "failed", log=error, reason=failure_reason(run, None), submission=submission)
    return CellState(run, "pending", submission=submission)


def failure_reason(run: Run, slurm_state: str | None, log: str | None = None) -> str:
    """One line: ``lost`` for a job SLURM does not know, the SLURM state unless the job merely FAILED (or
    there is none), else the last line of ``error.txt`` (the exception, ``grar: error: ...``), else the last
    ``grar: error:`` line of the job's log (``log``: error.txt could not be written, on a full disk), else
    srun's line there for a task killed outside Python (``FAILED (task 0 on node1: Killed)``)."""
    if slurm_state in LOST:
        return "lost (SLURM does not know the job)"
    if slurm_state not in (None, "FAILED"):
        return slurm_state if slurm_state != "COMPLETED" else "COMPLETED without metrics.json"
    for path, prefix in ((run.run_dir / ERROR_FILE, ""), (Path(log) if log else None, ERROR_PREFIX)):
        if path is None:
            continue
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        except OSError:
            continue
        found = next((line for line in reversed(lines) if line and line.startswith(prefix)), None)
        if found is not None:
            return found.removeprefix(ERROR_PREFIX)
        if prefix:  # the job's log: a task killed outside Python (SIGKILL, the kernel's OOM killer) is srun's line
            killed = next((match for line in reversed(lines) if (match := SRUN_TASK_ERROR.match(line))), None)
            if killed is not None:
                return f"{slurm_state or 'failed'} (task {killed['task']} on {killed['node']}: {killed['what']})"
    return slurm_state or "failed"


def error_log(run: Run) -> str | None:
    """``error.txt`` of the run folder when present (the traceback of a failed run)."""
    error = run.run_dir / ERROR_FILE
    return str(error) if error.is_file() else None


def recorded_jobs(params: Params, run_dirs: set[Path]) -> dict[Path, list[tuple[str, str | None, dict | None]]]:
    """The SLURM jobs (id, log, submission) that any grid index records for the runs in ``run_dirs``.

    An entry with a submission token but no job id (``submit`` was killed after
    ``sbatch``) gets the job SLURM knows under that name (``jobs_named``).
    """
    entries = [
        entry
        for path in (grid_index_paths(params) if run_dirs else [])
        for entry in readable_entries(path)
        if Path(str(entry.get("run_dir"))) in run_dirs
    ]
    tokens = {
        entry["submission"]["name"]
        for entry in entries
        if entry.get("job_id") is None and submission_of(entry) is not None
    }
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
    if (
        isinstance(submission, dict)
        and isinstance(submission.get("name"), str)
        and isinstance(submission.get("task"), int)
    ):
        return submission
    return None


def latest_job(
    records: list[tuple[str, str | None, dict | None]], slurm: dict[str, str]
) -> tuple[str, str | None, dict | None] | None:
    """Of the jobs recorded for one run: one that will still run, else the last submitted (highest id)."""
    if not records:
        return None

    def key(record: tuple[str, str | None, dict | None]) -> tuple[bool, tuple[int, ...]]:
        state = slurm.get(record[0], "UNKNOWN")
        return state in RUNNING_STATES | PENDING_STATES, tuple(int(part) for part in record[0].split("_"))

    return max(records, key=key)


def record(
    params: Params,
    grids: list[str],
    patience: Patience | None = None,
    adopt: Callable[[dict[str, list[CellState]]], object] | None = None,
) -> dict[str, list[CellState]]:
    """Under the indexes' lock, read the states of ``grids`` afresh (``adopt`` them: ``submit.adopt_orphans``)
    and write their indexes."""
    with index_lock(params):
        states = status_all(params, grids, patience)
        if adopt is not None:
            adopt(states)
        for grid, grid_states in states.items():
            write_states(params, grid, grid_states)
    return states


def write_states(params: Params, grid: str, states: list[CellState]) -> Path:
    """Write the index of ``grid`` from its runs' ``states`` (hold ``index_lock`` around reading and writing)."""
    return write_index(params, grid, [s.entry() for s in states])
