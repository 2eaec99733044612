"""Miniature copies of ADE20K, PASCAL-Context and COCO-Stuff, laid out as their official archives unpack.

What ``data.local`` points at in the paper-profile test (``test_paper_profile``):

* ``ade20k``: ``ADEChallengeData2016/{images,annotations}/{training,validation}/``
  (``ADE_train_*.jpg`` / ``.png``, 0 = other, k = class k - 1) and the class
  table ``objectInfo150.csv`` beside it (copied from ``tests/fixtures``);
* ``pascal_context``: ``VOCdevkit/VOC2010/{JPEGImages,ImageSets/Main}`` and
  ``trainval_merged.json`` (polygons over the 459-class ids, ``phase``);
* ``coco_stuff``: ``images/*.jpg``, ``annotations/*.mat`` (``S``: 182 ids, 0 =
  unlabelled) and ``imageLists/{train,test}.txt``.

Every image is a scene of three horizontal bands whose classes co-occur by a
fixed rule (so the statistics have supporters and opponents), with the bands'
colours plus noise as pixels. Deterministic for a seed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from pipeline.datasets import coco_stuff, pascal_context

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Per dataset: scenes, each three ids of the dataset's own numbering (top, middle, bottom band).
SCENES = {
    "ade20k": ((3, 1, 7), (3, 5, 10), (6, 4, 1), (3, 13, 12)),  # sky building road | sky tree grass | ...
    "pascal_context": ((360, 44, 324), (360, 420, 187), (68, 440, 158), (360, 259, 445)),
    "coco_stuff": ((157, 96, 149), (157, 169, 124), (112, 172, 115), (157, 135, 155)),
}


def scene(rng: np.random.Generator, ids: tuple[int, int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its (H, W) label map of three bands with the given ids; band borders vary."""
    height, width = size
    cuts = sorted(rng.integers(height // 5, height - height // 5, size=2))
    labels = np.empty((height, width), np.int64)
    labels[: cuts[0]], labels[cuts[0] : cuts[1]], labels[cuts[1] :] = ids
    colours = {k: np.array([(k * 37) % 256, (k * 91) % 256, (k * 53) % 256]) for k in ids}
    image = np.stack([colours[k] for k in labels.ravel()]).reshape(height, width, 3)
    noisy = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    return noisy, labels


def scenes(name: str, count: int, size: tuple[int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    choices = SCENES[name]
    return [scene(rng, choices[i % len(choices)], size) for i in range(count)]


def build_ade20k(root: Path, train: int, val: int, size: tuple[int, int]) -> Path:
    base = root / "ADEChallengeData2016"
    for split, folder, count in (("train", "training", train), ("val", "validation", val)):
        (base / "images" / folder).mkdir(parents=True)
        (base / "annotations" / folder).mkdir(parents=True)
        for i, (image, labels) in enumerate(scenes("ade20k", count, size, seed=len(split))):
            stem = f"ADE_{split}_{i + 1:08d}"
            Image.fromarray(image).save(base / "images" / folder / f"{stem}.jpg", quality=95)
            Image.fromarray(labels.astype(np.uint8), "L").save(base / "annotations" / folder / f"{stem}.png")
    shutil.copy(FIXTURES / "ade20k_sample" / "objectInfo150.csv", root / "objectInfo150.csv")
    return root


def polygons(labels: np.ndarray) -> list[tuple[int, list[list[float]]]]:
    """(id, polygon) per horizontal band of ``labels``, top to bottom (rectangles, COCO polygon coordinates)."""
    height, width = labels.shape
    bands, start = [], 0
    for row in range(1, height + 1):
        if row == height or labels[row, 0] != labels[start, 0]:
            bands.append((int(labels[start, 0]), [[0, start, width, start, width, row, 0, row]]))
            start = row
    return bands


def build_pascal_context(root: Path, train: int, val: int, size: tuple[int, int]) -> Path:
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    images, annotations, lists = [], [], {"train": [], "val": []}
    for split, count in (("train", train), ("val", val)):
        for image, labels in scenes("pascal_context", count, size, seed=len(split) + 10):
            stem = f"2008_{len(images) + 1:06d}"
            image_id = int(stem.replace("_", ""))
            Image.fromarray(image).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
            images.append(
                {"image_id": image_id, "file_name": f"{stem}.jpg", "height": size[0], "width": size[1], "phase": split}
            )
            for category, polygon in polygons(labels):
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "segmentation": polygon}
                )
            lists[split].append(stem)
    for split, stems in lists.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    categories = [{"category_id": k, "name": n} for k, n in pascal_context.CLASSES.items()]
    (root / "trainval_merged.json").write_text(
        json.dumps({"images": images, "categories": categories, "annos_segmentation": annotations})
    )
    return root


def build_coco_stuff(root: Path, train: int, val: int, size: tuple[int, int]) -> Path:
    for folder in ("images", "annotations", "imageLists"):
        (root / folder).mkdir(parents=True)
    names = np.array(coco_stuff.NAMES, dtype=object)
    offset = 0
    for split, list_file, count in (("train", "train.txt", train), ("val", "test.txt", val)):
        stems = []
        for image, labels in scenes("coco_stuff", count, size, seed=len(split) + 20):
            offset += 1
            stem = f"COCO_train2014_{offset:012d}"
            Image.fromarray(image).save(root / "images" / f"{stem}.jpg", quality=95)
            scipy.io.savemat(root / "annotations" / f"{stem}.mat", {"S": labels.astype(np.uint16), "names": names})
            stems.append(stem)
        (root / "imageLists" / list_file).write_text("".join(f"{s}\n" for s in stems))
    return root


BUILDERS = {"ade20k": build_ade20k, "pascal_context": build_pascal_context, "coco_stuff": build_coco_stuff}


def build_all(root: Path, train: int = 8, val: int = 4, size: tuple[int, int] = (48, 64)) -> dict[str, Path]:
    """The three miniatures under ``root/<name>``; what ``data.local`` maps each dataset to."""
    return {name: build(root / name, train, val, size) for name, build in BUILDERS.items()}
