"""The local SLURM test cluster: its slurm.conf, its daemon bookkeeping, and real jobs on it.

Tests marked ``slurm`` submit to the running cluster (``make cluster-up``); the
others need nothing but a shell.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cloudpickle
import pytest
import submitit

from pipeline.cli.main import main
from pipeline.cluster import local_test_cluster as cluster
from pipeline.cluster.executors import make_executor
from pipeline.config import ExecutorConfig, SlurmConfig
from pipeline.errors import ClusterError


def affine(x: int, y: int) -> int:
    """A job: ``10 x + y``, distinct for every element of the test arrays."""
    return 10 * x + y


def divide(a: float, b: float) -> float:
    """A job that raises ``ZeroDivisionError`` when ``b`` is 0."""
    return a / b


# --- slurm.conf ---------------------------------------------------------------------------------


def test_slurm_conf_is_one_node_one_partition_under_root():
    text = cluster.slurm_conf("node7", cpus=3, real_memory_mb=1234, root=Path("/x/grar"))
    assert text.splitlines() == [
        cluster.MARKER,
        "ClusterName=grar-local",
        "SlurmctldHost=node7(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "StateSaveLocation=/x/grar/state",
        "SlurmdSpoolDir=/x/grar/spool",
        "SlurmctldPidFile=/x/grar/run/slurmctld.pid",
        "SlurmdPidFile=/x/grar/run/slurmd.pid",
        "SlurmctldLogFile=/x/grar/log/slurmctld.log",
        "SlurmdLogFile=/x/grar/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        "MinJobAge=3600",
        "NodeName=node7 NodeAddr=127.0.0.1 CPUs=3 RealMemory=1234 State=UNKNOWN",
        "PartitionName=local Nodes=node7 Default=YES MaxTime=INFINITE State=UP",
    ]
    assert text.endswith("State=UP\n")


def test_real_memory_is_ninety_percent_of_memtotal_in_mib():
    meminfo = "MemTotal:       24684096 kB\nMemFree:        20893644 kB\n"
    assert cluster.real_memory_mb(meminfo) == 21694  # 24684096 // 1024 = 24105; 24105 * 9 // 10
    with pytest.raises(ClusterError, match="MemTotal"):
        cluster.real_memory_mb("MemFree: 1 kB\n")


def test_slurm_daemons_read_the_generated_conf():
    ctld, slurmd = cluster.slurm_daemons(Path("/x/grar"))
    assert ctld.argv == ("slurmctld", "-f", "/x/grar/slurm.conf")
    assert slurmd.argv == ("slurmd", "-f", "/x/grar/slurm.conf")
    assert (ctld.pid_file, slurmd.log) == (Path("/x/grar/run/slurmctld.pid"), Path("/x/grar/log/slurmd.log"))


# --- daemon bookkeeping (real processes: `sleep` stands in for a daemon) --------------------------


def fake_daemon(tmp_path: Path) -> cluster.Daemon:
    """A daemon that forks ``sleep 300`` into the background, writes its pid, and counts its starts."""
    script = f"echo start >> {tmp_path}/starts; sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {tmp_path}/sleep.pid"
    return cluster.Daemon("sleep", ("sh", "-c", script), tmp_path / "sleep.pid", tmp_path / "sleep.log")


def test_start_is_idempotent_and_stop_ends_only_the_recorded_daemon(tmp_path):
    daemon = fake_daemon(tmp_path)
    bystander = subprocess.Popen(["sleep", "300"])  # same program, not started by us
    try:
        pid = cluster.start_daemon(daemon, tmp_path, timeout_s=10)
        assert cluster.process_name(pid) == "sleep"
        assert cluster.start_daemon(daemon, tmp_path, timeout_s=10) == pid  # second start: no-op
        assert (tmp_path / "starts").read_text() == "start\n"
        assert cluster.running_pid(daemon, tmp_path) == pid

        assert cluster.stop_daemon(daemon, tmp_path, timeout_s=10) == pid
        assert cluster.process_name(pid) is None
        assert cluster.process_name(bystander.pid) == "sleep"
        assert cluster.stop_daemon(daemon, tmp_path) is None  # nothing recorded any more
    finally:
        bystander.kill()
        bystander.wait()


def test_a_recycled_pid_is_never_signalled(tmp_path):
    daemon = fake_daemon(tmp_path)
    record = cluster.started_record(daemon, tmp_path)
    record.parent.mkdir()
    record.write_text(f"{os.getpid()}\n")  # now a python process (this one), not `sleep`
    assert cluster.running_pid(daemon, tmp_path) is None
    assert cluster.stop_daemon(daemon, tmp_path) is None
    assert not record.exists()


def test_a_daemon_that_fails_to_start_names_its_logs(tmp_path):
    daemon = cluster.Daemon("nope", ("sh", "-c", "exit 3"), tmp_path / "nope.pid", tmp_path / "nope.log")
    with pytest.raises(ClusterError, match=r"nope exited with status 3 .*nope\.out and .*nope\.log"):
        cluster.start_daemon(daemon, tmp_path, timeout_s=10)


# --- the running cluster ------------------------------------------------------------------------


@pytest.fixture
def jobs_by_value():
    """Pickle this module's job functions by value: a job's Python cannot import a test module."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def slurm_executor(folder: Path, **resources) -> submitit.Executor:
    """Our executor for the local cluster: 1 CPU and 1 GB per job, 5 minutes."""
    slurm = SlurmConfig(
        partition=None,
        gpus_per_node=0,
        tasks_per_node=1,
        cpus_per_task=1,
        mem_gb=1,
        timeout_min=5,
        array_parallelism=4,
        additional={},
        **resources,
    )
    return make_executor(ExecutorConfig(kind="slurm", log_dir=str(folder), slurm=slurm), folder, "grar-test")


