"""The local single-node SLURM test cluster behind ``make test`` and ``grar cluster up|down|status``.

What runs: Debian's ``munged`` (as user munge, and only when no munge daemon
answers already), ``slurmctld`` and ``slurmd`` (as root: ``SlurmUser=root``),
authenticated by munge with Debian's packaged key ``/etc/munge/munge.key``. The
one node is named after this machine (short hostname), with ``CPUs`` = the cores
this process may use (``nproc``) and ``RealMemory`` = 90 % of ``MemTotal``
(slurmd measures a little less than ``MemTotal`` and drains a node configured
with more memory than it measures). One partition, ``local``, is the default.

Files, all under one folder: ``$GRAR_SLURM_DIR`` (default ``/tmp/grar-slurm``)::

    slurm.conf              written by ``slurm_conf`` at every start
    state/  spool/          slurmctld's StateSaveLocation, slurmd's SlurmdSpoolDir
    log/slurmctld.log       the daemons' logs (read these when the node does not come up)
    log/slurmd.log
    log/<daemon>.out        what a daemon printed while starting
    run/<daemon>.pid        pid files the slurm daemons write
    started/<daemon>.pid    the pids ``up`` started; ``down`` stops exactly these, after
                            checking the process still runs that program (a recycled
                            pid is never signalled)

How clients find the configuration. Debian's ``sbatch``/``squeue``/``sinfo``
(and submitit, which calls them) read ``/etc/slurm/slurm.conf`` unless
``SLURM_CONF`` names another file. ``up`` copies the generated file there, first
line ``MARKER``, when that file is absent or carries the marker (we wrote it), so
on a test machine ``sinfo`` and submitit work without any environment. A
``slurm.conf`` of a real cluster is never touched: ``up`` then says to export
``SLURM_CONF``, and the test fixture (``tests/conftest.py``) sets ``SLURM_CONF``
itself either way.

Accounting: none (no slurmdbd, which would need a database server). ``sacct``
then answers "accounting storage is disabled", so ``pipeline.cluster.executors`` reads job
states through ``squeue``; ``MinJobAge=3600`` keeps finished jobs visible to
``squeue`` for an hour.

One such cluster per machine: the daemons listen on SLURM's default ports
(6817, 6818) and clients read one ``/etc/slurm/slurm.conf``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ClusterError
from pipeline.io import write_text_atomic

ROOT_ENV = "GRAR_SLURM_DIR"
DEFAULT_ROOT = Path("/tmp/grar-slurm")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# Written by `grar cluster up` (pipeline/cluster/local_test_cluster.py): the local SLURM test cluster."
PARTITION = "local"
# sinfo states of a node that accepts jobs (idle, or busy with some).
USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
PROGRAMS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "srun")
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Daemon:
    """A program ``up`` may start: ``argv`` forks into the background, and the daemon writes its pid to ``pid_file``.

    ``name`` is the process name the running daemon has (``/proc/PID/stat``),
    ``log`` the file to read when it fails, ``user`` the account to run it as
    (``None``: ours).
    """

    name: str
    argv: tuple[str, ...]
    pid_file: Path
    log: Path
    user: str | None = None


MUNGED = Daemon("munged", ("munged",), Path("/run/munge/munged.pid"), Path("/var/log/munge/munged.log"), user="munge")


def cluster_root() -> Path:
    """The folder holding the cluster's configuration, state, logs and pid records."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).absolute()


def short_hostname() -> str:
    """This machine's name as slurmd sees it (the short host name)."""
    return socket.gethostname().split(".")[0]


def real_memory_mb(meminfo: str) -> int:
    """``RealMemory`` for slurm.conf: 90 % of ``MemTotal`` in MiB, from the text of ``/proc/meminfo``."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    raise ClusterError("/proc/meminfo has no MemTotal line")


def slurm_conf(host: str, cpus: int, real_memory_mb: int, root: Path) -> str:
    """The slurm.conf of a one-node cluster: node ``host`` on loopback, state and logs under ``root``."""
    return "\n".join(
        [
            MARKER,
            "ClusterName=grar-local",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/run/slurmctld.pid",
            f"SlurmdPidFile={root}/run/slurmd.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log",
            f"SlurmdLogFile={root}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "MinJobAge=3600",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def slurm_daemons(root: Path) -> tuple[Daemon, Daemon]:
    """slurmctld and slurmd, reading ``root/slurm.conf``, in start order."""
    conf = str(root / "slurm.conf")
    return tuple(
        Daemon(name, (name, "-f", conf), root / "run" / f"{name}.pid", root / "log" / f"{name}.log")
        for name in ("slurmctld", "slurmd")
    )


# --- processes -------------------------------------------------------------------------------


def process_name(pid: int | None) -> str | None:
    """Name of live process ``pid``; ``None`` when it is gone or a zombie."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    end = stat.rindex(")")
    return None if stat[end + 2] in "ZX" else stat[stat.index("(") + 1 : end]


