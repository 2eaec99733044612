"""The toy label set of the statistics tests, whose statistics are worked out by hand.

Classes: 0 sky, 1 plane, 2 cow, 3 grass, 4 boat (never labelled: the 0/0 case).
Images (odd sizes, 255 = ignore):

    a.png 3x5  sky, plane         sky 10 px, plane 5 px
    b.png 5x7  sky, cow, grass    sky 7, cow 3, grass 25
    c.png 3x3  sky, grass         sky 3, grass 6
    d.png 3x5  grass, ignore      grass 8, ignore 7

so t (images holding both classes) is

         sky plane cow grass boat
    sky    3    1   1    2    0
    plane  1    1   0    0    0
    cow    1    0   1    1    0
    grass  2    0   1    3    0
    boat   0    0   0    0    0
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets.layout import classes_csv

REPO = Path(__file__).resolve().parents[3]
NAMES = ["sky", "plane", "cow", "grass", "boat"]
LABELS = {
    "a": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]],
    "b": [[0] * 7, [3] * 7, [3] * 7, [3] * 7, [2, 2, 2, 3, 3, 3, 3]],
    "c": [[0, 0, 0], [3, 3, 3], [3, 3, 3]],
    "d": [[3, 3, 3, 3, 3], [3, 3, 255, 255, 3], [255] * 5],
}
T = np.array(
    [
        [3, 1, 1, 2, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0],
        [2, 0, 1, 3, 0],
        [0, 0, 0, 0, 0],
    ]
)
PIXELS = [20, 5, 3, 39, 0]


def write_label(path: Path, values, mode: str = "L") -> Path:
    """``values`` (rows of ints) as a label PNG: mode "L", "P" (same indices, a palette) or converted to ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(values, np.uint8)
    image = Image.fromarray(array, "L")
    if mode == "P":
        image = Image.frombytes("P", image.size, array.tobytes())
        image.putpalette([channel for c in range(256) for channel in (c, 255 - c, (7 * c) % 256)])
    elif mode != "L":
        image = image.convert(mode)
    image.save(path)
    return path


def write_classes(path: Path, names: list[str]) -> Path:
    """The class table as the dataset converters write it."""
    path.write_text(classes_csv(names), encoding="utf-8")
    return path
