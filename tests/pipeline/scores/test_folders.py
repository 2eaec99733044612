"""`grar evaluate` end to end on PNG folders, with scores computed by hand, and every error case."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.cli.main import main

NAMES = ["background", "wall", "door", "lamp"]
# Two label maps of different sizes; 255 = ignore. "lamp" (3) is predicted only
# on an ignored pixel, so it is absent from both and gets null.
GT = {
    "a": [[0, 0, 1], [0, 1, 1], [255, 2, 2]],
    "b": [[2, 2, 255, 0, 1]],
}
PRED = {
    "a": [[0, 1, 1], [0, 1, 1], [3, 2, 0]],
    "b": [[2, 0, 2, 0, 1]],
}
# Confusion matrix (rows GT, columns prediction) over the 12 labelled pixels:
#   background: 3 x background, 1 x wall    -> 4 pixels
#   wall:       4 x wall                    -> 4 pixels
#   door:       2 x door, 2 x background    -> 4 pixels
# Prediction totals: background 5, wall 5, door 2.
EXPECTED = {
    "miou": (3 / 6 + 4 / 5 + 2 / 4) / 3,
    "pixel_accuracy": 9 / 12,
    "mean_accuracy": (3 / 4 + 4 / 4 + 2 / 4) / 3,
    "num_classes": 4,
    "num_classes_present": 3,
    "num_pixels": 12,
    "per_class_iou": {"background": 3 / 6, "wall": 4 / 5, "door": 2 / 4, "lamp": None},
    "num_images": 2,
    "ignore_index": 255,
}


def save(path, rows, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(rows, dtype=np.uint8)).convert(mode).save(path)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """pred/ and gt/ folders of PNGs and a classes.csv, in a working folder without params.yaml."""
    monkeypatch.chdir(tmp_path)
    for stem in GT:
        save(tmp_path / "gt" / f"{stem}.png", GT[stem])
        save(tmp_path / "pred" / f"{stem}.png", PRED[stem])
    (tmp_path / "classes.csv").write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(NAMES)))
    return tmp_path


def evaluate(*extra):
    return main(["evaluate", "--pred", "pred", "--gt", "gt", "--num-classes", "4", "--json", "out.json", *extra])


def test_scores_by_hand(folders, capsys):
    assert evaluate("--classes", "classes.csv") == 0
    assert json.loads((folders / "out.json").read_text()) == EXPECTED
    out = capsys.readouterr().out
    assert "mIoU             60.00 %" in out
    assert "pixel accuracy   75.00 %" in out
    assert "classes scored     3 / 4" in out
    assert "lamp" not in out  # per-class lines only with --per-class


def test_ids_as_names_palette_images_and_per_class_table(folders, capsys):
    image = Image.fromarray(np.array(PRED["a"], dtype=np.uint8), mode="L").convert("P")
    image.save(folders / "pred" / "a.png")  # palette PNGs hold the same indices
    assert evaluate("--per-class") == 0
    result = json.loads((folders / "out.json").read_text())
    assert result["per_class_iou"] == {"0": 0.5, "1": 0.8, "2": 0.5, "3": None}
    assert result["miou"] == EXPECTED["miou"]
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["class", "IoU", "%"] in rows and ["1", "80.00"] in rows and ["3", "n/a"] in rows


def test_without_json_only_prints(folders, capsys):
    assert main(["evaluate", "--pred", "pred", "--gt", "gt", "--num-classes", "4"]) == 0
    assert "mIoU" in capsys.readouterr().out
    assert not (folders / "out.json").exists()


def rewrite(path, rows, mode="L"):
    return lambda root: save(root / path, rows, mode)


@pytest.mark.parametrize(
    ("change", "named", "message"),
    [
        (lambda root: (root / "pred" / "b.png").unlink(), "pred/b.png", "missing prediction for 1 label map(s)"),
        (rewrite("pred/c.png", [[0]]), "pred/c.png", "1 prediction(s) without a label map in gt"),
        (rewrite("pred/b.png", [[2, 0, 2, 0]]), "pred/b.png", "size 4x1 differs from gt/b.png (5x1, width x height)"),
        (rewrite("pred/a.png", PRED["a"], "RGB"), "pred/a.png", "mode 'RGB'; expected a single-channel index image"),
        (rewrite("pred/a.png", PRED["a"], "I;16"), "pred/a.png", "mode 'I;16'"),
        (lambda root: (root / "pred" / "a.png").write_bytes(b"\x89PNG broken"), "pred/a.png", "unreadable label image"),
        (rewrite("pred/b.png", [[2, 0, 4, 0, 1]]), "pred/b.png", "prediction value 4 out of range"),
        (
            rewrite("gt/a.png", [[0, 0, 1], [0, 9, 1], [255, 2, 2]]),
            "gt/a.png",
            "ground truth value 9 out of range: expected a class id 0..3 or the ignore index 255",
        ),
        (
            lambda root: (root / "classes.csv").write_text("id,name\n0,a\n1,b\n"),
            "classes.csv",
            "class table has 2 classes but the labels have 4",
        ),
        (
            lambda root: (root / "classes.csv").write_text("id,name\n0,a\n1,b\n2,a\n3,d\n"),
            "classes.csv",
            "duplicate class names: a",
        ),
        (
            lambda root: (root / "classes.csv").write_text("id,name\n0,a\n2,b\n1,c\n3,d\n"),
            "classes.csv",
            "row 3: id '2', expected 1",
        ),
    ],
    ids=[
        "missing",
        "extra",
        "size",
        "colour",
        "16-bit",
        "unreadable",
        "pred-value",
        "gt-value",
        "csv-count",
        "csv-duplicate",
        "csv-order",
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(folders, capsys, change, named, message):
    previous = json.dumps({"miou": 0.5, "num_images": 2, "per_class_iou": {}})  # an earlier output of ours
    (folders / "out.json").write_text(previous)
    change(folders)
    assert evaluate("--classes", "classes.csv") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # after the progress bar
    assert last.startswith("grar: error: ") and named in last and message in last, err
    assert (folders / "out.json").read_text() == previous
    assert sorted(p.name for p in folders.iterdir()) == ["classes.csv", "gt", "out.json", "pred"]


def test_a_json_of_someone_elses_is_kept(folders, capsys):
    (folders / "out.json").write_text("my notes")
    assert evaluate("--classes", "classes.csv") == 2
    assert (
        capsys.readouterr().err
        == "grar: error: --json out.json: exists and was not written by grar; choose another path\n"
    )
    assert (folders / "out.json").read_text() == "my notes"


def test_bad_arguments(folders, capsys):
    assert main(["evaluate", "--pred", "nope", "--gt", "gt", "--num-classes", "4"]) == 1
    assert "--pred nope: no such folder" in capsys.readouterr().err
    assert evaluate("--ignore-index", "2") == 2
    assert "--ignore-index 2: ignore index 2 is a class id (0..3)" in capsys.readouterr().err
    for stem in GT:
        save(folders / "gt" / f"{stem}.png", np.full_like(np.array(GT[stem]), 255))
    assert evaluate() == 1
    assert "every pixel is the ignore index 255" in capsys.readouterr().err
    assert not (folders / "out.json").exists()


def test_help_works_without_params(folders, capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--help"])
    assert info.value.code == 0
    assert "--num-classes K" in capsys.readouterr().out
