"""SLURM's job states: their vocabulary, the queries that read them, and the patience of a poll.

What a grid (``pipeline.cluster.grids``) and a stage job (``pipeline.cluster.stage_jobs``)
both need to know about a job once it is submitted:

* the vocabulary: ``RUNNING_STATES`` and ``PENDING_STATES`` (the job will still
  run), ``DOUBTFUL_STATES`` (UNKNOWN, PREEMPTED: may pass, waited for
  ``LOST_POLLS`` polls by ``Patience``), ``LOST`` (SLURM does not know the job
  any more), every other state an end (COMPLETED, FAILED, CANCELLED, TIMEOUT,
  OUT_OF_MEMORY, NODE_FAIL...);
* the queries: ``slurm_states`` (one query for many jobs), ``jobs_named`` (the
  jobs of a submission token, for a submit killed between ``sbatch`` and
  recording the ids), ``retried`` (a query asked again while slurmctld is busy).

Job states are asked for by job id (``squeue --jobs``, ``sacct -j``), so they
can be read by any user, not only the one who submitted.

Job states without accounting. submitit asks ``sacct`` for the state of a job
that has not written its result yet; on a cluster without slurmdbd (like the
local test cluster, see ``pipeline.cluster.local_test_cluster``) ``sacct`` fails and submitit
logs "Bypassing sacct error" on every poll. Our jobs use ``SlurmStateWatcher``
instead: it asks ``scontrol show config`` once whether accounting is enabled,
and keeps ``sacct`` where it is (real clusters behave exactly as with plain
submitit) or reads states from ``squeue`` where it is not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import typing as tp
from collections.abc import Callable, Iterable
from typing import TypeVar

from submitit.slurm.slurm import SlurmInfoWatcher

from pipeline.errors import ClusterError, ConfigError

T = TypeVar("T")

DEFAULT_POLL_S = 10.0  # seconds between two polls of a wait
QUERY_ATTEMPTS = 10  # a wait gives up after so many failed queries in a row
LOST_POLLS = 6  # a wait fails a job that is UNKNOWN to SLURM or PREEMPTED (not requeued) in so many polls in a row
SLURM_JOB_ID = re.compile(r"^\d+(_\d+)?$")  # "123" or "123_4" (array task); debug jobs have none
# SLURM job states (squeue/sacct) of a job that will still run: running, or waiting to.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"})
PENDING_STATES = frozenset(
    {
        "PENDING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "SUSPENDED",  # holds its node, its processes stopped: shown running, "suspended", without an ETA
        "READY",
        "RESV_DEL_HOLD",
    }
)
SUSPENDED = "SUSPENDED"
# States that may pass (sacct lists a job only some time after sbatch; a preempted job may be requeued):
# pending while they last fewer than LOST_POLLS polls of ``wait``, then failed ("lost", or the state).
DOUBTFUL_STATES = frozenset({"UNKNOWN", "PREEMPTED"})
# State of a job that squeue no longer lists: it ended more than MinJobAge seconds ago
# (a finished state for submitit; the job's result pickle, if any, tells its outcome).
PURGED = "PURGED"
LOST = ("UNKNOWN", PURGED)  # SLURM does not know the job (any more): its failure reason is "lost"
# The jobs are named (--jobs=...): the query answers for any user's jobs, not only the caller's.
SQUEUE_COMMAND = ["squeue", "--array", "--noheader", "--states=all", "--format=%i|%T|%N"]
# squeue's answer when none of the asked job ids is known any more (it fails instead of listing nothing).
SQUEUE_UNKNOWN_JOBS = "Invalid job id specified"


def squeue_command(job_ids: tp.Iterable[str]) -> list[str]:
    """The squeue query of ``job_ids`` (array ids, or ``<array>_<task>``): id, state, nodes per array task."""
    return [*SQUEUE_COMMAND, "--jobs=" + ",".join(sorted(set(job_ids)))]


def jobs_named(names: tp.Iterable[str]) -> dict[str, dict[int, str]]:
    """The array tasks SLURM knows under each job name: ``{name: {task index: "<array>_<task>"}}``; a job that
    is not an array (submitit submits a single job so) is task 0 with its plain id: ``{name: {0: "<job>"}}``.

    How a ``submit`` killed between ``sbatch`` and writing the job ids finds
    its jobs again. ``ClusterError`` when squeue fails.
    """
    names = sorted(set(names))
    if not names:
        return {}
    command = ["squeue", "--array", "--noheader", "--states=all", "--format=%F|%K|%j", "--name=" + ",".join(names)]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise ClusterError(
            f"cannot look up SLURM jobs named {', '.join(names)}: squeue failed "
            f"({str(detail).strip()}); is the cluster up?"
        ) from None
    found: dict[str, dict[int, str]] = {}
    for line in output.splitlines():
        array, task, name = (line.split("|", 2) + ["", ""])[:3]
        if name in names and task.strip().isdigit():
            found.setdefault(name, {})[int(task)] = f"{array.strip()}_{task.strip()}"
        elif name in names and task.strip() == "N/A" and array.strip().isdigit():
            found.setdefault(name, {})[0] = array.strip()
    return found


def pending_reasons(job_ids: Iterable[str]) -> dict[str, str]:
    """Why SLURM keeps each of ``job_ids`` waiting: squeue's reason (``Priority``, ``Resources``, ``BeginTime``
    after a requeue, ``ReqNodeNotAvail, UnavailableNodes:...`` while its node is drained or down, ``JobHeld...``);
    ``None`` reasons left out. Best effort: a failed query gives none (the states were read already)."""
    job_ids = sorted(set(job_ids))
    if not job_ids or shutil.which("squeue") is None:
        return {}
    command = ["squeue", "--array", "--noheader", "--format=%i|%r", "--jobs=" + ",".join(job_ids)]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    reasons = {}
    for line in output.splitlines():
        job, _, reason = line.partition("|")
        if job.strip() in job_ids and reason.strip() not in ("", "None", "(null)"):
            reasons[job.strip()] = reason.strip()
    return reasons


def accounting_enabled(scontrol_config: str) -> bool:
    """Whether ``scontrol show config`` output says the cluster stores accounting (so ``sacct`` works)."""
    for line in scontrol_config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() not in ("accounting_storage/none", "(null)")
    return True


def cluster_has_accounting() -> bool:
    """Ask the cluster whether ``sacct`` works; ``True`` when it cannot tell (sacct then reports the problem)."""
    try:
        config = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return True
    return accounting_enabled(config)


class SlurmStateWatcher(SlurmInfoWatcher):
    """Submitit's job-state poller, reading ``squeue`` when the cluster has no accounting.

    Decided once, at the first poll (``cluster_has_accounting``). ``squeue`` lists a job
    from submission until ``MinJobAge`` after its end; a registered job it does not
    list is reported ``PURGED``.
    """

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s)
        self._use_squeue: bool | None = None

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self._use_squeue is None:
            self._use_squeue = not cluster_has_accounting()
        if not self._use_squeue:
            return command
        return squeue_command({job_id.split("_")[0] for job_id in self._registered - self._finished})

    def update(self) -> None:
        """submitit's poll; with squeue, an answer "Invalid job id" (it knows none of the jobs any more) reads
        as "none listed", so the jobs become PURGED (finished) instead of the poll being skipped forever."""
        command = self._make_command()
        if command is None:
            return
        if not self._use_squeue:
            super().update()
            return
        self._num_calls += 1
        try:
            output: str | None = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
        except subprocess.CalledProcessError as err:
            output = "" if SQUEUE_UNKNOWN_JOBS in (err.stderr or "") else None
        except (OSError, subprocess.SubprocessError):
            output = None  # as submitit does: keep the states known so far, ask again at the next poll
        if output is not None:
            self._info_dict.update(self.read_info(output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if not self._use_squeue:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info("JobID|State|NodeList\n" + text)  # squeue rows in sacct's format
        for job_id in self._registered - self._finished - info.keys():
            info[job_id] = {"JobID": job_id, "State": PURGED, "NodeList": ""}
        return info


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


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The SLURM state of each job (``RUNNING``, ``COMPLETED``...; ``PURGED`` when squeue forgot it), one query.

    The query is the one of ``pipeline.cluster.slurm_jobs.SlurmStateWatcher`` (squeue, or sacct
    where the cluster keeps accounting); ``ClusterError`` when it fails.
    """
    job_ids = sorted(set(job_ids))
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise ConfigError(
            f"SLURM jobs {', '.join(job_ids)} are recorded, but SLURM is not installed here: "
            "ask from the cluster's login node"
        )
    watcher = SlurmStateWatcher()
    for job_id in job_ids:
        watcher.register_job(job_id)
    command = watcher._make_command()  # the watcher's own query, run here so that a failure is seen
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    except subprocess.CalledProcessError as err:
        if SQUEUE_UNKNOWN_JOBS not in (err.stderr or ""):
            raise ClusterError(
                f"cannot read the state of SLURM jobs {', '.join(job_ids)}: {command[0]} failed "
                f"({(err.stderr or str(err)).strip()}); is the cluster up?"
            ) from None
        output = ""  # squeue knows none of them any more
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise ClusterError(
            f"cannot read the state of SLURM jobs {', '.join(job_ids)}: {command[0]} failed "
            f"({str(detail).strip()}); is the cluster up?"
        ) from None
    info = watcher.read_info(output)
    return {job_id: info.get(job_id, {}).get("State", "UNKNOWN").split(" ")[0].upper() for job_id in job_ids}