def final_state(job: submitit.Job, timeout_s: float = 30.0) -> str:
    """The job's SLURM state once it has left the running states (polled through our watcher)."""
    deadline = time.monotonic() + timeout_s
    while (state := job.get_info(mode="force").get("State", "UNKNOWN")) in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job.job_id} still {state} after {timeout_s} s"
        time.sleep(0.5)
    return state


@pytest.mark.slurm
def test_up_on_a_running_cluster_is_a_no_op(slurm_cluster, capsys):
    root = slurm_cluster.parent
    before = sorted(p.read_text() for p in (root / "started").glob("*.pid"))
    assert main(["cluster", "up"]) == 0
    assert "already running" in capsys.readouterr().out
    assert sorted(p.read_text() for p in (root / "started").glob("*.pid")) == before
    assert main(["cluster", "status"]) == 0


@pytest.mark.slurm
def test_job_array_returns_results_without_warnings(slurm_cluster, jobs_by_value, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="submitit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jobs = slurm_executor(tmp_path).map_array(affine, [1, 2, 3, 4], [5, 6, 7, 8])
        assert [job.result() for job in jobs] == [15, 26, 37, 48]
        assert [final_state(job) for job in jobs] == ["COMPLETED"] * 4
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{k}" for k in range(4)]
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert jobs[0].watcher.num_calls > 0  # job states were read (through squeue here), quietly


@pytest.mark.slurm
def test_a_failing_job_is_reported_while_the_others_finish(slurm_cluster, jobs_by_value, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="submitit")
    jobs = slurm_executor(tmp_path).map_array(divide, [6.0, 5.0, 4.0], [2.0, 0.0, 1.0])
    assert [jobs[0].result(), jobs[2].result()] == [3.0, 4.0]
    error = jobs[1].exception()
    assert isinstance(error, submitit.core.utils.FailedJobError)
    assert "ZeroDivisionError" in str(error) and str(jobs[1].paths.stderr) in str(error)
    assert "ZeroDivisionError" in jobs[1].paths.stderr.read_text()
    with pytest.raises(submitit.core.utils.FailedJobError, match="ZeroDivisionError"):
        jobs[1].result()
    assert [final_state(job) for job in jobs] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert [r.getMessage() for r in caplog.records] == []


def test_state_folder_is_private_and_never_another_users(tmp_path):
    from pipeline.cluster.local_test_cluster import secure_root
    from pipeline.errors import ClusterError

    root = tmp_path / "cluster"
    secure_root(root)
    assert root.stat().st_mode & 0o777 == 0o700
    root.chmod(0o755)
    secure_root(root)  # ours: made private again
    assert root.stat().st_mode & 0o777 == 0o700
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, 4321, 4321)
    with pytest.raises(ClusterError, match=rf"{planted}: owned by uid 4321, not by you"):
        secure_root(planted)
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(ClusterError, match=rf"{link}: is a symbolic link"):
        secure_root(link)
