"""COCO-Stuff-10k (v1.1) -> the canonical layout.

Source (``cocostuff-10k-v1.1.zip``): ``images/<stem>.jpg``,
``annotations/<stem>.mat`` and ``imageLists/{train,test}.txt`` (9,000 / 1,000
stems; ``test`` becomes our ``val``). Each ``.mat`` (MATLAB v5, read with
``scipy.io.loadmat``) holds ``S``, the (H, W) label map: 0 = unlabeled,
1..182 = the COCO-Stuff v1.1 ids (1..91 things as in COCO, 92..182 stuff),
plus ``names``, ``captions``, ``regionMapStuff`` and ``regionLabelsStuff``,
which are not needed here.

Labels: 0 -> 255; the 11 thing ids COCO never annotates (street sign, hat,
shoe, eyeglasses, plate, mirror, window, desk, door, blender, hairbrush) are
dropped (-> 255, should one ever appear); the remaining 171 ids become 0..170
in id order. A value above 182, or a non-integer, raises ``DataError``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import scipy.io

from pipeline.config import Params
from pipeline.datasets.common import apply_table, locate, lookup_table, make_layout, run_tasks, write_sample
from pipeline.datasets.download import source_paths
from pipeline.datasets.layout import SPLITS
from pipeline.errors import DataError

# COCO-Stuff v1.1 names, id = position + 1 (from the dataset's convertAnnotationsToVersion11.m and labels list).
THINGS = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "street sign",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "hat",
    "backpack",
    "umbrella",
    "shoe",
    "eye glasses",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "plate",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "mirror",
    "dining table",
    "window",
    "desk",
    "toilet",
    "door",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "blender",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "hair brush",
)
STUFF = (
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)
NAMES = THINGS + STUFF  # id k in 1..182 is NAMES[k - 1]
UNUSED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)  # thing ids without annotations in COCO
USED = tuple(k for k in range(1, len(NAMES) + 1) if k not in UNUSED)  # 171 ids -> classes 0..170
LIST_FILES = {"train": "train.txt", "val": "test.txt"}


def prepare(params: Params, out_dir: Path) -> None:
    """Convert the extracted ``cocostuff-10k-v1.1.zip`` into ``out_dir``."""
    convert(source_paths(params, "coco_stuff")["cocostuff-10k"], out_dir, params.data.workers)


def convert(root: Path, out_dir: Path, workers: int) -> None:
    """Convert the folder holding ``images/``, ``annotations/`` and ``imageLists/`` (or its single subfolder)."""
    base = locate(root, "imageLists")
    stems = {split: read_list(base / "imageLists" / LIST_FILES[split]) for split in SPLITS}
    make_layout(out_dir, [NAMES[k - 1] for k in USED])
    table = lookup_table({k: c for c, k in enumerate(USED)}, len(NAMES) + 1)
    for split in SPLITS:
        items = [(stem, base / "images" / f"{stem}.jpg", base / "annotations" / f"{stem}.mat") for stem in stems[split]]
        work = partial(convert_one, out_dir=out_dir, split=split, table=table)
        run_tasks(work, items, workers, f"coco_stuff {split}")


def read_list(path: Path) -> list[str]:
    """The image stems of an ``imageLists`` file, one a line.

    A missing or empty list, or a stem that is a path (``../../etc/passwd`` would be
    read from outside ``images/`` and ``annotations/``), raises ``DataError``.
    """
    if not path.is_file():
        raise DataError(f"{path}: image list not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the image list ({err})") from None
    stems = []
    for number, line in enumerate(text.splitlines(), start=1):
        stem = line.strip()
        if not stem:
            continue
        if "/" in stem or "\\" in stem or stem in (".", "..") or "\x00" in stem:
            raise DataError(f"{path}: line {number}: {stem!r} is not an image stem (a path; it would leave images/)")
        stems.append(stem)
    if not stems:
        raise DataError(f"{path}: empty split: the list names no image")
    return stems


def convert_one(item: tuple[str, Path, Path], out_dir: Path, split: str, table: np.ndarray) -> None:
    """Read ``S`` from the ``.mat``, map 182 ids -> 171 classes (0 and unused -> 255), write image and label."""
    stem, image, mat = item
    label = apply_table(read_label_mat(mat), table, str(mat))
    write_sample(out_dir, split, stem, image, label, str(mat))


def read_label_mat(path: Path) -> np.ndarray:
    """The (H, W) label map ``S`` of a COCO-Stuff ``.mat`` file."""
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        content = scipy.io.loadmat(path, variable_names=["S"])
    except NotImplementedError:  # scipy's message for MATLAB v7.3 (HDF5) files
        raise DataError(f"{path}: MATLAB v7.3 file; COCO-Stuff-10k v1.1 ships v5 files (wrong archive?)") from None
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as err:
        raise DataError(f"{path}: unreadable .mat file ({err})") from None
    labels = content.get("S")
    if labels is None or labels.ndim != 2:
        raise DataError(f"{path}: no 2-D label map 'S' (keys: {sorted(name for name, *_ in scipy.io.whosmat(path))})")
    return labels
