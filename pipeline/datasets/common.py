"""What every converter shares: mapping source ids to classes, writing one sample of the canonical
layout (``pipeline.datasets.layout``) and its class table, and a parallel map with a progress bar."""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.datasets.layout import CLASSES_FILE, IGNORE_INDEX, SPLITS, check_pixels, classes_csv, orientation, upright
from pipeline.errors import DataError
from pipeline.io import naming

T = TypeVar("T")


def run_tasks(fn: Callable[[T], object], tasks: Sequence[T], workers: int, desc: str) -> None:
    """Apply ``fn`` to every task, in ``workers`` processes when it pays, with a progress bar.

    The first ``DataError`` raised by a task stops the map and propagates.
    """
    with tqdm(total=len(tasks), unit="img", desc=desc) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                fn(task)
                bar.update()
            return
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            chunk = max(1, min(64, len(tasks) // (8 * workers)))
            for _ in pool.imap_unordered(fn, tasks, chunksize=chunk):
                bar.update()


def lookup_table(mapping: dict[int, int], size: int) -> np.ndarray:
    """A (size,) uint8 table sending each source id to its class, every other id to 255."""
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


def apply_table(raw: np.ndarray, table: np.ndarray, source: str) -> np.ndarray:
    """``table[raw]`` after checking every value is an integer id the table knows; ``source`` names the file."""
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if not np.all(np.isfinite(raw)) or not np.array_equal(raw, np.round(raw)):
            bad = raw[~np.isfinite(raw) | (raw != np.round(raw))].flat[0]
            raise DataError(f"{source}: label value {bad} is not an integer")
        raw = raw.astype(np.int64)
    if raw.size:
        low, high = int(raw.min()), int(raw.max())
        if low < 0 or high >= len(table):
            bad = low if low < 0 else high
            raise DataError(f"{source}: label value {bad} out of range 0..{len(table) - 1}")
    return table[raw]


def write_sample(
    out_dir: Path, split: str, stem: str, image_path: Path, label: np.ndarray, source: str, displayed: bool = False
) -> None:
    """Write one image (checked: readable, at most ``MAX_IMAGE_PIXELS``, same size as ``label``) and its label.

    ``displayed``: the image as a viewer shows it (``pipeline.datasets.layout.upright``, a folder dataset's
    photos; ``label`` is then upright too); one its EXIF tag turns is written as an untagged PNG.
    """
    images = out_dir / split / "images"
    try:
        with Image.open(image_path) as image:
            check_pixels(image, image_path)
            image.load()
            turned = displayed and orientation(image) != 1
            shown = upright(image) if turned else image
            if shown.size != (label.shape[1], label.shape[0]):
                raise DataError(
                    f"{image_path}: image is {shown.size[0]}x{shown.size[1]}"
                    + (" as displayed (its EXIF orientation applied)" if turned else "")
                    + f" but its label {source} is {label.shape[1]}x{label.shape[0]} (width x height)"
                )
            copy = image.mode == "RGB" and image.format == "JPEG" and not turned
            converted = None if copy else shown.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{image_path}: image file not found (its label is {source})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{image_path}: unreadable image ({err})") from None
    # Writing (a full disk: an OSError naming the file written, never "unreadable image").
    target = images / f"{stem}.jpg" if converted is None else images / f"{stem}.png"
    with naming(target):
        if converted is None:
            shutil.copyfile(image_path, target)
        else:
            converted.save(target)
    with naming(out_dir / split / "labels" / f"{stem}.png"):
        Image.fromarray(label.astype(np.uint8, copy=False), mode="L").save(out_dir / split / "labels" / f"{stem}.png")


def make_layout(out_dir: Path, names: Sequence[str]) -> None:
    """Create the split folders and write ``classes.csv``."""
    for split in SPLITS:
        for kind in ("images", "labels"):
            (out_dir / split / kind).mkdir(parents=True, exist_ok=True)
    (out_dir / CLASSES_FILE).write_text(classes_csv(names), encoding="utf-8")


def pair_files(images: Path, labels: Path, image_suffix: str, label_suffix: str) -> list[tuple[str, Path, Path]]:
    """(stem, image, label) for every stem, sorted; a missing folder or partner, or no files, raises ``DataError``."""
    for folder in (images, labels):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
    image_files = {p.stem: p for p in images.glob(f"*{image_suffix}")}
    label_files = {p.stem: p for p in labels.glob(f"*{label_suffix}")}
    for stem in sorted(image_files.keys() ^ label_files.keys()):
        if stem in image_files:
            raise DataError(f"{image_files[stem]}: image without a label (expected {labels / (stem + label_suffix)})")
        raise DataError(f"{label_files[stem]}: label without an image (expected {images / (stem + image_suffix)})")
    if not image_files:
        raise DataError(f"{images}: empty split: no *{image_suffix} images")
    return [(stem, image_files[stem], label_files[stem]) for stem in sorted(image_files)]


def locate(root: Path, marker: str) -> Path:
    """The folder holding ``marker``: ``root`` itself or one of its direct subfolders (archives differ in nesting)."""
    if (root / marker).exists():
        return root
    found = [child for child in sorted(root.iterdir()) if (child / marker).exists()] if root.is_dir() else []
    if len(found) != 1:
        raise DataError(f"{root}: expected {marker} in it or in one of its subfolders (found {len(found)})")
    return found[0]
