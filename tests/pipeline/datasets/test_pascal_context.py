"""The PASCAL-Context converter on a miniature in the real formats: VOC2010 folders + a Detail-style JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.config import with_overrides
from pipeline.datasets import pascal_context
from pipeline.datasets.download import ARCHIVES, download_dataset
from pipeline.datasets.prepare import prepare_dataset
from pipeline.errors import DataError

X = 255
# mmsegmentation's 60-entry table (background 0 + the 59 ids), the reference our CLASSES must match
MMSEG_IDS = [
    0,
    2,
    259,
    260,
    415,
    324,
    9,
    258,
    144,
    18,
    19,
    22,
    23,
    397,
    25,
    284,
    158,
    159,
    416,
    33,
    162,
    420,
    454,
    295,
    296,
    427,
    44,
    45,
    46,
    308,
    59,
    440,
    445,
    31,
    232,
    65,
    354,
    424,
    68,
    326,
    72,
    458,
    34,
    207,
    80,
    355,
    85,
    347,
    220,
    349,
    360,
    98,
    187,
    104,
    105,
    366,
    189,
    368,
    113,
    115,
]


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as JSON stores it


def rect(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def write_miniature(
    root: Path, annotations: list[dict] | None = None, images: list[dict] | None = None
) -> tuple[Path, Path]:
    """VOCdevkit with three JPEGs and a train list naming one image the JSON lacks; the JSON beside it."""
    voc = root / "VOCtrainval_03-May-2010" / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, (h, w) in {"2008_000001": (5, 7), "2008_000002": (4, 6), "2008_000009": (3, 3)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{stem}.jpg")
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n2008_000009\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    categories = [{"category_id": k, "name": n} for k, n in {1: "accordion", **pascal_context.CLASSES}.items()]
    if images is None:
        images = [
            {"image_id": 2008000001, "file_name": "2008_000001.jpg", "height": 5, "width": 7, "phase": "train"},
            {"image_id": 2008000002, "file_name": "2008_000002.jpg", "height": 4, "width": 6, "phase": "val"},
        ]
    if annotations is None:
        annotations = [
            # image 1: aeroplane (id 2 -> 0) as compressed RLE on rows 0-1, columns 0-2 ...
            {
                "id": 1,
                "image_id": 2008000001,
                "category_id": 2,
                "segmentation": compressed_rle(rect(5, 7, slice(0, 2), slice(0, 3))),
            },
            # ... sky (id 360 -> 46) as a polygon: rows 1-2, columns 1-3 (painted later, so it wins the overlap) ...
            {"id": 2, "image_id": 2008000001, "category_id": 360, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            # ... accordion (id 1, not among the 59 -> 255) as uncompressed RLE over all of column 2.
            {
                "id": 3,
                "image_id": 2008000001,
                "category_id": 1,
                "segmentation": {"size": [5, 7], "counts": [10, 5, 20]},
            },
            # image 2: person (id 284 -> 36) at rows 1-3 of column 1, uncompressed RLE (column-major runs).
            {
                "id": 4,
                "image_id": 2008000002,
                "category_id": 284,
                "segmentation": {"size": [4, 6], "counts": [5, 3, 16]},
            },
        ]
    json_dir = root / "json"
    json_dir.mkdir()
    (json_dir / "trainval_merged.json").write_text(
        json.dumps({"images": images, "categories": categories, "annos_segmentation": annotations})
    )
    return root / "VOCtrainval_03-May-2010", json_dir / "trainval_merged.json"


def labels(out: Path, split: str, stem: str) -> np.ndarray:
    image = Image.open(out / split / "labels" / f"{stem}.png")
    assert image.mode == "L"
    return np.array(image)


def test_classes_match_the_standard_59_ids_in_order():
    assert sorted(pascal_context.CLASSES) == sorted(MMSEG_IDS[1:])
    assert list(pascal_context.CLASSES) == sorted(pascal_context.CLASSES)
    assert list(pascal_context.CLASSES.values()) == sorted(pascal_context.CLASSES.values())  # ids are alphabetical
    assert [list(pascal_context.CLASSES).index(k) for k in (2, 284, 360, 458)] == [0, 36, 46, 58]


def test_miniature_gives_exact_label_maps(tmp_path, capsys):
    voc, json_path = write_miniature(tmp_path / "src")
    out = tmp_path / "out"
    pascal_context.convert(voc, json_path, out, workers=1)
    np.testing.assert_array_equal(
        labels(out, "train", "2008_000001"),
        [
            [0, 0, X, X, X, X, X],
            [0, 46, X, 46, X, X, X],
            [X, 46, X, 46, X, X, X],
            [X, X, X, X, X, X, X],
            [X, X, X, X, X, X, X],
        ],
    )
    np.testing.assert_array_equal(
        labels(out, "val", "2008_000002"),
        [
            [X, X, X, X, X, X],
            [X, 36, X, X, X, X],
            [X, 36, X, X, X, X],
            [X, 36, X, X, X, X],
        ],
    )
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["2008_000001.jpg"]
    table = (out / "classes.csv").read_text().splitlines()
    assert len(table) == 60 and table[1] == "0,aeroplane" and table[47] == "46,sky" and table[59] == "58,wood"
    printed = capsys.readouterr().out
    assert (
        "pascal_context train: 1 images annotated in the JSON; VOC2010 train.txt lists 2, "
        "of which 1 have no Context annotation (2008_000009)" in printed
    )
    assert "pascal_context val: 1 images annotated in the JSON; VOC2010 val.txt lists 1\n" in printed


def test_prepare_reads_the_downloads_folder(params, tmp_path):
    downloads = Path(params.data.downloads) / "pascal_context"
    voc, json_path = write_miniature(downloads)
    json_path.rename(downloads / "trainval_merged.json")
    out = prepare_dataset(params, "pascal_context")
    assert labels(out, "val", "2008_000002")[2, 1] == 36


def ann(segmentation, category=2, image=2008000001) -> list[dict]:
    return [{"id": 1, "image_id": image, "category_id": category, "segmentation": segmentation}]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            ann({"size": [4, 7], "counts": [28]}),
            r"image 2008_000001\.jpg: mask size \[4, 7\] differs from the image's \[height, width\] \[5, 7\]",
        ),
        (ann({"size": [5, 7], "counts": "@@@@"}), r"image 2008_000001\.jpg: invalid mask"),
        (ann({"size": [5, 7], "counts": [35]}, category=999), r"annotation 1 has unknown category_id 999"),
        (ann(None), r"image 2008_000001\.jpg: unsupported segmentation"),
    ],
)
def test_bad_annotations_name_the_file(tmp_path, annotations, message):
    voc, json_path = write_miniature(tmp_path / "src", annotations=annotations)
    with pytest.raises(DataError, match=message):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)


def test_image_size_must_match_the_json(tmp_path):
    images = [
        {"image_id": 2008000001, "file_name": "2008_000001.jpg", "height": 7, "width": 5, "phase": "train"},
        {"image_id": 2008000002, "file_name": "2008_000002.jpg", "height": 4, "width": 6, "phase": "val"},
    ]
    voc, json_path = write_miniature(tmp_path / "src", annotations=[], images=images)
    message = r"2008_000001\.jpg: image is 7x5 but its label .*trainval_merged\.json image 2008_000001\.jpg is 5x7"
    with pytest.raises(DataError, match=message):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)


def test_missing_image_empty_split_and_bad_json(tmp_path):
    images = [{"image_id": 1, "file_name": "nowhere.jpg", "height": 2, "width": 2, "phase": "train"}]
    voc, json_path = write_miniature(tmp_path / "a", annotations=[], images=images)
    with pytest.raises(DataError, match=r"empty split: no image has phase 'val'"):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)
    images.append({"image_id": 2, "file_name": "2008_000002.jpg", "height": 4, "width": 6, "phase": "val"})
    voc, json_path = write_miniature(tmp_path / "b", annotations=[], images=images)
    with pytest.raises(DataError, match=r"nowhere\.jpg: image file not found"):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)
    json_path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"not a PASCAL in Detail annotation file \(bad or missing key 'categories'\)"):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)
    json_path.write_text("{not json")
    with pytest.raises(DataError, match=r"trainval_merged\.json: not valid JSON"):
        pascal_context.convert(voc, json_path, tmp_path / "out", workers=1)


def test_file_name_leaving_the_folder_is_refused_from_the_downloaded_archives(server, params, tmp_path, monkeypatch):
    images = [
        {"image_id": 2008000001, "file_name": "2008_000001.jpg", "height": 5, "width": 7, "phase": "train"},
        {"image_id": 7, "file_name": "../../../../../etc/passwd", "height": 4, "width": 6, "phase": "val"},
    ]
    voc, json_path = write_miniature(tmp_path / "src", annotations=[], images=images)
    with tarfile.open(tmp_path / "VOCtrainval_03-May-2010.tar", "w") as tf:  # the official layout: VOCdevkit/VOC2010/
        tf.add(voc / "VOCdevkit", arcname="VOCdevkit")
    served = {"VOC2010": tmp_path / "VOCtrainval_03-May-2010.tar", "trainval_merged": json_path}
    published = []
    for archive in ARCHIVES["pascal_context"]:  # the miniatures' checksums stand in for the published ones
        data = served[archive.key].read_bytes()
        server.files[f"m/{archive.filename}"] = data
        published.append(dataclasses.replace(archive, checksum=hashlib.new(archive.algorithm, data).hexdigest()))
    monkeypatch.setitem(ARCHIVES, "pascal_context", tuple(published))
    params = with_overrides(params, {"data.mirror": f"{server.base}/m"})
    download_dataset(params, "pascal_context")
    downloaded = Path(params.data.downloads) / "pascal_context" / "trainval_merged.json"
    jpegs = downloaded.parent / "VOCtrainval_03-May-2010" / "VOCdevkit" / "VOC2010" / "JPEGImages"
    leaves = rf"is not a file name \(a path; it would leave {jpegs}\)$"
    message = rf"^{downloaded}: image 7: file_name '(\.\./){{5}}etc/passwd' {leaves}"
    with pytest.raises(DataError, match=message):
        prepare_dataset(params, "pascal_context")
    assert not (Path(params.data.root) / "pascal_context").exists()
