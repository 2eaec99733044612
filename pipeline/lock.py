"""Locks that hold on the network file systems of clusters (NFS, Lustre) and die with their holder.

One trainer per run folder (``run_lock``: ``pipeline.training.run.run_cell`` and the
grid's ``CellJob`` hold it over train + evaluate), and one writer of the grid
indexes at a time (``pipeline.cluster.grids``). ``flock``/``fcntl`` locks are not used:
some NFS and Lustre mounts ignore them or keep them after the client dies.

Mechanism. A lock named ``PREFIX`` is a series of *generation* files
``PREFIX.0``, ``PREFIX.1``, ...; the highest existing generation is the lock.
Each holds JSON ``{host, pidns, pid, job, since, token}`` (``Holder``) and is
created complete, by writing a private file and ``os.link``-ing it to its
name: ``link`` fails if the name exists (atomic on NFSv3+ and Lustre, like
``O_CREAT | O_EXCL``, and a reader never sees a half-written holder). While
held, a heartbeat thread touches the file every ``HEARTBEAT_S`` seconds.

The highest generation is *stale* (``stale``) when its holder runs on this
host (same host name and PID namespace) and its pid is dead, when it was held
by an earlier start of this very SLURM job (a requeued job keeps its id), or
when its heartbeat (the file's mtime) is older than ``STALE_S``. Taking over a
stale lock creates the *next* generation with the same exclusive ``link``, so
of two processes that find the same stale lock exactly one wins, and nobody
ever deletes a lock another process may hold; the winner then checks that no
higher generation appeared meanwhile, and removes the older files.

A holder frozen (SIGSTOP, a hung mount) for longer than ``STALE_S`` loses its
lock: its heartbeat thread notices and sets ``FileLock.lost``, and
``FileLock.check`` (``check_held`` / ``check_run_lock`` for the lock this
thread holds) raises ``LockLost`` once the flag is set or the files show another
holder. The trainer checks before every write (each log row, each checkpoint,
the config, the scores) and at every iteration, so a woken trainer stops
without writing anything into a run another process took over (and perhaps
finished); what remains is the instant between a check and the rename that
follows it.

Limits: the clocks of the hosts sharing a folder (NFS sets mtimes from the
server's clock) must agree to well within ``STALE_S``; a pid reused on the
same host keeps a dead holder's lock until its heartbeat times out; in a job
of several tasks only rank 0 takes a run's lock (``locked_run``), so when it
finds the run locked the other tasks wait at the rendezvous until the job's
time limit.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import GrarError

HEARTBEAT_S = 10.0  # the holder touches its lock file this often
STALE_S = 60.0  # a heartbeat older than this (6 heartbeats) makes the lock stale
POLL_S = 2.0  # waiting for a lock: seconds between two looks
RUN_LOCK = "grar.lock"  # a run folder's lock: <run_dir>/grar.lock.<generation>

F = TypeVar("F", bound=Callable[..., Any])


class Locked(GrarError):
    """The lock is held by a live process elsewhere; the message names it."""

    def __init__(self, what: str, holder: Holder) -> None:
        super().__init__(f"{what}: running elsewhere ({holder.describe()})")
        self.holder = holder


class LockLost(GrarError):
    """This process held the lock and lost it (frozen past ``STALE_S``, taken over): it must stop writing."""

    def __init__(self, what: str, path: Path, now: Holder | None) -> None:
        taken = f"; now held by {now.describe()}" if now is not None else ""
        super().__init__(
            f"{what}: lost the lock {path} (no heartbeat for over {STALE_S:.0f} s: this process was frozen or cut "
            f"off){taken}; stopped without writing anything more there"
        )


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host, PID namespace, pid, SLURM job (or ``""``), start time (epoch s), a unique token."""

    host: str
    pidns: str
    pid: int
    job: str
    since: float
    token: str

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.since, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.host}, pid {self.pid}" + (f", SLURM job {self.job}" if self.job else "") + f", since {since}"

    @staticmethod
    def me() -> Holder:
        return Holder(socket.gethostname(), pid_namespace(), os.getpid(), slurm_job(), time.time(), uuid.uuid4().hex)


def pid_namespace() -> str:
    """This process's PID namespace (``/proc/self/ns/pid``), so pids are compared only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def slurm_job() -> str:
    """This process's SLURM job (``<array>_<task>`` for an array task), ``""`` outside one."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# --- the generation files -------------------------------------------------------------------------


