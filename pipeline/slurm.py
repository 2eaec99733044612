"""Submitit executors built from the ``executor`` section of ``params.yaml``.

``make_executor(params.executor, folder, name)`` gives, by ``executor.kind``:

* ``slurm``: a ``SlurmExecutor`` (``WatchedSlurmExecutor``) submitting with the resources of
  ``executor.slurm`` (partition, GPUs and tasks per node, CPUs per task, memory,
  time limit, array parallelism, extra ``#SBATCH`` options);
* ``debug``: submitit's ``DebugExecutor``, which runs each job in this process
  when its result is asked for (and opens pdb on an exception);
* ``local`` has no executor: the caller runs the work in-process, so asking for
  one raises ``ConfigError`` (callers branch on the kind first).

Job states are asked for by job id (``squeue --jobs``, ``sacct -j``), so they
can be read by any user, not only the one who submitted.

Job states without accounting. submitit asks ``sacct`` for the state of a job
that has not written its result yet; on a cluster without slurmdbd (like the
local test cluster, see ``pipeline.slurm_cluster``) ``sacct`` fails and submitit
logs "Bypassing sacct error" on every poll. Our jobs use ``SlurmStateWatcher``
instead: it asks ``scontrol show config`` once whether accounting is enabled,
and keeps ``sacct`` where it is (real clusters behave exactly as with plain
submitit) or reads states from ``squeue`` where it is not.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import typing as tp
from pathlib import Path

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

from pipeline.config import ExecutorConfig
from pipeline.errors import ClusterError, ConfigError

# State of a job that squeue no longer lists: it ended more than MinJobAge seconds ago
# (a finished state for submitit; the job's result pickle, if any, tells its outcome).
PURGED = "PURGED"
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
        raise ClusterError(f"cannot look up SLURM jobs named {', '.join(names)}: squeue failed "
                           f"({str(detail).strip()}); is the cluster up?") from None
    found: dict[str, dict[int, str]] = {}
    for line in output.splitlines():
        array, task, name = (line.split("|", 2) + ["", ""])[:3]
        if name in names and task.strip().isdigit():
            found.setdefault(name, {})[int(task)] = f"{array.strip()}_{task.strip()}"
        elif name in names and task.strip() == "N/A" and array.strip().isdigit():
            found.setdefault(name, {})[0] = array.strip()
    return found


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
            output: str | None = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                                check=True).stdout
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


class WatchedSlurmJob(submitit.SlurmJob):
    """A submitit SLURM job whose state comes from ``SlurmStateWatcher``."""

    watcher = SlurmStateWatcher(delay_s=600)


class WatchedSlurmExecutor(submitit.SlurmExecutor):
    """submitit's ``SlurmExecutor`` returning ``WatchedSlurmJob``s (job arrays included)."""

    job_class = WatchedSlurmJob

    def _internal_process_submissions(self, delayed_submissions: list[tp.Any]) -> list[submitit.Job[tp.Any]]:
        # submitit builds the jobs of an array as its own SlurmJob class: rebuild them as ours.
        return [
            job if isinstance(job, WatchedSlurmJob)
            else WatchedSlurmJob(self.folder, job.job_id, tuple(range(job.num_tasks)))
            for job in super()._internal_process_submissions(delayed_submissions)
        ]


def make_executor(executor: ExecutorConfig, folder: Path, name: str) -> submitit.Executor:
    """A submitit executor for ``executor.kind`` (``slurm`` or ``debug``) writing jobs and logs to ``folder``."""
    if executor.kind == "debug":
        return submitit.DebugExecutor(folder)
    if executor.kind != "slurm":
        raise ConfigError(
            f"executor.kind={executor.kind!r} runs in-process and has no submitit executor; "
            "allowed here: 'slurm', 'debug'"
        )
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise ConfigError(
            "executor.kind='slurm' but sbatch/srun are not installed here: submit from a SLURM login node, "
            "start the local test cluster (`make cluster-up`), or set executor.kind to local or debug"
        )
    slurm = executor.slurm
    submitter = WatchedSlurmExecutor(folder)
    submitter.update_parameters(
        job_name=name,
        partition=slurm.partition,
        gpus_per_node=slurm.gpus_per_node or None,
        ntasks_per_node=slurm.tasks_per_node,
        cpus_per_task=slurm.cpus_per_task,
        mem=f"{slurm.mem_gb}GB",
        time=slurm.timeout_min,
        array_parallelism=slurm.array_parallelism,
        additional_parameters=dict(slurm.additional),
    )
    return submitter
