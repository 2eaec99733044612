"""Safe extraction of zip and tar archives.

Every member is checked before anything is written; one unsafe member refuses the
whole archive and nothing is extracted. Unsafe means: an absolute path (``/x``,
``C:\\x``), a ``..`` component, a symbolic or hard link whose target lies outside
the extraction folder, a path that goes through a link stored earlier in the
archive (the classic "write through a symlink" escape), or a device / FIFO
member. Backslashes count as separators, so ``..\\x`` is refused too.

Before that, the archive's size is checked against caps (a zip or tar bomb is
refused before anything is written): the number of members, each zip member's
compression ratio (and a tar's overall ratio, which also catches sparse members),
and the total uncompressed size against a fixed cap and against the free space of
the target's file system. A zip member that is encrypted or uses a compression
method Python cannot read is refused the same way, rather than failing halfway.

Extraction goes to a temporary folder beside the target, renamed into place
only once every member is written (``pipeline.io.atomic_dir``): a target folder
that exists is always complete. Tar members are additionally extracted with
Python's ``data`` filter, as a second line of defence.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.download import byte_bar, describe_start
from pipeline.errors import DataError
from pipeline.io import atomic_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
STAMP_NAME = ".grar-extracted"  # written last inside the folder: which archive (and checksum) it holds

# Caps against zip/tar bombs, generous for the real archives. Their figures are
# estimates from the published download sizes and split counts (the archives cannot be
# fetched from the build machines, so member counts were not listed):
#   ADEChallengeData2016.zip     923 MB   ~44,400 members: 20,210 + 2,000 JPEGs, as many
#                                         PNG labels, 2 text files; ~1 GB unpacked
#   VOCtrainval_03-May-2010.tar  1.3 GB   ~20,000-45,000 members: JPEGs, one XML each,
#                                         segmentation PNGs, lists; as large unpacked (tar)
#   cocostuff-10k-v1.1.zip       2.0 GB   ~20,000 members: 10,000 JPEGs and 10,000 .mat
#                                         files; ~2-2.5 GB unpacked
# JPEG, PNG and MATLAB v5 data barely compress (about 1:1), text and XML about 5:1 to
# 20:1; deflate tops out near 1,032:1, which is what bombs use.
MAX_MEMBERS = 250_000  # > 5x the largest real count
MAX_TOTAL_BYTES = 32 * 1024**3  # 32 GiB: > 10x the largest real archive unpacked
MAX_RATIO = 200  # uncompressed / compressed size of a member (of a whole tar): 10x the most any real text gets
RATIO_FLOOR = 1024**2  # members under 1 MiB unpacked may compress better (empty or repetitive text files)
BLOCK = 4096  # disk space a member takes beyond its bytes, at most (one file-system block)
FREE_MARGIN = 256 * 1024**2  # what extraction leaves free on the target's file system
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)  # what zipfile reads
OTHER_ZIP_METHODS = {9: "Deflate64, as Windows zips large files", 93: "Zstandard", 99: "AES encryption"}


@dataclass(frozen=True)
class Member:
    """What the safety check needs to know about one archive member."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "special"
    link: str = ""  # target of a symlink (relative to the member) or hard link (relative to the root)
    size: int = 0  # bytes once extracted
    packed: int | None = None  # bytes stored in the archive (zip); None when the format does not say (tar)
    unreadable: str = ""  # why the archive's reader cannot unpack it (zip: encryption, compression method)


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
    if member.unreadable:
        return member.unreadable
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


