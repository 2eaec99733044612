"""The COCO-Stuff-10k converter on a miniature in the real format: .mat label maps and imageLists."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from pipeline.config import with_overrides
from pipeline.datasets import coco_stuff
from pipeline.datasets.download import download_dataset
from pipeline.datasets.prepare import prepare_dataset
from pipeline.errors import DataError

X = 255
TRAIN = "COCO_train2014_000000000077"
VAL = "COCO_train2014_000000000078"
# v1.1 ids: 0 unlabeled, 1 person, 11 fire hydrant, 12 street sign (unused), 13 stop sign, 91 hair brush (unused),
# 92 banner (first stuff), 182 wood (last)
S_TRAIN = np.array(
    [
        [0, 1, 11, 12, 13],
        [92, 182, 1, 0, 91],
        [13, 13, 92, 182, 0],
    ],
    dtype=np.uint16,
)
# 0 -> 255; used ids keep their order: 1 -> 0, 11 -> 10, 13 -> 11 (12 is dropped), 92 -> 80 (91 - 11 unused
# ids below it), 182 -> 170; the unused 12 and 91 -> 255
EXPECTED_TRAIN = [
    [X, 0, 10, X, 11],
    [80, 170, 0, X, X],
    [11, 11, 80, 170, X],
]


def write_miniature(root: Path, s_train: np.ndarray = S_TRAIN, grey_val: bool = False) -> Path:
    """The layout of the unzipped archive: images/, annotations/ (.mat v5), imageLists/."""
    for folder in ("images", "annotations", "imageLists"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)).save(root / "images" / f"{TRAIN}.jpg")
    val_image = rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    Image.fromarray(val_image).convert("L" if grey_val else "RGB").save(root / "images" / f"{VAL}.jpg")
    names = np.array(coco_stuff.NAMES, dtype=object)
    scipy.io.savemat(root / "annotations" / f"{TRAIN}.mat", {"S": s_train, "names": names, "captions": ["a cat"]})
    scipy.io.savemat(
        root / "annotations" / f"{VAL}.mat", {"S": np.array([[182.0, 0, 1], [150, 150, 92]]), "names": names}
    )
    (root / "imageLists" / "train.txt").write_text(f"{TRAIN}\n")
    (root / "imageLists" / "test.txt").write_text(f"{VAL}\n")
    return root


def labels(out: Path, split: str, stem: str) -> np.ndarray:
    image = Image.open(out / split / "labels" / f"{stem}.png")
    assert image.mode == "L"
    return np.array(image)


def test_names_and_the_171_classes():
    assert len(coco_stuff.NAMES) == 182 and len(coco_stuff.USED) == 171
    assert [coco_stuff.NAMES[k - 1] for k in coco_stuff.UNUSED] == [
        "street sign",
        "hat",
        "shoe",
        "eye glasses",
        "plate",
        "mirror",
        "window",
        "desk",
        "door",
        "blender",
        "hair brush",
    ]
    used = [coco_stuff.NAMES[k - 1] for k in coco_stuff.USED]
    assert len(set(used)) == 171 and used[:3] == ["person", "bicycle", "car"] and used[80] == "banner"


def test_miniature_gives_exact_label_maps(tmp_path):
    out = tmp_path / "out"
    coco_stuff.convert(write_miniature(tmp_path / "src"), out, workers=1)
    np.testing.assert_array_equal(labels(out, "train", TRAIN), EXPECTED_TRAIN)
    # a double-typed S (as MATLAB saves it) with integer values: 182 -> 170, 150 (rock) -> 138, 92 -> 80
    np.testing.assert_array_equal(labels(out, "val", VAL), [[170, X, 0], [138, 138, 80]])
    copied = out / "train" / "images" / f"{TRAIN}.jpg"
    assert copied.read_bytes() == (tmp_path / "src" / "images" / f"{TRAIN}.jpg").read_bytes()
    table = (out / "classes.csv").read_text().splitlines()
    assert len(table) == 172 and table[1] == "0,person" and table[81] == "80,banner" and table[171] == "170,wood"


def test_grey_image_becomes_rgb_png(tmp_path):
    out = tmp_path / "out"
    coco_stuff.convert(write_miniature(tmp_path / "src", grey_val=True), out, workers=1)
    assert sorted(p.name for p in (out / "val" / "images").iterdir()) == [f"{VAL}.png"]
    assert Image.open(out / "val" / "images" / f"{VAL}.png").mode == "RGB"


def test_archive_with_a_top_folder_is_found_through_prepare(params):
    extracted = Path(params.data.downloads) / "coco_stuff" / "cocostuff-10k-v1.1"
    write_miniature(extracted / "nested")
    out = prepare_dataset(params, "coco_stuff")
    np.testing.assert_array_equal(labels(out, "train", TRAIN), EXPECTED_TRAIN)


@pytest.mark.parametrize(
    ("value", "message"),
    [(183, r"label value 183 out of range 0\.\.182"), (1.5, r"label value 1\.5 is not an integer")],
)
def test_bad_values_name_the_file(tmp_path, value, message):
    s = S_TRAIN.astype(np.float64)
    s[2, 4] = value
    root = write_miniature(tmp_path / "src", s_train=s)
    with pytest.raises(DataError, match=rf"{TRAIN}\.mat: {message}"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)


def test_bad_files_name_the_file(tmp_path):
    root = write_miniature(tmp_path / "src")
    scipy.io.savemat(root / "annotations" / f"{TRAIN}.mat", {"labels": S_TRAIN})
    with pytest.raises(DataError, match=rf"{TRAIN}\.mat: no 2-D label map 'S' \(keys: \['labels'\]\)"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)
    scipy.io.savemat(root / "annotations" / f"{TRAIN}.mat", {"S": S_TRAIN[:, :4]})
    with pytest.raises(DataError, match=rf"{TRAIN}\.jpg: image is 5x3 but its label .*{TRAIN}\.mat is 4x3"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)
    (root / "annotations" / f"{TRAIN}.mat").write_bytes(b"MATLAB junk")
    with pytest.raises(DataError, match=rf"{TRAIN}\.mat: unreadable \.mat file"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)
    (root / "annotations" / f"{TRAIN}.mat").unlink()
    with pytest.raises(DataError, match=rf"{TRAIN}\.mat: label file not found"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)
    (root / "imageLists" / "test.txt").write_text("\n")
    with pytest.raises(DataError, match=r"test\.txt: empty split"):
        coco_stuff.convert(root, tmp_path / "out", workers=1)


def test_list_entry_leaving_the_folder_is_refused_from_the_downloaded_archive(server, params, tmp_path):
    root = write_miniature(tmp_path / "src")
    (root / "imageLists" / "train.txt").write_text(f"{TRAIN}\n../../../../etc/passwd\n")
    with zipfile.ZipFile(tmp_path / "cocostuff-10k-v1.1.zip", "w") as zf:  # the official layout, no top folder
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root).as_posix())
    server.files["m/cocostuff-10k-v1.1.zip"] = (tmp_path / "cocostuff-10k-v1.1.zip").read_bytes()
    params = with_overrides(params, {"data.mirror": f"{server.base}/m"})
    download_dataset(params, "coco_stuff")
    listed = Path(params.data.downloads) / "coco_stuff" / "cocostuff-10k-v1.1" / "imageLists" / "train.txt"
    message = rf"^{listed}: line 2: '(\.\./){{4}}etc/passwd' is not an image stem \(a path; it would leave images/\)$"
    with pytest.raises(DataError, match=message):
        prepare_dataset(params, "coco_stuff")
    assert not (Path(params.data.root) / "coco_stuff").exists()