def generations(prefix: Path) -> list[int]:
    """The existing generations of the lock ``prefix``, ascending."""
    pattern = re.compile(re.escape(prefix.name) + r"\.(\d+)$")
    try:
        names = os.listdir(prefix.parent)
    except FileNotFoundError:
        return []
    return sorted(int(match.group(1)) for name in names if (match := pattern.match(name)))


def read_holder(path: Path) -> tuple[Holder, float] | None:
    """The holder written in lock file ``path`` and the file's mtime; ``None`` when it is gone."""
    try:
        mtime = path.stat().st_mtime
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Holder(**raw), mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        # Written complete by link(): unreadable means someone else's file; never trust or delete it silently.
        raise GrarError(
            f"{path}: not a grar lock file ({err}); remove it if no grar process uses this folder"
        ) from None


def stale(holder: Holder, mtime: float, now: float | None = None) -> bool:
    """Whether a lock held by ``holder`` (heartbeat ``mtime``) may be taken over (see the module docstring)."""
    me = Holder.me()
    if holder.host == me.host and holder.pidns == me.pidns and holder.pid != me.pid and not pid_alive(holder.pid):
        return True
    if holder.job and holder.job == me.job and (holder.host, holder.pid) != (me.host, me.pid):
        return True  # an earlier start of this (requeued) SLURM job
    return (time.time() if now is None else now) - mtime > STALE_S


def current(prefix: Path) -> tuple[Path, Holder, float] | None:
    """The highest generation of lock ``prefix``: its file, holder and heartbeat; ``None`` when unlocked."""
    for generation in reversed(generations(prefix)):
        path = prefix.with_name(f"{prefix.name}.{generation}")
        found = read_holder(path)
        if found is not None:
            return path, *found
    return None


def live_holder(prefix: Path) -> Holder | None:
    """The holder of lock ``prefix`` when it is held and not stale (what ``status`` shows as running)."""
    found = current(prefix)
    if found is None or stale(found[1], found[2]):
        return None
    return found[1]


# --- taking and holding ---------------------------------------------------------------------------


def try_acquire(prefix: Path, holder: Holder) -> Path | Holder:
    """One attempt: the lock file now held for ``holder``, or the live ``Holder`` that keeps it."""
    while True:
        found = current(prefix)
        if found is not None and not stale(found[1], found[2]):
            return found[1]
        generation = 0 if found is None else int(found[0].name.rsplit(".", 1)[1]) + 1
        path = prefix.with_name(f"{prefix.name}.{generation}")
        if not create_exclusive(path, json.dumps(asdict(holder)) + "\n"):
            continue  # someone else took this generation first: look again
        if generations(prefix)[-1:] != [generation]:  # a higher one appeared (we raced a cleanup): not ours
            path.unlink(missing_ok=True)
            continue
        for older in generations(prefix):
            if older < generation:
                prefix.with_name(f"{prefix.name}.{older}").unlink(missing_ok=True)
        return path


