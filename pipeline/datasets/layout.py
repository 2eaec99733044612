"""The canonical layout of a prepared dataset: the contract between ``prepare`` and every reader.

Every dataset, built-in or of your own, is prepared into ``data.root/<name>/``
(``pipeline.datasets.prepare`` writes it into a temporary folder and renames it
into place)::

    <name>/classes.csv                      header ``id,name``; ids 0..K-1 in order (``CLASSES_FILE``)
    <name>/{train,val}/images/<stem>.jpg    the source JPEG, copied byte for byte
                                            (``<stem>.png`` when the source is not RGB:
                                            grey or CMYK JPEGs are converted to RGB)
    <name>/{train,val}/labels/<stem>.png    8-bit mode "L": classes 0..K-1, 255 = ignore
    <name>/.grar-dataset                    what grar wrote, and the content fingerprint
                                            (``pipeline.paths.DATASET_MARKER``)

Training, evaluation, statistics and the report read the layout through this
module: the one reader of the class table (``read_classes``), of a label map
(``read_label_png``), the one ignore index (``IGNORE_INDEX``), and the class
colours every figure, label map and overlay grar writes uses (``palette``: the
PASCAL VOC bit-interleaving colour map shifted by one, so that no class is
black; black is the ignore index).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import DataError

SPLITS = ("train", "val")
IGNORE_INDEX = 255  # the label value of unlabelled pixels, in every label map grar writes or scores
LABEL_MODES = ("L", "P")  # index images; "P" stores indices too (its palette is only for display)
IMAGE_SUFFIXES = (".jpg", ".png")  # of the images of a prepared split
CLASSES_FILE = "classes.csv"


def read_classes(path: Path, num_classes: int | None = None) -> list[str]:
    """Class names from a class table (CSV in UTF-8, with or without a byte order mark; header ``id,name``, ids
    0..K-1 in order).

    ``DataError`` naming the file when the table is unreadable, its ids are not
    0..K-1 in order, a name is empty, or it has another row count than ``num_classes``.
    """
    try:  # utf-8-sig: the byte order mark spreadsheets write ("CSV UTF-8") is not part of the header
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            fields = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the class table ({err})") from None
    if not {"id", "name"} <= set(fields):
        raise DataError(f"{path}: class table needs a header with columns id,name and at least one row")
    names = []
    for expected, row in enumerate(rows):
        if (row["id"] or "").strip() != str(expected):
            raise DataError(
                f"{path}: row {expected + 2}: id {row['id']!r}, expected {expected} (ids must be 0..K-1 in order)"
            )
        if not (row["name"] or "").strip():
            raise DataError(f"{path}: row {expected + 2}: class {expected} has an empty name")
        names.append(row["name"].strip())
    if num_classes is not None and len(names) != num_classes:
        raise DataError(
            f"{path}: class table has {len(names)} classes but the labels have {num_classes} (--num-classes)"
        )
    return names


def classes_csv(names: Iterable[str]) -> str:
    """The class table as CSV text: header ``id,name``, ids 0..K-1."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name"])
    writer.writerows(enumerate(names))
    return buffer.getvalue()


def read_label_png(path: Path) -> np.ndarray:
    """The (H, W) values of an index label image; colour or unreadable images raise ``DataError``."""
    try:
        with Image.open(path) as image:
            if image.mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: label image has mode {image.mode!r}; expected a single-channel index image (L or P)"
                )
            image.load()
            return np.array(image)
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable label image ({err})") from None


def palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours: class c gets the PASCAL VOC colour of index c + 1 (deterministic, distinct)."""
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        index, rgb = c + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((index >> channel) & 1) << shift
            index >>= 3
        colours[c] = rgb
    return colours


def colourise(label: np.ndarray, colours: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8; the ignore index (and any id beyond the palette) is black."""
    out = np.zeros((*label.shape, 3), np.uint8)  # (H, W, 3)
    known = (label != ignore_index) & (label < len(colours))
    out[known] = colours[label[known]]
    return out