def check_sizes(archive: Path, members: list[Member], target: Path, packed_total: int) -> None:
    """Raise ``DataError`` when ``archive`` looks like a bomb or cannot fit; nothing is written.

    ``packed_total`` is the archive's size on disk (a tar's overall ratio is checked against it).
    """
    if len(members) > MAX_MEMBERS:
        raise DataError(
            f"{archive}: refusing to extract: more than {MAX_MEMBERS:,} members (the cap; the real archives have "
            f"under 50,000): a zip bomb?; nothing was extracted"
        )
    for m in members:
        if m.packed is not None and m.size > RATIO_FLOOR and m.size > MAX_RATIO * max(m.packed, 1):
            raise DataError(
                f"{archive}: refusing to extract: member {m.name!r} expands {m.packed:,} bytes to {m.size:,} "
                f"(ratio {m.size / max(m.packed, 1):,.0f}:1, cap {MAX_RATIO}:1): a zip bomb?; nothing was extracted"
            )
    total = sum(m.size for m in members)
    if all(m.packed is None for m in members) and total > RATIO_FLOOR and total > MAX_RATIO * max(packed_total, 1):
        raise DataError(
            f"{archive}: refusing to extract: {packed_total:,} bytes expand to {total:,} "
            f"(ratio {total / max(packed_total, 1):,.0f}:1, cap {MAX_RATIO}:1): a tar bomb?; nothing was extracted"
        )
    if total > MAX_TOTAL_BYTES:
        raise DataError(
            f"{archive}: refusing to extract: {total:,} bytes unpacked, over the cap of {MAX_TOTAL_BYTES:,}: "
            f"a zip bomb?; nothing was extracted"
        )
    needed = total + BLOCK * len(members) + FREE_MARGIN
    free = shutil.disk_usage(_existing_ancestor(target)).free
    if needed > free:
        raise DataError(
            f"{archive}: not enough disk space to extract into {target}: needs {needed:,} bytes ({total:,} unpacked, "
            f"{len(members):,} members, {FREE_MARGIN:,} kept free) but {free:,} are free; nothing was extracted"
        )


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent (whose file system the extraction will use)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def zip_members(archive: zipfile.ZipFile) -> list[Member]:
    """The members of a zip archive (symlinks are stored as Unix mode bits)."""
    members = []
    for info in archive.infolist():
        sizes = {"size": info.file_size, "packed": info.compress_size}
        if info.flag_bits & 0x1:
            members.append(Member(info.filename, "file", **sizes, unreadable="is encrypted (password-protected)"))
        elif info.compress_type not in ZIP_METHODS:
            known = f" ({OTHER_ZIP_METHODS[info.compress_type]})" if info.compress_type in OTHER_ZIP_METHODS else ""
            why = f"uses compression method {info.compress_type}{known}, which Python's zipfile cannot read"
            members.append(Member(info.filename, "file", **sizes, unreadable=why))
        elif stat.S_ISLNK(info.external_attr >> 16):
            if info.file_size > BLOCK:  # a link's data is a path: never read a large one into memory
                why = f"is a link of {info.file_size:,} bytes (a link holds a path)"
                members.append(Member(info.filename, "symlink", **sizes, unreadable=why))
                continue
            link = archive.read(info).decode("utf-8", "replace")
            members.append(Member(info.filename, "symlink", link, **sizes))
        else:
            members.append(Member(info.filename, "dir" if info.is_dir() else "file", **sizes))
    return members


def tar_members(archive: tarfile.TarFile) -> list[Member]:
    """The members of a tar archive; reading stops after ``MAX_MEMBERS + 1`` (a bomb's headers fill memory)."""
    members = []
    for info in archive:
        if info.issym():
            members.append(Member(info.name, "symlink", info.linkname))
        elif info.islnk():
            members.append(Member(info.name, "hardlink", info.linkname))
        elif info.isdir():
            members.append(Member(info.name, "dir"))
        elif info.isfile():
            members.append(Member(info.name, "file", size=info.size))
        else:
            members.append(Member(info.name, "special"))
        if len(members) > MAX_MEMBERS:
            break
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
                check_sizes(archive, members, target, archive.stat().st_size)
                check_members(archive, members)
                with atomic_dir(target) as tmp:
                    infos = zf.infolist()
                    for info, member in _progress(infos, members, [i.file_size for i in infos], archive):
                        _extract_zip_member(zf, info, member, tmp)
                    (tmp / STAMP_NAME).write_text(stamp, encoding="utf-8")
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tar_members(tf)
                check_sizes(archive, members, target, archive.stat().st_size)
                check_members(archive, members)
                with atomic_dir(target) as tmp:
                    for info, _ in _progress(tf.getmembers(), members, [i.size for i in tf.getmembers()], archive):
                        tf.extract(info, tmp, set_attrs=False, filter="data")  # the stdlib's check, a second line
                    (tmp / STAMP_NAME).write_text(stamp, encoding="utf-8")
        else:
            raise DataError(f"{archive}: not a zip or tar archive: {describe_start(archive)}")
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
