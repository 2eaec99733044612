"""`grar download` + `grar prepare` end to end over a loopback server, the layout check, the stages."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli.main import main
from pipeline.config import BUILTIN_DATASETS, with_overrides
from pipeline.datasets.download import ARCHIVES
from pipeline.datasets.prepare import PREPARERS, check_layout, prepare_dataset
from pipeline.download import Archive
from pipeline.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "ade20k_sample"


def mini_ade_zip() -> bytes:
    """ADEChallengeData2016.zip in miniature: the fixture's validation images, also used as training."""
    buffer = io.BytesIO()
    base = FIXTURE / "ADEChallengeData2016"
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.write(FIXTURE / "objectInfo150.csv", "ADEChallengeData2016/objectInfo150.csv")
        for path in sorted(base.rglob("*.*")):
            name = path.relative_to(FIXTURE).as_posix()
            zf.write(path, name)
            zf.write(path, name.replace("validation", "training").replace("_val_", "_train_"))
    return buffer.getvalue()


def write_params(params, path: Path, **changes) -> Path:
    raw = params.model_dump(mode="json")
    raw["data"].update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_preparers_cover_every_dataset_name():
    assert set(PREPARERS) == set(BUILTIN_DATASETS)
    assert set(ARCHIVES) == set(PREPARERS) - {"embedded"}


def test_unknown_dataset_lists_the_valid_names(params):
    with pytest.raises(
        ConfigError, match="unknown dataset 'ade'; allowed: embedded, ade20k, pascal_context, coco_stuff"
    ):
        prepare_dataset(params, "ade")


def test_download_then_prepare_from_the_command_line(server, params, tmp_path, monkeypatch, capsys):
    data = mini_ade_zip()
    server.files["mirror/ADEChallengeData2016.zip"] = data
    official = ARCHIVES["ade20k"][0]
    monkeypatch.setitem(
        ARCHIVES,
        "ade20k",
        (
            Archive(
                key=official.key,
                filename=official.filename,
                url=official.url,
                algorithm="sha1",
                checksum=hashlib.sha1(data).hexdigest(),
                extract=True,
            ),
        ),
    )
    params_file = write_params(params, tmp_path / "params.yaml", mirror=f"{server.base}/mirror")
    assert main(["download", "ade20k", "--params", str(params_file)]) == 0
    extracted = tmp_path / "downloads" / "ade20k" / "ADEChallengeData2016"
    assert f"ready: {extracted}" in capsys.readouterr().out
    assert main(["download", "ade20k", "--params", str(params_file)]) == 0
    assert server.requests == [("/mirror/ADEChallengeData2016.zip", None)]  # the second call fetched nothing
    assert main(["prepare", "ade20k", "--params", str(params_file)]) == 0
    out = tmp_path / "data" / "ade20k"
    assert f"ade20k: train 3 images, val 3 images -> {out}" in capsys.readouterr().out
    source = np.array(
        Image.open(FIXTURE / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png")
    )
    label = np.array(Image.open(out / "train" / "labels" / "ADE_train_00000001.png"))
    np.testing.assert_array_equal(label, np.where(source == 0, 255, source.astype(int) - 1))


def test_cli_errors_are_one_line(params, tmp_path, capsys):
    params_file = write_params(params, tmp_path / "params.yaml")
    assert main(["download", "embedded", "--params", str(params_file)]) == 2
    assert "grar: error: no download for dataset 'embedded' (it is generated" in capsys.readouterr().err
    assert main(["prepare", "coco_stuff", "--params", str(params_file)]) == 1
    err = capsys.readouterr().err
    missing = tmp_path / "downloads" / "coco_stuff" / "cocostuff-10k-v1.1"
    assert err == f"grar: error: {missing} not found: run `grar download coco_stuff` first\n"
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_stage_reports_a_bad_name_without_traceback(params, tmp_path):
    write_params(params, tmp_path / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "cityscapes"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("stages.prepare: error: unknown dataset 'cityscapes'; allowed: embedded, ade20k")
    assert "Traceback" not in result.stderr


def test_download_stage_skips_generated_datasets(params):
    from stages.download import download_all

    assert download_all(params) == {}  # the embedded dataset has no archives: nothing is fetched
    downloads = Path(params.data.downloads)
    assert [p.name for p in downloads.iterdir()] == ["manifest.json"]
    assert (downloads / "manifest.json").read_text() == "{}\n"


def make_layout(root: Path, classes: str = "id,name\n0,a\n1,b\n") -> Path:
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        (root / split / "images" / "x.jpg").write_bytes(b"")
        (root / split / "labels" / "x.png").write_bytes(b"")
    (root / "classes.csv").write_text(classes)
    return root


def test_check_layout_counts_and_rejects(tmp_path):
    assert check_layout(make_layout(tmp_path / "ok")) == {"train": 1, "val": 1}
    with pytest.raises(DataError, match=r"classes\.csv: row 3: id '2', expected 1 \(ids must be 0\.\.K-1 in order\)"):
        check_layout(make_layout(tmp_path / "ids", "id,name\n0,a\n2,b\n"))
    with pytest.raises(DataError, match=r"classes\.csv: class table needs a header with columns id,name"):
        check_layout(make_layout(tmp_path / "header", "0,a\n"))
    unpaired = make_layout(tmp_path / "unpaired")
    (unpaired / "val" / "images" / "y.png").write_bytes(b"")
    with pytest.raises(
        DataError, match=r"unpaired/val: images and labels do not pair up one to one \(e\.g\. \['y'\]\)"
    ):
        check_layout(unpaired)
    twice = make_layout(tmp_path / "twice")
    (twice / "train" / "images" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"twice/train: images and labels do not pair up .*\['x'\]"):
        check_layout(twice)
    empty = make_layout(tmp_path / "empty")
    (empty / "val" / "labels" / "x.png").unlink()
    with pytest.raises(DataError, match=r"empty/val/labels: empty split"):
        check_layout(empty)


def test_max_images_keeps_the_first_images_of_each_split_by_name(params):
    small = with_overrides(params, {"data.embedded.train_images": 7, "data.embedded.val_images": 3})
    full = prepare_dataset(small, "embedded")
    names = {split: sorted(p.name for p in (full / split / "labels").iterdir()) for split in ("train", "val")}
    trimmed = with_overrides(small, {"data.max_images": 5, "data.root": str(Path(params.data.root) / "trimmed")})
    out = prepare_dataset(trimmed, "embedded")
    assert sorted(p.name for p in (out / "train" / "labels").iterdir()) == names["train"][:5]
    assert sorted(p.stem for p in (out / "train" / "images").iterdir()) == [n[:-4] for n in names["train"][:5]]
    assert sorted(p.name for p in (out / "val" / "labels").iterdir()) == names["val"]  # 3 <= 5: all kept
    for name in names["train"][:5]:
        assert (out / "train" / "labels" / name).read_bytes() == (full / "train" / "labels" / name).read_bytes()
    assert check_layout(out) == {"train": 5, "val": 3}
