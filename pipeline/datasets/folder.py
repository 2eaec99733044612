"""A dataset of the user's (``data.folders.NAME``) -> the canonical layout, every file checked first.

``PATH`` holds ``classes.csv`` (header ``id,name``, ids 0..K-1 in order,
unique names, K <= 255) and one of two layouts:

    split folders                      one folder of images and a split list
    PATH/train/images/<stem>.jpg|png   PATH/images/<stem>.jpg|png
    PATH/train/labels/<stem>.png       PATH/labels/<stem>.png
    PATH/val/images/...                PATH/splits/train.txt   one stem a line
    PATH/val/labels/...                PATH/splits/val.txt     ('#' comments, blank lines skipped)

Images are JPEG or PNG (``.jpg``, ``.jpeg``, ``.png``, any case); labels are
8-bit PNGs of class ids (mode ``L``, or ``P`` read as indices, never as
colours). In the split-list layout, images not listed in either split are left
out (a test split, say). Hidden files (``.DS_Store``) are skipped.

Photos are used as a viewer displays them: an image's (and a label's) EXIF
orientation is applied (``pipeline.datasets.layout``, Orientation), so a label
drawn on a phone photo as shown fits it.

Label values: ``ignore`` (default 255) means "not labelled" and becomes 255;
every other value ``v`` becomes ``remap.get(v, v)``, which must be a class id
below K (or 255, to ignore it too). Everything that can be checked without
decoding (the class table, pairs, duplicate stems, split lists) is checked
before any file is written; decoding then checks modes, values and
image/label sizes. Each error is one ``DataError`` naming the file (and line
or value), and ``prepare_dataset`` leaves nothing behind.

The folder is only read, never written: the output must lie outside it
(``pipeline.datasets.prepare``).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import FolderDatasetConfig, Params
from pipeline.datasets.common import make_layout, run_tasks, write_sample
from pipeline.datasets.layout import IGNORE_INDEX, SPLITS, read_classes, read_label_png
from pipeline.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".png"
MAX_CLASSES = 255  # 8-bit labels, 255 kept for "ignore"
SKIPPED_FILES = ("Thumbs.db", "desktop.ini")
INVALID = -1  # a value with no class in the lookup table

Sample = tuple[str, Path, Path]  # (stem, image, label)


def prepare(params: Params, out_dir: Path, name: str) -> None:
    """Check and convert the folder dataset ``name`` of ``params.data.folders`` into ``out_dir``."""
    spec = params.data.folder(name)
    if spec is None:
        raise ConfigError(f"{name!r} is not a folder dataset; {params.data.names_text}")
    convert(spec, out_dir, params.data.workers, f"data.folders.{name}")


def convert(spec: FolderDatasetConfig, out_dir: Path, workers: int, key: str = "data.folders") -> None:
    """Check the folder of ``spec`` (see the module docstring) and write the canonical layout into ``out_dir``."""
    root = Path(spec.path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found ({key})")
    names = read_class_table(root / "classes.csv")
    table = value_table(spec, len(names), key)
    splits = find_samples(root)
    make_layout(out_dir, names)
    for split, samples in splits.items():
        run_tasks(
            partial(convert_one, out_dir=out_dir, split=split, table=table, spec=spec, num_classes=len(names)),
            samples,
            workers,
            f"{root.name} {split}",
        )


def read_class_table(path: Path) -> list[str]:
    """The class names of ``classes.csv``: ids 0..K-1 in order, names unique and non-empty, 1 <= K <= 255."""
    if not path.is_file():
        raise DataError(f"{path}: class table not found (a CSV with header id,name and ids 0..K-1)")
    names = read_classes(path)
    if len(names) > MAX_CLASSES:
        raise DataError(f"{path}: {len(names)} classes; 8-bit labels hold at most {MAX_CLASSES} (255 = ignore)")
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise DataError(f"{path}: duplicate class names: {', '.join(repeated)}")
    return names


def value_table(spec: FolderDatasetConfig, num_classes: int, key: str) -> np.ndarray:
    """(256,) int16: label value -> class id, 255 (ignore) or ``INVALID``; remap targets checked against K."""
    for source, target in spec.remap.items():
        if target >= num_classes and target != IGNORE_INDEX:
            raise ConfigError(
                f"{key}.remap.{source}: target {target} is not a class id 0..{num_classes - 1} "
                f"(or {IGNORE_INDEX} to ignore)"
            )
    table = np.full(256, INVALID, np.int16)
    table[:num_classes] = np.arange(num_classes)
    for source, target in spec.remap.items():
        table[source] = target
    table[spec.ignore] = IGNORE_INDEX
    return table


def find_samples(root: Path) -> dict[str, list[Sample]]:
    """Every split's (stem, image, label), sorted by stem, from whichever layout ``root`` has; checked for pairs."""
    split_folders = [root / split for split in SPLITS if (root / split).is_dir()]
    flat = (root / "images").is_dir() or (root / "labels").is_dir() or (root / "splits").is_dir()
    if split_folders and flat:
        raise DataError(
            f"{root}: holds both {split_folders[0].name}/ and images/, labels/ or splits/; "
            "use one layout (see `grar prepare --help`)"
        )
    if not split_folders and not flat:
        raise DataError(
            f"{root}: expected train/ and val/ (each with images/ and labels/), or images/, labels/ and "
            "splits/{train,val}.txt"
        )
    samples = split_folder_samples(root) if split_folders else split_list_samples(root)
    seen: dict[str, str] = {}
    for split, items in samples.items():
        if not items:
            raise DataError(f"{root}: the {split} split is empty")
        for stem, image, _ in items:
            if stem in seen:
                raise DataError(f"{image}: stem {stem!r} is in both the {seen[stem]} and the {split} split")
            seen[stem] = split
    return samples


