"""The canonical layout of a prepared dataset: the contract between ``prepare`` and every reader.

Every dataset, built-in or of your own, is prepared into ``data.root/<name>/``
(``pipeline.datasets.prepare`` writes it into a temporary folder and renames it
into place)::

    <name>/classes.csv                      header ``id,name``; ids 0..K-1 in order (``CLASSES_FILE``)
    <name>/{train,val}/images/<stem>.jpg    the source JPEG, copied byte for byte
                                            (``<stem>.png`` when the source is not RGB:
                                            grey or CMYK JPEGs are converted to RGB; or,
                                            in a folder dataset, when its EXIF tag turns it)
    <name>/{train,val}/labels/<stem>.png    8-bit mode "L": classes 0..K-1, 255 = ignore
    <name>/.grar-dataset                    what grar wrote, and the content fingerprint
                                            (``pipeline.paths.DATASET_MARKER``)

Training, evaluation, statistics and the report read the layout through this
module: the one reader of the class table (``read_classes``), of a label map
(``read_label_png``), the one ignore index (``IGNORE_INDEX``), the one size
limit of every image grar decodes (``MAX_IMAGE_PIXELS``, ``check_pixels``), and the class
colours every figure, label map and overlay grar writes uses (``palette``: the
PASCAL VOC bit-interleaving colour map shifted by one, so that no class is
black; black is the ignore index).

Orientation (the EXIF Orientation tag of phone photos, which tells viewers to
turn the stored pixels). A prepared image is what its label was drawn on: every
reader of the layout (training, evaluation, statistics, ``grar predict`` given
an image of a prepared dataset) uses its pixels as stored. Photos from outside
are used as a viewer displays them (``upright``): a folder dataset's images and
labels at ``prepare`` (an image its tag turns is written as ``<stem>.png``,
upright and untagged, and its label must have the displayed size), and new
images at ``grar predict``, whose label maps and overlays then lie over the
photo as it is displayed. The built-in datasets are used as stored: their
published labels follow the stored pixels (COCO's ignore the tag).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import DataError

SPLITS = ("train", "val")
IGNORE_INDEX = 255  # the label value of unlabelled pixels, in every label map grar writes or scores
LABEL_MODES = ("L", "P")  # index images; "P" stores indices too (its palette is only for display)
IMAGE_SUFFIXES = (".jpg", ".png")  # of the images of a prepared split
CLASSES_FILE = "classes.csv"
# The most pixels grar decodes in one image (prepare, stats, train, predict, evaluate), checked from the header
# before decoding: 50 Mpx (a 48 Mpx phone photo, an 8K frame) is 150 MB as RGB and 200 MB as float32 per channel;
# predicting it whole holds K float32 scores per pixel too (24 classes: 5 GB). PIL's own bomb limit is 179 Mpx.
MAX_IMAGE_PIXELS = 50_000_000


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


def check_pixels(image: Image.Image, path: Path | str) -> None:
    """``DataError`` naming ``path`` when the opened (not yet decoded) ``image`` has more than ``MAX_IMAGE_PIXELS``."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{path}: {width}x{height} pixels ({width * height / 1e6:.1f} Mpx), more than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx grar decodes (pipeline.datasets.layout.MAX_IMAGE_PIXELS); "
            "scale it down or cut it into tiles first"
        )


EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = as stored, 2-8 = mirrored and/or turned
TURNED = (5, 6, 7, 8)  # orientations that swap width and height


def orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image (1 when it has none, or an unreadable one)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """``image`` as a viewer displays it: its EXIF orientation applied (a copy, untagged), else ``image`` itself."""
    return image if orientation(image) == 1 else ImageOps.exif_transpose(image)


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as a viewer displays it (``upright``), read from the header."""
    width, height = image.size
    return (height, width) if orientation(image) in TURNED else (width, height)


def read_label_png(path: Path, displayed: bool = False) -> np.ndarray:
    """The (H, W) values of an index label image; colour, unreadable or too large images raise ``DataError``.

    ``displayed``: as a viewer shows it (``upright``), for the labels of a folder dataset at ``prepare``.
    """
    try:
        with Image.open(path) as image:
            check_pixels(image, path)
            if image.mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: label image has mode {image.mode!r}; expected a single-channel index image (L or P)"
                )
            image.load()
            return np.array(upright(image) if displayed else image)
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
