"""Counting class co-occurrence over label maps: the ``t`` of Eq. 1.

Each label PNG is reduced to a 256-bin histogram (PIL's ``Image.histogram``, one
C pass over the decoded pixels), from which come the pixels per class and the
image's presence vector ``p`` (``p[c] = 1`` when class ``c`` covers at least one
pixel; the ignore index is dropped). Over a split, ``t = P^T P`` where ``P`` is
the (images, K) presence matrix, so ``t[i, j]`` is the number of images holding
both ``i`` and ``j`` and ``t[i, i]`` the number of images holding ``i``.

Decoding dominates the cost, so files are decoded in worker processes, in chunks
of consecutive files. Each chunk returns its partial ``t`` (K x K), pixel counts
and the digests of its files; the parent adds them up as they arrive, so memory
does not grow with the dataset. Results are identical for any worker count:
counts are integers and chunks are consumed in file order.

Every label is checked while it is counted; the first bad file in sorted order
raises ``DataError`` naming the file and the value (see ``read_label``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.datasets.layout import IGNORE_INDEX, IMAGE_SUFFIXES, LABEL_MODES, check_pixels
from pipeline.errors import DataError

CHUNK_MAX = 64  # files per worker task


@dataclass(frozen=True)
class LabelSet:
    """What to count: label PNGs (sorted), their class count, and optionally the images beside them.

    ``images`` is the folder of the prepared layout holding ``<stem>.jpg`` or
    ``<stem>.png`` for every label; when set, each label's size must match its image's.
    """

    root: Path
    files: tuple[str, ...]  # paths relative to root, sorted
    num_classes: int
    ignore_index: int = IGNORE_INDEX
    images: Path | None = None


@dataclass
class Counts:
    """Co-occurrence counts of a label set (Eq. 1's ``t``) and what was counted."""

    t: np.ndarray  # (K, K) int64, t[i, j] = images holding classes i and j
    pixels: np.ndarray  # (K,) int64, labelled pixels per class
    images: int
    sha256: str  # over every file's (relative path, SHA-256 of its bytes), in sorted order

    def add(self, other: Counts) -> None:
        self.t += other.t
        self.pixels += other.pixels
        self.images += other.images


def find_labels(root: Path, num_classes: int, ignore_index: int = IGNORE_INDEX, images: Path | None = None) -> LabelSet:
    """The label PNGs directly in ``root``; ``DataError`` when the folder is missing or holds none."""
    if not root.is_dir():
        raise DataError(f"{root}: label folder not found")
    files = tuple(sorted(p.name for p in root.iterdir() if p.suffix.lower() == ".png" and p.is_file()))
    if not files:
        raise DataError(f"{root}: no label PNGs (*.png) found: empty split")
    if images is not None and not images.is_dir():
        images = None
    return LabelSet(root, files, num_classes, ignore_index, images)


def count_labels(labels: LabelSet, workers: int = 1, desc: str = "stats", extra: bytes = b"") -> Counts:
    """Count ``t``, pixels and the input digest over ``labels`` with ``workers`` processes.

    The digest is the SHA-256 over, for each file in sorted order, its path
    relative to ``labels.root``, a NUL byte and the SHA-256 of its bytes; then
    ``extra`` (the class table's bytes).
    """
    chunks = list(split_chunks(labels, workers))
    digest = hashlib.sha256()
    total = Counts(
        np.zeros((labels.num_classes, labels.num_classes), np.int64), np.zeros(labels.num_classes, np.int64), 0, ""
    )
    with tqdm(total=len(labels.files), unit="img", desc=desc, disable=None) as progress:
        for counts, records in map_chunks(chunks, workers):
            total.add(counts)
            digest.update(records)
            progress.update(counts.images)
    digest.update(extra)
    total.sha256 = digest.hexdigest()
    return total


def split_chunks(labels: LabelSet, workers: int) -> Iterator[LabelSet]:
    """Consecutive runs of ``labels.files``, about four per worker and at most ``CHUNK_MAX`` files each."""
    n = len(labels.files)
    size = max(1, min(CHUNK_MAX, -(-n // (4 * workers))))
    for start in range(0, n, size):
        yield replace(labels, files=labels.files[start : start + size])


def map_chunks(chunks: Sequence[LabelSet], workers: int) -> Iterator[tuple[Counts, bytes]]:
    """``count_chunk`` over ``chunks``, in order: in this process, or in a pool of ``workers``."""
    if workers <= 1 or len(chunks) <= 1:
        yield from map(count_chunk, chunks)
        return
    with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
        yield from pool.imap(count_chunk, chunks)


def count_chunk(labels: LabelSet) -> tuple[Counts, bytes]:
    """Counts of one chunk of files, and its digest records (relative path + NUL + SHA-256 of the bytes)."""
    k = labels.num_classes
    invalid = np.ones(256, bool)  # values that are neither a class id nor the ignore index
    invalid[:k] = False
    invalid[labels.ignore_index] = False
    histograms = np.zeros((len(labels.files), 256), np.int64)  # (n, 256)
    records = bytearray()
    for row, name in enumerate(labels.files):
        data = read_label(labels, name, histograms[row], invalid)
        records += os.fsencode(name) + b"\0" + hashlib.sha256(data).digest()  # names as the file system holds them
    presence = (histograms[:, :k] > 0).astype(np.float32)  # (n, K), P of t = P^T P
    # t = P^T P. einsum's own loops, not BLAS: a threaded BLAS call on a loaded machine costs
    # more than decoding the chunk. Exact: float32 holds the integers <= CHUNK_MAX.
    t = np.einsum("ni,nj->ij", presence, presence).astype(np.int64)  # (K, K)
    return Counts(t, histograms[:, :k].sum(axis=0), len(labels.files), ""), bytes(records)


def read_label(labels: LabelSet, name: str, histogram: np.ndarray, invalid: np.ndarray) -> bytes:
    """Read, decode and check one label; fill ``histogram`` (256,) with its pixel counts; return its bytes."""
    path = labels.root / name
    try:
        data = path.read_bytes()
        with Image.open(BytesIO(data), formats=["PNG"]) as image:
            check_pixels(image, path)
            if image.mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: label image has mode {image.mode!r}; labels must be 8-bit single-channel PNGs "
                    f"(mode 'L', or 'P' read as indices) holding class ids, not colours"
                )
            image.load()
            histogram[:] = image.histogram()
            size = image.size
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable or truncated PNG ({err})") from None
    if histogram[invalid].any():
        value = int(np.flatnonzero(histogram * invalid)[0])
        raise DataError(
            f"{path}: label value {value} ({histogram[value]} pixels) is neither a class id "
            f"(0..{labels.num_classes - 1}) nor the ignore index {labels.ignore_index}"
        )
    if labels.images is not None:
        check_size(path, size, labels.images)
    return data


def check_size(path: Path, size: tuple[int, int], images: Path) -> None:
    """``DataError`` when the label's image is missing or has another size."""
    stem = Path(path).stem
    for suffix in IMAGE_SUFFIXES:
        image_path = images / f"{stem}{suffix}"
        if image_path.is_file():
            break
    else:
        raise DataError(f"{path}: no image {stem}.jpg or {stem}.png in {images}")
    try:
        with Image.open(image_path) as image:
            image_size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{image_path}: unreadable image ({err})") from None
    if image_size != size:
        raise DataError(
            f"{path}: label size {size[0]}x{size[1]} differs from its image {image_path} "
            f"({image_size[0]}x{image_size[1]})"
        )


def default_workers() -> int:
    """All CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