def split_folder_samples(root: Path) -> dict[str, list[Sample]]:
    """The layout ``root/{train,val}/{images,labels}/``."""
    samples = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (the split-folder layout needs train/ and val/)")
        images, labels = list_images(folder / "images"), list_labels(folder / "labels")
        samples[split] = pair_up(images, labels, folder / "images", folder / "labels")
    return samples


def split_list_samples(root: Path) -> dict[str, list[Sample]]:
    """The layout ``root/{images,labels}/`` + ``root/splits/{train,val}.txt``."""
    images, labels = list_images(root / "images"), list_labels(root / "labels")
    samples = {}
    for split in SPLITS:
        listing = root / "splits" / f"{split}.txt"
        stems = read_split_list(listing)
        for line, stem in stems:
            if stem not in images:
                raise DataError(f"{listing}: line {line}: no image {stem}.jpg/.jpeg/.png in {root / 'images'}")
            if stem not in labels:
                raise DataError(f"{listing}: line {line}: no label {stem}.png in {root / 'labels'}")
        samples[split] = [(stem, images[stem], labels[stem]) for _, stem in sorted(stems, key=lambda item: item[1])]
    return samples


def read_split_list(path: Path) -> list[tuple[int, str]]:
    """(line number, stem) of a split list; a stem that is a path, or listed twice, raises ``DataError``."""
    if not path.is_file():
        raise DataError(f"{path}: split list not found (one image stem a line)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the split list ({err})") from None
    stems: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stem = raw.strip()
        if not stem or stem.startswith("#"):
            continue
        if "/" in stem or "\\" in stem or stem in (".", "..") or "\x00" in stem:
            raise DataError(f"{path}: line {number}: {stem!r} is not a file stem (no folders, no suffix)")
        if stem in first:
            raise DataError(f"{path}: line {number}: {stem!r} is listed twice (first on line {first[stem]})")
        first[stem] = number
        stems.append((number, stem))
    return stems


def _files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of {what} not found")
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in SKIPPED_FILES)


def list_images(folder: Path) -> dict[str, Path]:
    """stem -> image file of ``folder``; another file type, a subfolder or two images of a stem raise ``DataError``."""
    images: dict[str, Path] = {}
    for path in _files(folder, "images"):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: not a JPEG or PNG image file ({', '.join(IMAGE_SUFFIXES)}); move it elsewhere")
        if path.stem in images:
            raise DataError(f"{path}: two images with the stem {path.stem!r} (also {images[path.stem].name})")
        images[path.stem] = path
    return images


def list_labels(folder: Path) -> dict[str, Path]:
    """stem -> label file of ``folder``; anything but ``.png`` files raises ``DataError``."""
    labels: dict[str, Path] = {}
    for path in _files(folder, "labels"):
        if not path.is_file() or path.suffix.lower() != LABEL_SUFFIX:
            raise DataError(f"{path}: labels must be 8-bit PNG files (<stem>.png); move it elsewhere")
        if path.stem in labels:
            raise DataError(f"{path}: two labels with the stem {path.stem!r} (also {labels[path.stem].name})")
        labels[path.stem] = path
    return labels


def pair_up(images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path) -> list[Sample]:
    """(stem, image, label) sorted by stem; an image without a label or a label without an image raises."""
    for stem in sorted(images.keys() - labels.keys()):
        raise DataError(f"{images[stem]}: image without a label (expected {label_dir / stem}.png)")
    for stem in sorted(labels.keys() - images.keys()):
        raise DataError(f"{labels[stem]}: label without an image (expected {image_dir / stem}.jpg or .png)")
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def convert_one(
    sample: Sample, out_dir: Path, split: str, table: np.ndarray, spec: FolderDatasetConfig, num_classes: int
) -> None:
    """One sample: label values through ``table`` (checked), image copied (checked: same size as its label)."""
    stem, image, label_path = sample
    raw = read_label_png(label_path, displayed=True)  # (H, W) uint8: modes L and P only, as displayed
    label = table[raw]
    if (label == INVALID).any():
        row, column = (int(x[0]) for x in np.nonzero(label == INVALID))
        value = int(raw[row, column])
        remapped = " (after remap)" if spec.remap else ""
        raise DataError(
            f"{label_path}: value {value} at row {row}, column {column} is not a class id 0..{num_classes - 1}"
            f"{remapped} nor the ignore value {spec.ignore}"
        )
    write_sample(out_dir, split, stem, image, label.astype(np.uint8), str(label_path), displayed=True)
