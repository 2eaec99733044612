"""ADE20K (SceneParsing / ADEChallengeData2016) -> the canonical layout.

Source: ``ADEChallengeData2016/{images,annotations}/{training,validation}/``
(20,210 / 2,000 images; ``.jpg`` images, 8-bit ``.png`` labels) and the class
table ``objectInfo150.txt`` (tab-separated, official archive) or
``objectInfo150.csv`` (the sceneparsing repository's copy).

Labels: 0 ("other objects", not evaluated) -> 255; k -> k - 1, so the 150
classes become 0..149. A value above 150 raises ``DataError``.

Class names (``NAMES``): the first synonym of each entry of the official
``objectInfo150.txt`` ("person, individual, someone, ..." -> "person",
"chest of drawers, chest, bureau, dresser" -> "chest of drawers"): short enough
to label both axes of a 150-class heatmap, and unique. The CSV copy cannot give
them (it turned every space and comma into ';': "screen;door;screen"), so the
names are fixed here and the archive's table, whichever format, is only checked
against them: a table that disagrees raises ``DataError``.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.datasets.common import apply_table, locate, lookup_table, make_layout, pair_files, run_tasks, write_sample
from pipeline.datasets.download import source_paths
from pipeline.datasets.layout import read_label_png
from pipeline.errors import DataError

SPLIT_FOLDERS = {"train": "training", "val": "validation"}
CLASS_TABLES = ("objectInfo150.txt", "objectInfo150.csv")
NAMES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)  # class k - 1 of the archive's id k


def prepare(params: Params, out_dir: Path) -> None:
    """Convert the extracted ``ADEChallengeData2016.zip`` into ``out_dir``."""
    convert(source_paths(params, "ade20k")["ADEChallengeData2016"], out_dir, params.data.workers)


def convert(root: Path, out_dir: Path, workers: int) -> None:
    """Convert the folder holding ``ADEChallengeData2016/`` (and maybe ``objectInfo150.csv``) into ``out_dir``."""
    base = locate(root, "ADEChallengeData2016") / "ADEChallengeData2016"
    check_class_table(find_class_table(base, root))
    make_layout(out_dir, NAMES)
    table = lookup_table({k: k - 1 for k in range(1, len(NAMES) + 1)}, len(NAMES) + 1)
    pairs = {
        split: pair_files(base / "images" / folder, base / "annotations" / folder, ".jpg", ".png")
        for split, folder in SPLIT_FOLDERS.items()
    }
    for split, items in pairs.items():
        run_tasks(partial(convert_one, out_dir=out_dir, split=split, table=table), items, workers, f"ade20k {split}")


def convert_one(pair: tuple[str, Path, Path], out_dir: Path, split: str, table: np.ndarray) -> None:
    """One image and label: 0 -> 255, k -> k - 1."""
    stem, image, label_path = pair
    label = apply_table(read_label_png(label_path), table, str(label_path))
    write_sample(out_dir, split, stem, image, label, str(label_path))


def find_class_table(*folders: Path) -> Path:
    """The first ``objectInfo150.txt`` / ``.csv`` in ``folders``."""
    for folder in folders:
        for name in CLASS_TABLES:
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"class table {' or '.join(CLASS_TABLES)} not found in {', '.join(map(str, folders))}")


def check_class_table(path: Path) -> None:
    """Check ``objectInfo150.{txt,csv}`` against ``NAMES``: ids 1..150 in order, each entry led by its name."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = [(row.get("Idx") or "", (row.get("Name") or "").split(";")) for row in csv.DictReader(text.splitlines())]
    else:
        lines = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
        rows = [(fields[0], fields[-1].split(",")[0].split()) for fields in lines]
    ids = [idx.strip() for idx, _ in rows if idx.strip()]
    if ids != [str(k) for k in range(1, len(NAMES) + 1)]:
        raise DataError(f"{path}: expected Idx 1..{len(NAMES)} in order, got {len(ids)} rows starting {ids[:3]}")
    for k, (name, (_, words)) in enumerate(zip(NAMES, rows), start=1):
        if words[: len(name.split())] != name.split():
            raise DataError(f"{path}: class {k} is {' '.join(words)!r}, expected it to start with {name!r}")
