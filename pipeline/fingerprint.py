"""Fingerprints of a folder's files: the *listing* (names, sizes, modification times; no file read) and the
*content* (every byte).

``prepare`` records both for a prepared dataset in its marker (``pipeline.paths.DATASET_MARKER``); the run
identity (``pipeline.rundir.data_fingerprint``) then takes the listing of the data as it is now, and hashes the
content again only when the listing differs. The ``sources`` stage fingerprints a user's folder by its listing.

Files are walked with one ``os.scandir`` per folder (links to folders not followed) in path order, by
components. Names are hashed as the bytes the file system holds (``os.fsencode``): a name that is not UTF-8
hashes like any other (for UTF-8 names the bytes are the UTF-8 text, as before).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One file under a walked root: its path components, size and modification time (ns)."""

    parts: tuple[str, ...]
    size: int
    mtime_ns: int

    @property
    def name(self) -> bytes:
        """The relative path as the file system's bytes, ``/``-separated."""
        return b"/".join(os.fsencode(part) for part in self.parts)


def walk(root: Path, skip: str | None = None) -> list[Entry]:
    """Every file under ``root`` (a link to a file counts, a link to a folder is not followed), sorted by path
    components; files named ``skip`` (at any depth) left out."""
    entries: list[Entry] = []
    pending: list[tuple[tuple[str, ...], str]] = [((), os.fspath(root))]
    while pending:
        parts, folder = pending.pop()
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(((*parts, entry.name), entry.path))
                elif entry.is_file() and entry.name != skip:
                    stat = entry.stat()
                    entries.append(Entry((*parts, entry.name), stat.st_size, stat.st_mtime_ns))
    return sorted(entries, key=lambda entry: entry.parts)


def listing_sha256(entries: list[Entry]) -> str:
    """SHA-256 over each entry's ``path \\0 size \\0 mtime_ns \\n``, in order."""
    listing = hashlib.sha256()
    for entry in entries:
        listing.update(entry.name + f"\0{entry.size}\0{entry.mtime_ns}\n".encode())
    return listing.hexdigest()


def listing_fingerprint(root: Path) -> dict[str, object]:
    """Count, total size and listing SHA-256 of every file under ``root``: no file is read.

    COCO-Stuff's 164k images cost one ``stat`` each (``benchmarks/listing_throughput.py``).
    """
    entries = walk(root)
    return {
        "files": len(entries),
        "bytes": sum(entry.size for entry in entries),
        "listing_sha256": listing_sha256(entries),
    }


def content_sha256(root: Path, entries: list[Entry]) -> str:
    """SHA-256 over each entry's ``path \\0 bytes \\0``, in order: every byte is read."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.name + b"\0")
        with open(root.joinpath(*entry.parts), "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def content_fingerprint(root: Path, skip: str | None = None) -> dict[str, object]:
    """File count, content SHA-256 and listing SHA-256 of every file under ``root`` but those named ``skip``."""
    entries = walk(root, skip)
    return {"files": len(entries), "sha256": content_sha256(root, entries), "listing_sha256": listing_sha256(entries)}
