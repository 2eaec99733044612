"""Safe extraction of zip and tar archives.

Every member is checked before anything is written; one unsafe member refuses the
whole archive and nothing is extracted. Unsafe means: an absolute path (``/x``,
``C:\\x``), a ``..`` component, a symbolic or hard link whose target lies outside
the extraction folder, a path that goes through a link stored earlier in the
archive (the classic "write through a symlink" escape), or a device / FIFO
member. Backslashes count as separators, so ``..\\x`` is refused too.

Extraction goes to a temporary folder beside the target, renamed into place
only once every member is written (``pipeline.io.atomic_dir``): a target folder
that exists is always complete. Tar members are additionally extracted with
Python's ``data`` filter, as a second line of defence.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets.common import byte_bar
from pipeline.errors import DataError
from pipeline.io import atomic_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
STAMP_NAME = ".grar-extracted"  # written last inside the folder: which archive (and checksum) it holds


@dataclass(frozen=True)
class Member:
    """What the safety check needs to know about one archive member."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "special"
    link: str = ""  # target of a symlink (relative to the member) or hard link (relative to the root)


def archive_stem(filename: str) -> str:
    """``ADEChallengeData2016.zip`` -> ``ADEChallengeData2016`` (the extraction folder's name)."""
    for suffix in ARCHIVE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def unsafe_reason(member: Member, links: set[str]) -> str | None:
    """Why ``member`` may not be extracted, or ``None`` when it is safe.

    ``links`` holds the (normalised) names of the archive's link members.
    """
    name = member.name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "contains '..'"
    if member.kind == "special":
        return "is a device or FIFO"
    if _through_link(name, links):
        return "is written through a link stored in the archive"
    if member.kind in ("symlink", "hardlink"):
        link = member.link.replace("\\", "/")
        if not link or link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            return f"is a link to an absolute path ({member.link!r})"
        base = posixpath.dirname(name.rstrip("/")) if member.kind == "symlink" else ""
        joined = posixpath.join(base, link)
        resolved = posixpath.normpath(joined)
        if resolved == ".." or resolved.startswith("../"):
            return f"is a link pointing out of the target ({member.link!r})"
        if _through_link(joined, links):
            return f"is a link through another link ({member.link!r})"
    return None


def _through_link(path: str, links: set[str]) -> bool:
    """True when a proper prefix of ``path`` (raw, before normalisation) is a link member."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return any("/".join(parts[:depth]) in links for depth in range(1, len(parts)))


def check_members(archive: Path, members: list[Member]) -> None:
    """Raise ``DataError`` naming the unsafe members of ``archive``; nothing is written.

    Any member under a link member counts as written through it, whatever their order.
    """
    links = {posixpath.normpath(m.name.replace("\\", "/")) for m in members if m.kind in ("symlink", "hardlink")}
    bad = [f"{m.name!r} {reason}" for m in members if (reason := unsafe_reason(m, links)) is not None]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        listed = "; member ".join(bad[:3])
        raise DataError(f"{archive}: refusing to extract: member {listed}{more}; nothing was extracted")


def zip_members(archive: zipfile.ZipFile) -> list[Member]:
    """The members of a zip archive (symlinks are stored as Unix mode bits)."""
    members = []
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            members.append(Member(info.filename, "symlink", archive.read(info).decode("utf-8", "replace")))
        else:
            members.append(Member(info.filename, "dir" if info.is_dir() else "file"))
    return members


def tar_members(archive: tarfile.TarFile) -> list[Member]:
    """The members of a tar archive."""
    members = []
    for info in archive.getmembers():
        if info.issym():
            members.append(Member(info.name, "symlink", info.linkname))
        elif info.islnk():
            members.append(Member(info.name, "hardlink", info.linkname))
        elif info.isdir():
            members.append(Member(info.name, "dir"))
        elif info.isfile():
            members.append(Member(info.name, "file"))
        else:
            members.append(Member(info.name, "special"))
    return members


def extract_archive(archive: Path, target: Path, stamp: str = "") -> None:
    """Check every member of the zip or tar ``archive``, then extract it atomically into ``target``.

    ``stamp`` (e.g. the archive's checksum) is written to ``target/.grar-extracted``
    last, so a caller can tell which archive an existing folder holds.
    """
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = zip_members(zf)
                check_members(archive, members)
                with atomic_dir(target) as tmp:
                    infos = zf.infolist()
                    for info, member in _progress(infos, members, [i.file_size for i in infos], archive):
                        _extract_zip_member(zf, info, member, tmp)
                    (tmp / STAMP_NAME).write_text(stamp, encoding="utf-8")
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tar_members(tf)
                check_members(archive, members)
                with atomic_dir(target) as tmp:
                    for info, _ in _progress(tf.getmembers(), members, [i.size for i in tf.getmembers()], archive):
                        tf.extract(info, tmp, set_attrs=False, filter="data")  # the stdlib's check, a second line
                    (tmp / STAMP_NAME).write_text(stamp, encoding="utf-8")
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(f"{archive}: corrupt archive ({err}); delete it and download again") from None
    except OSError as err:
        raise DataError(f"{archive}: extraction into {target} failed ({err})") from None


def _extract_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, dest: Path) -> None:
    """One checked zip member; a symlink (checked to stay inside ``dest``) is made a real link."""
    if member.kind == "symlink":
        path = dest / member.name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(member.link, path)
    else:
        zf.extract(info, dest)


def _progress(infos: list, members: list[Member], sizes: list[int], archive: Path) -> Iterator[tuple]:
    """Yield (info, member) pairs while a progress bar advances by each member's size."""
    with byte_bar(sum(sizes), f"extract {archive.name}") as bar:
        for info, member, size in zip(infos, members, sizes):
            yield info, member
            bar.update(size)
