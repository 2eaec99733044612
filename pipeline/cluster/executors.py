"""Submitit executors built from the ``executor`` section of ``params.yaml``.

``make_executor(params.executor, folder, name)`` gives, by ``executor.kind``:

* ``slurm``: a ``SlurmExecutor`` (``WatchedSlurmExecutor``) submitting with the resources of
  ``executor.slurm`` (partition, GPUs and tasks per node, CPUs per task, memory,
  time limit, array parallelism, extra ``#SBATCH`` options), whose jobs read
  their states through ``pipeline.cluster.slurm_jobs.SlurmStateWatcher``;
* ``debug``: submitit's ``DebugExecutor``, which runs each job in this process
  when its result is asked for (and opens pdb on an exception);
* ``local`` has no executor: the caller runs the work in-process, so asking for
  one raises ``ConfigError`` (callers branch on the kind first).
"""

from __future__ import annotations

import shutil
import typing as tp
from pathlib import Path

import submitit

from pipeline.cluster.slurm_jobs import SlurmStateWatcher
from pipeline.config import ExecutorConfig
from pipeline.errors import ConfigError


class WatchedSlurmJob(submitit.SlurmJob):
    """A submitit SLURM job whose state comes from ``SlurmStateWatcher``."""

    watcher = SlurmStateWatcher(delay_s=600)


class WatchedSlurmExecutor(submitit.SlurmExecutor):
    """submitit's ``SlurmExecutor`` returning ``WatchedSlurmJob``s (job arrays included)."""

    job_class = WatchedSlurmJob

    def _internal_process_submissions(self, delayed_submissions: list[tp.Any]) -> list[submitit.Job[tp.Any]]:
        # submitit builds the jobs of an array as its own SlurmJob class: rebuild them as ours.
        return [
            job
            if isinstance(job, WatchedSlurmJob)
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
