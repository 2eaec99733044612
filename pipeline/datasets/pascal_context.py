"""PASCAL-Context (59 classes) -> the canonical layout, decoded without the ``detail`` package.

Sources: the VOC2010 images (``VOCdevkit/VOC2010/JPEGImages/*.jpg``) and
``trainval_merged.json``, the PASCAL in Detail annotation file. Its structure
(as read by the ``detail`` API): ``images`` = [{image_id, file_name, height,
width, phase: "train" | "val"}], ``categories`` = [{category_id, name, ...}] (the
459 PASCAL-Context classes), ``annos_segmentation`` = [{id, image_id,
category_id, segmentation, ...}] where ``segmentation`` is a COCO mask:
compressed RLE ``{size: [h, w], counts: str}`` (what the file holds),
uncompressed RLE (``counts`` a list) or polygons; pycocotools decodes all three.

Label map of an image: start from 0 (background), paint each annotation's mask
with its ``category_id`` in file order (a later one wins where masks overlap),
exactly as ``Detail.getMask`` does. Then the 459 -> 59 mapping: the 59 benchmark
classes (``CLASSES``, sorted by id, which is also alphabetical) become 0..58;
background and the other 400 classes become 255 (the "59-class" setting that
ignores background, as in the paper; mmsegmentation's "PascalContext59").

Split: the JSON's ``phase``. The paper quotes 4,998 train / 5,105 val (the
VOC2010 ``ImageSets/Main`` lists, used by the CVPR 2017 challenge); the public
``trainval_merged.json`` annotates 4,996 / 5,104 -- the organisers changed the
splits slightly after that challenge (PyTorch-Encoding issue #155), and
mmsegmentation's converter yields the same 4,996 / 5,104. Images the JSON does
not annotate have no labels, so they cannot be used: the converter prints each
split's count and, when the VOC2010 lists are present, which listed images the
JSON lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.config import Params
from pipeline.datasets.common import apply_table, locate, lookup_table, make_layout, run_tasks, write_sample
from pipeline.datasets.download import source_paths
from pipeline.datasets.layout import SPLITS
from pipeline.errors import DataError

# The 59 benchmark classes: id in the 459-class set -> name.
CLASSES: dict[int, str] = {
    2: "aeroplane",
    9: "bag",
    18: "bed",
    19: "bedclothes",
    22: "bench",
    23: "bicycle",
    25: "bird",
    31: "boat",
    33: "book",
    34: "bottle",
    44: "building",
    45: "bus",
    46: "cabinet",
    59: "car",
    65: "cat",
    68: "ceiling",
    72: "chair",
    80: "cloth",
    85: "computer",
    98: "cow",
    104: "cup",
    105: "curtain",
    113: "dog",
    115: "door",
    144: "fence",
    158: "floor",
    159: "flower",
    162: "food",
    187: "grass",
    189: "ground",
    207: "horse",
    220: "keyboard",
    232: "light",
    258: "motorbike",
    259: "mountain",
    260: "mouse",
    284: "person",
    295: "plate",
    296: "platform",
    308: "pottedplant",
    324: "road",
    326: "rock",
    347: "sheep",
    349: "shelves",
    354: "sidewalk",
    355: "sign",
    360: "sky",
    366: "snow",
    368: "sofa",
    397: "table",
    415: "track",
    416: "train",
    420: "tree",
    424: "truck",
    427: "tvmonitor",
    440: "wall",
    445: "water",
    454: "window",
    458: "wood",
}


@dataclass(frozen=True)
class Sample:
    """One image of the JSON with its annotations, in file order."""

    split: str
    image: Path
    height: int
    width: int
    segments: tuple[tuple[int, object], ...]  # (category_id, segmentation)
    source: str  # "<json> image <file_name>", for error messages


def prepare(params: Params, out_dir: Path) -> None:
    """Convert the extracted VOC2010 tar and ``trainval_merged.json`` into ``out_dir``."""
    sources = source_paths(params, "pascal_context")
    convert(sources["VOC2010"], sources["trainval_merged"], out_dir, params.data.workers)


def convert(voc_root: Path, json_path: Path, out_dir: Path, workers: int) -> None:
    """Convert ``VOCdevkit/VOC2010`` (found under ``voc_root``) with the annotations of ``json_path``."""
    voc = locate(voc_root, "VOCdevkit") / "VOCdevkit" / "VOC2010"
    samples, table = read_annotations(json_path, voc / "JPEGImages")
    make_layout(out_dir, list(CLASSES.values()))
    splits = {split: [s for s in samples if s.split == split] for split in SPLITS}
    for split, chosen in splits.items():
        if not chosen:
            raise DataError(f"{json_path}: empty split: no image has phase {split!r}")
    for split, chosen in splits.items():
        report_split(split, chosen, voc / "ImageSets" / "Main" / f"{split}.txt")
        run_tasks(partial(convert_one, out_dir=out_dir, table=table), chosen, workers, f"pascal_context {split}")


def read_annotations(json_path: Path, images: Path) -> tuple[list[Sample], np.ndarray]:
    """The samples of ``json_path`` and the 459 -> 59 lookup table, checked against the file's categories."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        known = {int(c["category_id"]) for c in data["categories"]}
        by_image: dict[int, list[tuple[int, object]]] = {}
        for ann in data["annos_segmentation"]:
            if int(ann["category_id"]) not in known:
                raise DataError(f"{json_path}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            by_image.setdefault(int(ann["image_id"]), []).append((int(ann["category_id"]), ann["segmentation"]))
        samples = []
        for img in data["images"]:
            name = img["file_name"]
            if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") or "\x00" in name:
                raise DataError(
                    f"{json_path}: image {img.get('image_id')}: file_name {name!r} is not a file name "
                    f"(a path; it would leave {images})"
                )
            samples.append(
                Sample(
                    split=img["phase"],
                    image=images / name,
                    height=int(img["height"]),
                    width=int(img["width"]),
                    segments=tuple(by_image.get(int(img["image_id"]), ())),
                    source=f"{json_path} image {name}",
                )
            )
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{json_path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{json_path}: not a PASCAL in Detail annotation file (bad or missing key {err})") from None
    missing = sorted(set(CLASSES) - known)
    if missing:
        raise DataError(f"{json_path}: categories lack the PASCAL-Context class ids {missing}")
    table = lookup_table({cid: k for k, cid in enumerate(sorted(CLASSES))}, max(known) + 1)
    return samples, table


def report_split(split: str, samples: list[Sample], voc_list: Path) -> None:
    """Print the split's size and, when the VOC2010 list exists, the listed images the JSON does not annotate."""
    line = f"pascal_context {split}: {len(samples)} images annotated in the JSON"
    if voc_list.is_file():
        listed = voc_list.read_text(encoding="utf-8").split()
        missing = sorted(set(listed) - {s.image.stem for s in samples})
        line += f"; VOC2010 {voc_list.name} lists {len(listed)}"
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            line += f", of which {len(missing)} have no Context annotation ({shown})"
    print(line)


def convert_one(sample: Sample, out_dir: Path, table: np.ndarray) -> None:
    """Paint the sample's masks in order, map 459 -> 59 (others -> 255), write image and label."""
    raw = np.zeros((sample.height, sample.width), dtype=np.int64)  # (H, W) 459-class ids, 0 = background
    for category, segmentation in sample.segments:
        raw[decode(segmentation, sample.height, sample.width, sample.source) > 0] = category
    label = apply_table(raw, table, sample.source)
    write_sample(out_dir, sample.split, sample.image.stem, sample.image, label, sample.source)


def decode(segmentation: object, height: int, width: int, source: str) -> np.ndarray:
    """A (H, W) binary mask from compressed RLE, uncompressed RLE or polygons (COCO conventions)."""
    try:
        if isinstance(segmentation, dict):
            size = [int(v) for v in segmentation["size"]]
            if size != [height, width]:
                shape = [height, width]
                raise DataError(f"{source}: mask size {size} differs from the image's [height, width] {shape}")
            counts = segmentation["counts"]
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        elif isinstance(segmentation, list) and segmentation:
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        else:
            raise DataError(f"{source}: unsupported segmentation {str(segmentation)[:60]!r}")
        return mask_utils.decode(rle)  # (H, W) uint8
    except (KeyError, TypeError, ValueError, UnicodeEncodeError) as err:
        raise DataError(f"{source}: invalid mask ({err})") from None
