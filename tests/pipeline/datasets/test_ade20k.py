"""The ADE20K converter on the real fixture (3 validation images), and its bad-input errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import ade20k
from pipeline.datasets.prepare import prepare_dataset
from pipeline.errors import DataError
from pipeline.paths import dataset_dir

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ade20k_sample"
STEMS = ("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003")


def install_fixture(params) -> Path:
    """The fixture as an extracted download; its validation images double as a 3-image training split."""
    root = Path(params.data.downloads) / "ade20k" / "ADEChallengeData2016"
    shutil.copytree(FIXTURE, root)
    base = root / "ADEChallengeData2016"
    for kind, suffix in (("images", ".jpg"), ("annotations", ".png")):
        (base / kind / "training").mkdir()
        for stem in STEMS:
            training = base / kind / "training" / f"{stem.replace('val', 'train')}{suffix}"
            shutil.copy(base / kind / "validation" / f"{stem}{suffix}", training)
    return base


def original(stem: str) -> np.ndarray:
    return np.array(Image.open(FIXTURE / "ADEChallengeData2016" / "annotations" / "validation" / f"{stem}.png"))


def test_fixture_labels_are_shifted_by_one_with_zero_ignored(params):
    install_fixture(params)
    out = prepare_dataset(params, "ade20k")
    assert out == dataset_dir(params, "ade20k")
    for stem in STEMS:
        source = original(stem)
        label = Image.open(out / "val" / "labels" / f"{stem}.png")
        assert label.mode == "L"
        expected = np.where(source == 0, 255, source.astype(np.int64) - 1)
        np.testing.assert_array_equal(np.array(label), expected)
        assert (out / "val" / "images" / f"{stem}.jpg").read_bytes() == (
            FIXTURE / "ADEChallengeData2016" / "images" / "validation" / f"{stem}.jpg"
        ).read_bytes()
    # a hand-checked pixel: ADE_val_00000003 holds class 103 (van) somewhere, which becomes 102
    assert (original("ADE_val_00000003") == 103).any()
    assert (np.array(Image.open(out / "val" / "labels" / "ADE_val_00000003.png")) == 102).any()
    assert sorted(p.name for p in (out / "train" / "labels").iterdir()) == [
        "ADE_train_00000001.png",
        "ADE_train_00000002.png",
        "ADE_train_00000003.png",
    ]


def test_class_table_has_150_named_rows(params):
    install_fixture(params)
    lines = (prepare_dataset(params, "ade20k") / "classes.csv").read_text().splitlines()
    assert lines[0] == "id,name" and len(lines) == 151
    assert lines[1:4] == ["0,wall", "1,building", "2,sky"]
    assert lines[45] == "44,chest of drawers" and lines[150] == "149,flag"
    assert len(set(ade20k.NAMES)) == 150


def test_two_workers_give_the_same_labels(params, tmp_path):
    base = install_fixture(params)
    ade20k.convert(base.parent, tmp_path / "one", workers=1)
    ade20k.convert(base.parent, tmp_path / "two", workers=2)
    written = sorted((tmp_path / "one").rglob("*.png"))
    assert len(written) == 6
    for path in written:
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()
    message = break_value(base)  # an error inside a worker process reaches the caller intact
    with pytest.raises(DataError, match=message):
        ade20k.convert(base.parent, tmp_path / "three", workers=2)


def write_label(path: Path, array: np.ndarray, mode: str = "L") -> None:
    Image.fromarray(array.astype(np.uint8)).convert(mode).save(path)


def break_value(base: Path) -> str:
    path = base / "annotations" / "validation" / "ADE_val_00000002.png"
    label = original("ADE_val_00000002")
    label[3, 5] = 151
    write_label(path, label)
    return rf"{path}: label value 151 out of range 0\.\.150"


def break_colour(base: Path) -> str:
    path = base / "annotations" / "validation" / "ADE_val_00000002.png"
    write_label(path, original("ADE_val_00000002"), mode="RGB")
    return rf"{path}: label image has mode 'RGB'"


def break_truncated(base: Path) -> str:
    path = base / "annotations" / "validation" / "ADE_val_00000002.png"
    path.write_bytes(path.read_bytes()[:200])
    return rf"{path}: unreadable label image"


def break_size(base: Path) -> str:
    path = base / "annotations" / "validation" / "ADE_val_00000002.png"
    write_label(path, original("ADE_val_00000002")[:-1])
    image = base / "images" / "validation" / "ADE_val_00000002.jpg"
    return rf"{image}: image is 500x364 but its label {path} is 500x363"


def break_missing_label(base: Path) -> str:
    (base / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    return r"ADE_val_00000002\.jpg: image without a label"


def break_empty_split(base: Path) -> str:
    for path in (base / "images" / "validation").iterdir():
        path.unlink()
    for path in (base / "annotations" / "validation").iterdir():
        path.unlink()
    return r"images/validation: empty split"


def break_class_table(base: Path) -> str:
    table = base.parent / "objectInfo150.csv"
    table.write_text(table.read_text().replace("1,wall", "1,ceiling"))
    return r"objectInfo150\.csv: class 1 is 'ceiling', expected it to start with 'wall'"


@pytest.mark.parametrize(
    "breaker",
    [break_value, break_colour, break_truncated, break_size, break_missing_label, break_empty_split, break_class_table],
)
def test_bad_input_names_the_file_and_leaves_the_previous_version(params, breaker):
    base = install_fixture(params)
    out = prepare_dataset(params, "ade20k")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    message = breaker(base)
    with pytest.raises(DataError, match=message):
        prepare_dataset(params, "ade20k")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old dataset is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["ade20k"]  # no temporary folder left behind


def test_failure_on_first_prepare_leaves_nothing(params):
    base = install_fixture(params)
    break_value(base)
    with pytest.raises(DataError):
        prepare_dataset(params, "ade20k")
    root = Path(params.data.root)
    assert not root.exists() or list(root.iterdir()) == []
