"""Atomic, durable file and folder output: nothing half-written is ever left behind.

Writers get a temporary path beside the target; only when the block finishes
without an exception is it flushed to disk (``fsync`` of the file, or of
every file of a folder), renamed over the target (``os.replace`` is atomic on
one file system), and the parent folder fsynced, so a crash or a power loss
leaves either the old or the new version, never a truncated one. On error the
temporary path is removed and the target is left as it was.

Temporary names carry the writer's host and pid (``.<name>.<host>.<pid>.<random>.tmp``);
a writer that was killed leaves its temporary behind, and the next writer of
the same target removes it (``clean_leftovers``): when its pid is dead on
this host, or it is older than ``STALE_S`` (another host's, on shared storage).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.lock import pid_alive

STALE_S = 24 * 3600  # a temporary of another host untouched this long belongs to a dead writer
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temp_prefix(target: Path) -> str:
    """The prefix of this process's temporaries for ``target`` (``clean_leftovers`` recognises them)."""
    return f".{target.name}.{HOST}.{os.getpid()}."


def clean_leftovers(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed writers of ``target`` left beside it; return them.

    A temporary is ``.<name>.<host>.<pid>.<random>.tmp`` (or ``.old``): removed
    when its host is this one and its pid is dead, or when it is older than
    ``STALE_S``. A live writer's temporary is never touched.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.(tmp|old)$")
    removed = []
    for path in parent.glob(f".{glob_escape(target.name)}.*"):
        match = pattern.match(path.name)
        if match is None:
            continue
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = match["host"] == HOST and not pid_alive(int(match["pid"]))
        if dead or age > STALE_S:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (and ``root``) to disk.

    One ``syncfs`` of ``root``'s file system where Linux offers it (a prepared
    dataset has thousands of files: one fsync each costs seconds), else an
    fsync per file and folder.
    """
    if _syncfs(root):
        return
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the file system holding ``path``; ``False`` where it is not available or fails."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` of the block that names no file (PIL's ``save``, ``torch.save`` on a full disk) or names
    a temporary of ``path`` gets ``path`` as its file name, so its one line says where the write failed."""
    try:
        yield
    except OSError as err:
        named = isinstance(err.filename, str | bytes | os.PathLike)
        name = Path(os.fsdecode(err.filename)).name if named else None
        if err.errno is not None and (name is None or name.startswith(f".{Path(path).name}.")):
            raise OSError(err.errno, err.strerror, os.fspath(path)) from None
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``target``, durably, when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as err:  # name the output, not the temporary it could not create
        raise OSError(err.errno, err.strerror, str(target)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming(target):  # a full disk names the output, not its temporary (or nothing, as PIL's save)
            yield tmp_path
            if tmp_path.exists():
                tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
                fsync_path(tmp_path)
            os.replace(tmp_path, target)
            fsync_path(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces folder ``target``, durably, when the block succeeds.

    An existing ``target`` is removed only after the new folder is complete and on disk.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    except OSError as err:  # name the output, not the temporary it could not create
        raise OSError(err.errno, err.strerror, str(target)) from None
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            fsync_path(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
            fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` are the same, or one lies inside the other (symbolic links resolved)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def check_new_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    folder: bool,
    ours: Callable[[Path], bool] = lambda _: False,
    what: str = "output",
    writer: str = "grar",
) -> None:
    """Refuse, before any work, an output that would destroy what grar did not make (``ConfigError``, exit 2).

    Refused: an ``out`` that is an input, contains one or lies inside one
    (``inputs``, ``None`` items skipped); an existing ``out`` of the wrong kind
    (a file where a folder goes, or the reverse); an existing, non-empty
    folder or an existing file that ``ours`` does not recognise as written by
    grar (``writer`` names the command in the message). Both paths are named.
    """
    out = Path(out)
    for source in inputs:
        if source is not None and overlaps(out, source):
            raise ConfigError(f"{what} {out}: overlaps the input {source}; write elsewhere")
    if not out.exists() and not out.is_symlink():
        return
    if folder:
        if not out.is_dir():
            raise ConfigError(f"{what} {out}: exists and is not a folder")
        if any(out.iterdir()) and not ours(out):
            raise ConfigError(
                f"{what} {out}: exists, is not empty and was not written by {writer}; choose a new or empty folder"
            )
    else:
        if out.is_dir():
            raise ConfigError(f"{what} {out}: is a folder; give the path of a file")
        if not out.is_file() or not ours(out):
            raise ConfigError(f"{what} {out}: exists and was not written by {writer}; choose another path")


def has_marker(name: str) -> Callable[[Path], bool]:
    """``ours`` for ``check_new_output``: a folder holding the marker file ``name``."""
    return lambda folder: (folder / name).is_file()


def json_with_keys(*keys: str) -> Callable[[Path], bool]:
    """``ours`` for ``check_new_output``: a JSON object file holding every key of ``keys`` (grar's own schema)."""

    def check(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(key in data for key in keys)

    return check


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically, as UTF-8; a file name in it that is not UTF-8 keeps its bytes."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