def create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text``, complete, only if it does not exist (write + ``os.link``): ``False``
    when it exists. Atomic on NFSv3+ and Lustre too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(private, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(private, path)
        except FileExistsError:
            return False
        except OSError as err:
            # NFS can lose the reply of a link that succeeded: the private file then has two links.
            if private.stat().st_nlink != 2:
                raise GrarError(f"{path}: cannot create the lock file ({err.strerror or err})") from None
        return True
    finally:
        private.unlink(missing_ok=True)


class FileLock:
    """A held lock (``acquire``): a heartbeat thread keeps it fresh until ``release``; ``check`` before writing."""

    def __init__(self, prefix: Path, path: Path, holder: Holder, what: str = "") -> None:
        self.prefix, self.path, self.holder = prefix, path, holder
        self.what = what or str(prefix.parent)
        self.lost = False  # set by the heartbeat thread (or ``check``) once the lock is no longer ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.held():
                if not self.lost:
                    print(
                        f"grar: warning: lost the lock {self.path} (frozen for longer than {STALE_S:.0f} s?); "
                        "stopping before the next write",
                        file=sys.stderr,
                        flush=True,
                    )
                self.lost = True
                continue
            with contextlib.suppress(OSError):
                os.utime(self.path)  # mtime = now (the server's clock on NFS)

    def held(self) -> bool:
        """Whether the lock is still ours: our file, with our token, is the highest generation."""
        if generations(self.prefix)[-1:] != [int(self.path.name.rsplit(".", 1)[1])]:
            return False  # taken over (we were frozen past STALE_S), even if our file is still there
        with contextlib.suppress(GrarError):
            found = read_holder(self.path)
            return found is not None and found[0].token == self.holder.token
        return False

    def check(self) -> None:
        """``LockLost`` unless the lock is still ours: the heartbeat's flag first, then the files themselves
        (a takeover since the last heartbeat)."""
        if not self.lost and self.held():
            return
        self.lost = True
        try:
            found = current(self.prefix)
        except GrarError:
            found = None
        now = found[1] if found is not None and found[1].token != self.holder.token else None
        raise LockLost(self.what, self.path, now)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (when it is still ours)."""
        self._stop.set()
        self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)


_held: dict[tuple[Path, int], FileLock] = {}  # the locks each thread of this process holds: taking one again nests
_held_guard = threading.Lock()


@contextlib.contextmanager
def acquire(
    prefix: Path, what: str, wait: bool = False, poll_s: float = POLL_S, timeout_s: float | None = None
) -> Iterator[FileLock]:
    """Hold lock ``prefix`` for the block; ``Locked`` naming its holder when a live process has it.

    ``wait``: poll until it is free (its holder ends, or its heartbeat stops for
    ``STALE_S``) instead of raising, for at most ``timeout_s`` seconds when
    given. Nested in a block of this process holding the same lock (in the
    same thread), it holds it already; another thread of this process is
    refused (or waits) like any other process.
    """
    prefix = Path(os.path.abspath(prefix))
    key = (prefix, threading.get_ident())
    with _held_guard:
        nested = _held.get(key)
    if nested is not None and nested.held():
        yield nested
        return
    me = Holder.me()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while isinstance(taken := try_acquire(prefix, me), Holder):
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            raise Locked(what, taken)
        time.sleep(poll_s)
    lock = FileLock(prefix, taken, me, what)
    with _held_guard:
        _held[key] = lock
    try:
        yield lock
    finally:
        with _held_guard:
            _held.pop(key, None)
        lock.release()


def check_held(prefix: str | os.PathLike) -> None:
    """``LockLost`` when this thread holds lock ``prefix`` (``acquire``) and lost it; nothing when it holds none
    (a caller that took no lock: a test, a rank other than 0)."""
    with _held_guard:
        lock = _held.get((Path(os.path.abspath(prefix)), threading.get_ident()))
    if lock is not None:
        lock.check()


# --- run folders ----------------------------------------------------------------------------------


def run_lock(run_dir: str | os.PathLike, wait: bool = False) -> contextlib.AbstractContextManager[FileLock]:
    """The lock of a run folder: one process trains it at a time (``Locked``: "running elsewhere")."""
    return acquire(Path(run_dir) / RUN_LOCK, str(run_dir), wait=wait)


def check_run_lock(run_dir: str | os.PathLike) -> None:
    """Before writing into ``run_dir``: ``LockLost`` when this thread held its lock and lost it."""
    check_held(Path(run_dir) / RUN_LOCK)


def run_lock_lost(run_dir: str | os.PathLike) -> bool:
    """Whether this thread held the lock of ``run_dir`` and lost it (``check_run_lock`` without raising)."""
    try:
        check_run_lock(run_dir)
    except LockLost:
        return True
    return False


def run_holder(run_dir: Path) -> Holder | None:
    """Who trains ``run_dir`` now (its lock is live), else ``None``."""
    return live_holder(run_dir / RUN_LOCK)


def process_rank() -> int:
    """This process's global rank: in a submitit SLURM job ``SLURM_PROCID``, under torchrun ``RANK``, else 0."""
    if "SLURM_JOB_ID" in os.environ and "SUBMITIT_FOLDER" in os.environ:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return int(os.environ.get("RANK", "0"))


def locked_run(fn: F) -> F:
    """Decorate ``fn(params, run_dir, ...)`` to run under the lock of ``run_dir`` (taken by rank 0 only)."""

    @wraps(fn)
    def inner(params: Any, run_dir: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        if process_rank() != 0:
            return fn(params, run_dir, *args, **kwargs)
        with run_lock(run_dir):
            return fn(params, run_dir, *args, **kwargs)

    return inner  # type: ignore[return-value]
