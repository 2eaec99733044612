"""`grar stats` (NAME and --labels modes) and the DVC stage: outputs, exit codes, one-line errors."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from PIL import Image
from stats_toy import NAMES, write_classes, write_label

from pipeline.cli.main import main
from pipeline.stats.files import read_metadata


def test_labels_mode(toy_labels, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["stats", "--labels", str(toy_labels), "--num-classes", "5", "--out", str(out), "--workers", "1"]) == 0
    assert "4 images, 5 classes, normalisation printed" in capsys.readouterr().out
    metadata = read_metadata(out / "classes.parquet")
    assert (metadata["dataset"], metadata["split"], metadata["ignore_index"]) == (str(toy_labels), "", "255")


def test_labels_mode_flags(toy_labels, tmp_path):
    classes = write_classes(tmp_path / "classes.csv", NAMES)
    out = tmp_path / "out"
    args = [
        "stats",
        "--labels",
        str(toy_labels),
        "--num-classes",
        "5",
        "--classes",
        str(classes),
        "--out",
        str(out),
        "--normalisation",
        "conditional",
        "--top-k",
        "1",
        "--workers",
        "2",
        "--ignore-index",
        "254",
    ]
    write_label(toy_labels / "d.png", [[3, 254]])
    assert main(args) == 0
    assert read_metadata(out / "supporters.parquet")["top_k"] == "1"
    assert read_metadata(out / "cooccurrence.parquet")["normalisation"] == "conditional"
    assert list(pd.read_parquet(out / "classes.parquet").name) == NAMES


def test_bad_labels_exit_1_without_output(toy_labels, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["stats", "--labels", str(toy_labels), "--num-classes", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("grar: error: ") and "b.png: label value 3 (25 pixels)" in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "x"], "give a dataset NAME or --labels DIR"),
        (["embedded", "--labels", "l"], "give a dataset NAME or --labels DIR"),
        (["--labels", "l", "--out", "x"], "--labels needs --num-classes K and --out DIR"),
        (["--labels", "l", "--num-classes", "3"], "--labels needs --num-classes K and --out DIR"),
        (
            ["embedded", "--num-classes", "3", "--ignore-index", "0"],
            "--num-classes, --ignore-index: only with --labels",
        ),
        (["--labels", "l", "--num-classes", "3", "--out", "x", "--ignore-index", "1"], "ignore index 1: must be"),
        (["--labels", "l", "--num-classes", "3", "--out", "x", "--top-k", "0"], "top_k (0) and workers"),
    ],
)
def test_usage_errors_exit_2(project, capsys, args, message):
    assert main(["stats", *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_dataset_name_lists_the_names(project, capsys):
    assert main(["stats", "embeded"]) == 2
    assert capsys.readouterr().err == (
        "grar: error: dataset 'embeded' unknown; built-in: embedded, ade20k, pascal_context, coco_stuff; "
        "add your own under data.folders\n"
    )


def test_prepared_dataset(project, capsys):
    assert main(["stats", "embedded", "--workers", "1"]) == 0
    out = project / "artifacts" / "stats" / "embedded"
    metadata = read_metadata(out / "cooccurrence.parquet")
    assert (metadata["dataset"], metadata["split"], metadata["images"]) == ("embedded", "train", "4")
    assert list(pd.read_parquet(out / "classes.parquet").name) == NAMES
    assert main(["stats", "embedded", "--set", "stats.normalisation=conditional"]) == 0
    assert read_metadata(out / "cooccurrence.parquet")["normalisation"] == "conditional"


def test_prepared_dataset_size_mismatch(project, capsys):
    Image.new("RGB", (4, 4)).save(project / "data" / "embedded" / "train" / "images" / "c.jpg")
    assert main(["stats", "embedded"]) == 1
    assert "c.png: label size 3x3 differs from its image" in capsys.readouterr().err
    assert not (project / "artifacts" / "stats" / "embedded").exists()


def test_prepared_dataset_missing(project, capsys):
    assert main(["stats", "ade20k"]) == 1
    assert "classes.csv: class table not found" in capsys.readouterr().err


def test_stage(project, monkeypatch, capsys):
    from stages import stats as stage

    monkeypatch.setattr(sys, "argv", ["stages.stats", "embedded"])
    with pytest.raises(SystemExit) as info:
        stage.main()
    assert info.value.code == 0
    assert (project / "artifacts" / "stats" / "embedded" / "heatmap.svg").is_file()
    write_label(project / "data" / "embedded" / "train" / "labels" / "a.png", [[0, 0, 0], [1, 1, 7]])
    with pytest.raises(SystemExit) as info:
        stage.main()
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("stages.stats: error: ")
    monkeypatch.setattr(sys, "argv", ["stages.stats", "ade20"])
    with pytest.raises(SystemExit) as info:
        stage.main()
    assert info.value.code == 2
    assert "dataset 'ade20' unknown; built-in: embedded, ade20k, pascal_context, coco_stuff" in capsys.readouterr().err