def read_pid(path: Path) -> int | None:
    """The pid written in ``path``, or ``None`` when the file is missing or holds no number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def started_record(daemon: Daemon, root: Path) -> Path:
    """Where ``up`` records the pid of a daemon it started."""
    return root / "started" / f"{daemon.name}.pid"


def running_pid(daemon: Daemon, root: Path) -> int | None:
    """The recorded pid of ``daemon`` when that process still runs it, else ``None``."""
    pid = read_pid(started_record(daemon, root))
    return pid if process_name(pid) == daemon.name else None


def start_daemon(daemon: Daemon, root: Path, timeout_s: float = TIMEOUT_S) -> int:
    """Start ``daemon`` unless it runs (by record); wait for its pid file; record and return the pid."""
    pid = running_pid(daemon, root)
    if pid is not None:
        return pid
    if daemon.pid_file.exists() and process_name(read_pid(daemon.pid_file)) is None:
        daemon.pid_file.unlink()  # stale: left by a daemon that died
    out = root / "log" / f"{daemon.name}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    as_user = {"user": daemon.user, "group": daemon.user, "extra_groups": []} if daemon.user else {}
    with out.open("ab") as stream:
        code = subprocess.run(
            daemon.argv,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
            **as_user,
        ).returncode
    if code != 0:
        raise ClusterError(f"{daemon.name} exited with status {code} while starting; see {out} and {daemon.log}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = read_pid(daemon.pid_file)
        if process_name(pid) == daemon.name:
            write_text_atomic(started_record(daemon, root), f"{pid}\n")
            return pid
        time.sleep(0.1)
    raise ClusterError(f"{daemon.name} did not stay up (no live pid in {daemon.pid_file}); see {daemon.log} and {out}")


def stop_daemon(daemon: Daemon, root: Path, timeout_s: float = 20.0) -> int | None:
    """Stop ``daemon`` if ``up`` started it and it still runs; return its pid, or ``None`` if nothing was stopped."""
    pid = running_pid(daemon, root)
    started_record(daemon, root).unlink(missing_ok=True)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_name(pid) == daemon.name:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)
    return pid


# --- the cluster --------------------------------------------------------------------------------


def munge_answers() -> bool:
    """Whether a munge daemon encodes and decodes a credential (ours or the system's)."""
    try:
        credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
        subprocess.run(["unmunge"], input=credential, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def node_state(root: Path) -> str:
    """sinfo's state of this machine's node in the cluster configured under ``root`` (or why there is none)."""
    if not (root / "slurm.conf").exists():
        return f"not configured ({root / 'slurm.conf'} missing)"
    try:
        result = subprocess.run(
            ["sinfo", "--noheader", "--Node", f"--nodes={short_hostname()}", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "SLURM_CONF": str(root / "slurm.conf")},
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "sinfo printed nothing"


def wait_for_node(root: Path, timeout_s: float = TIMEOUT_S) -> str:
    """Wait until the node accepts jobs; return its state, or raise naming the daemons' logs."""
    deadline = time.monotonic() + timeout_s
    while (state := node_state(root)) not in USABLE_STATES:
        if time.monotonic() > deadline:
            raise ClusterError(
                f"node {short_hostname()} did not come up within {timeout_s:.0f} s (sinfo: {state}); "
                f"see {root}/log/slurmctld.log and {root}/log/slurmd.log"
            )
        time.sleep(0.5)
    return state


def install_system_conf(text: str) -> bool:
    """Write ``text`` to /etc/slurm/slurm.conf when that file is absent or ours; ``False`` when it is foreign."""
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text(encoding="utf-8").startswith(MARKER):
        return False
    if not SYSTEM_CONF.exists() or SYSTEM_CONF.read_text(encoding="utf-8") != text:
        write_text_atomic(SYSTEM_CONF, text)
    return True


def require_root(action: str) -> None:
    """Raise a ``ClusterError`` unless we are root (the daemons run as root and as munge)."""
    if os.geteuid() != 0:
        raise ClusterError(f"`grar cluster {action}` must run as root (SlurmUser=root; munged runs as user munge)")


def secure_root(root: Path) -> None:
    """Make ``root`` a folder only its owner reads (0700), refusing one of another user or a symbolic link.

    The folder holds the cluster's configuration and state; in a shared ``/tmp``
    another user could plant it first, to feed ``slurmctld`` (run as root) a
    configuration of theirs.
    """
    if root.is_symlink():
        raise ClusterError(f"{root}: is a symbolic link; remove it, or set {ROOT_ENV} to a folder of yours")
    if not root.exists():
        root.mkdir(mode=0o700, parents=True)
    info = root.stat()
    if info.st_uid != os.getuid():
        raise ClusterError(
            f"{root}: owned by uid {info.st_uid}, not by you (uid {os.getuid()}); remove it, "
            f"or set {ROOT_ENV} to a folder of yours"
        )
    root.chmod(0o700)


def check_can_start() -> None:
    """Raise a ``ClusterError`` saying what is missing to start the cluster here."""
    require_root("up")
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if missing:
        raise ClusterError(
            f"not installed: {', '.join(missing)}; run `make slurm-packages` "
            "(apt-get install munge slurmctld slurmd slurm-client)"
        )


def start_munge(root: Path, timeout_s: float) -> None:
    """Start munged with Debian's defaults (socket and pid in /run/munge) unless a munge daemon answers."""
    if munge_answers():
        return
    MUNGED.pid_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGED.pid_file.parent, MUNGED.user, MUNGED.user)
    MUNGED.pid_file.parent.chmod(0o755)
    start_daemon(MUNGED, root, timeout_s)
    deadline = time.monotonic() + timeout_s
    while not munge_answers():
        if time.monotonic() > deadline:
            raise ClusterError(f"munged runs but does not answer; see {MUNGED.log}")
        time.sleep(0.2)


def up(root: Path, timeout_s: float = TIMEOUT_S) -> str:
    """Start the cluster unless it runs (idempotent); wait until its node accepts jobs; return a report line."""
    daemons = slurm_daemons(root)
    if munge_answers() and all(running_pid(daemon, root) for daemon in daemons):
        return f"SLURM test cluster already running: node {short_hostname()} {wait_for_node(root, timeout_s)}"
    check_can_start()
    secure_root(root)
    for folder in ("state", "spool", "log", "run", "started"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    memory = real_memory_mb(Path("/proc/meminfo").read_text())
    text = slurm_conf(short_hostname(), cpus, memory, root)
    write_text_atomic(root / "slurm.conf", text)
    clients = (
        f"clients read {SYSTEM_CONF}"
        if install_system_conf(text)
        else f"{SYSTEM_CONF} belongs to another cluster: export SLURM_CONF={root / 'slurm.conf'}"
    )
    start_munge(root, timeout_s)
    for daemon in daemons:
        start_daemon(daemon, root, timeout_s)
    state = wait_for_node(root, timeout_s)
    return (
        f"SLURM test cluster up: node {short_hostname()} {state} ({cpus} CPUs, {memory} MiB), "
        f"partition {PARTITION}, state in {root}; {clients}"
    )


def down(root: Path) -> list[str]:
    """Stop the daemons ``up`` started (by recorded pid), last started first; return one line per daemon stopped."""
    require_root("down")
    stopped = []
    for daemon in (*reversed(slurm_daemons(root)), MUNGED):
        pid = stop_daemon(daemon, root)
        if pid is not None:
            stopped.append(f"stopped {daemon.name} (pid {pid})")
    return stopped or [f"nothing to stop: no daemon started by `grar cluster up` runs (records in {root}/started)"]


def status(root: Path) -> tuple[bool, list[str]]:
    """Whether the node accepts jobs, and one line per daemon, the node, the configuration and the logs."""
    lines = []
    for daemon in (MUNGED, *slurm_daemons(root)):
        pid = running_pid(daemon, root)
        lines.append(f"{daemon.name:10s} " + (f"running, pid {pid}" if pid else "not running (none started by grar)"))
    lines.append(f"{'munge':10s} " + ("answers" if munge_answers() else "does not answer"))
    state = node_state(root)
    lines.append(f"{'node':10s} {short_hostname()}: {state}")
    lines.append(f"{'config':10s} {root / 'slurm.conf'}")
    lines.append(f"{'logs':10s} {root / 'log'}")
    return state in USABLE_STATES, lines
