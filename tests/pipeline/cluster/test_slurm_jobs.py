"""Executors from the ``executor`` section (``executors``), and job states read without accounting (``slurm_jobs``;
no cluster needed)."""

from __future__ import annotations

import operator
import os
import shutil
import subprocess

import pytest
import submitit

from pipeline.cluster import slurm_jobs
from pipeline.cluster.executors import WatchedSlurmExecutor, make_executor
from pipeline.cluster.slurm_jobs import PURGED, SlurmStateWatcher, accounting_enabled
from pipeline.config import ExecutorConfig, SlurmConfig
from pipeline.errors import ConfigError

SLURM = SlurmConfig(
    partition="gpu",
    gpus_per_node=2,
    tasks_per_node=2,
    cpus_per_task=5,
    mem_gb=16,
    timeout_min=90,
    array_parallelism=3,
    additional={"account": "proj", "qos": "high"},
)


def executor_config(kind: str, slurm: SlurmConfig = SLURM) -> ExecutorConfig:
    return ExecutorConfig(kind=kind, log_dir="runs/slurm-logs", slurm=slurm)


@pytest.fixture
def slurm_installed(monkeypatch):
    """Pretend sbatch/srun are on PATH (submitit checks for srun), so no cluster is needed."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")


def test_slurm_executor_takes_every_resource_from_the_config(slurm_installed, tmp_path):
    executor = make_executor(executor_config("slurm"), tmp_path, "cell-3")
    assert isinstance(executor, WatchedSlurmExecutor)
    assert executor.parameters == {
        "job_name": "cell-3",
        "partition": "gpu",
        "gpus_per_node": 2,
        "ntasks_per_node": 2,
        "cpus_per_task": 5,
        "mem": "16GB",
        "time": 90,
        "array_parallelism": 3,
        "additional_parameters": {"account": "proj", "qos": "high"},
    }
    sbatch = executor._make_submission_file_text("true", "uid").splitlines()
    for line in (
        "--job-name=cell-3",
        "--partition=gpu",
        "--gpus-per-node=2",
        "--ntasks-per-node=2",
        "--cpus-per-task=5",
        "--mem=16GB",
        "--time=90",
        "--account=proj",
        "--qos=high",
    ):
        assert f"#SBATCH {line}" in sbatch


def test_default_partition_and_no_gpus_leave_the_flags_out(slurm_installed, tmp_path):
    slurm = SLURM.model_copy(update={"partition": None, "gpus_per_node": 0, "additional": {}})
    sbatch = make_executor(executor_config("slurm", slurm), tmp_path, "x")._make_submission_file_text("true", "u")
    assert "--partition" not in sbatch and "--gpus-per-node" not in sbatch and "--account" not in sbatch


def test_slurm_executor_without_slurm_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"executor.kind='slurm' but sbatch/srun are not installed.*make cluster-up"):
        make_executor(executor_config("slurm"), tmp_path, "x")


def test_local_kind_has_no_executor(tmp_path):
    with pytest.raises(ConfigError, match=r"executor.kind='local' runs in-process.*allowed here: 'slurm', 'debug'"):
        make_executor(executor_config("local"), tmp_path, "x")


def test_debug_executor_runs_the_job_in_this_process(tmp_path):
    executor = make_executor(executor_config("debug"), tmp_path, "x")
    assert isinstance(executor, submitit.DebugExecutor)
    assert executor.submit(operator.mul, 6, 7).result() == 42


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AccountingStorageType   = accounting_storage/none", False),
        ("AccountingStorageType   = accounting_storage/slurmdbd", True),
        ("AccountingStorageType = (null)", False),
        ("ClusterName = x", True),  # cannot tell: keep sacct
    ],
)
def test_accounting_is_read_from_scontrol_show_config(line, expected):
    config = f"Configuration data as of 2026-01-01\nAccountingStorageHost = localhost\n{line}\n"
    assert accounting_enabled(config) is expected


def test_squeue_rows_become_states_and_unlisted_jobs_are_purged():
    watcher = SlurmStateWatcher()
    watcher._use_squeue = True
    for job_id in ("5_0", "5_1", "5_2", "7"):
        watcher.register_job(job_id)
    info = watcher.read_info(b"5_0|COMPLETED|vm\n5_1|RUNNING|vm\n9|PENDING|\n")
    assert {job_id: row["State"] for job_id, row in info.items()} == {
        "5_0": "COMPLETED",
        "5_1": "RUNNING",
        "9": "PENDING",
        "5_2": PURGED,
        "7": PURGED,
    }
    watcher._info_dict.update(info)
    assert [watcher.is_done(j, mode="cache") for j in ("5_0", "5_1", "5_2")] == [True, False, True]


def test_without_accounting_the_watcher_asks_squeue_for_its_jobs_by_id():
    watcher = SlurmStateWatcher()
    watcher._use_squeue = True
    for job_id in ("5_0", "5_1", "7"):
        watcher.register_job(job_id)
    assert watcher._make_command() == [
        "squeue",
        "--array",
        "--noheader",
        "--states=all",
        "--format=%i|%T|%N",
        "--jobs=5,7",
    ]


def test_jobs_squeue_knows_none_of_any_more_are_purged_and_finished(tmp_path, monkeypatch):
    (tmp_path / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
    (tmp_path / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    watcher = SlurmStateWatcher()
    watcher._use_squeue = True
    for job_id in ("5_0", "7"):
        watcher.register_job(job_id)
    watcher.update()
    assert {job_id: watcher.get_state(job_id) for job_id in ("5_0", "7")} == {"5_0": PURGED, "7": PURGED}
    assert watcher._finished == {"5_0", "7"}  # a wait on them ends (submitit then reads their result files)


def test_with_accounting_the_watcher_reads_sacct_as_submitit_does():
    watcher = SlurmStateWatcher()
    watcher._use_squeue = False
    watcher.register_job("12")
    assert watcher._make_command() == ["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", "12"]
    info = watcher.read_info("JobID|State|NodeList\n12|FAILED|vm\n12.batch|FAILED|vm\n")
    assert info == {"12": {"JobID": "12", "State": "FAILED", "NodeList": "vm"}}


def test_jobs_named_finds_array_tasks_and_single_jobs_as_task_0(monkeypatch):
    rows = "7|0|grar-g-1\n7|1|grar-g-1\n9|N/A|grar-bench-2\n11|N/A|someone-else\n"
    seen = []

    def squeue(command, **kwargs):
        seen.append(command[-1])
        return subprocess.CompletedProcess(command, 0, stdout=rows, stderr="")

    monkeypatch.setattr(subprocess, "run", squeue)
    assert slurm_jobs.jobs_named(["grar-g-1", "grar-bench-2"]) == {
        "grar-g-1": {0: "7_0", 1: "7_1"},
        "grar-bench-2": {0: "9"},
    }
    assert seen == ["--name=grar-bench-2,grar-g-1"]
