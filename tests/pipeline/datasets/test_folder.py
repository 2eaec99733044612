"""Folder datasets (``data.folders``): both layouts, ignore and remap, every bad input as one line, no data lost."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from pipeline.cli.main import main
from pipeline.config import with_overrides
from pipeline.datasets.prepare import MARKER, content_fingerprint, prepare_dataset, source_fingerprint
from pipeline.errors import ConfigError, DataError

LABELS = {  # stem -> (3, 5) label values as the user's files hold them
    "a": np.array([[0, 1, 2, 255, 0], [1, 1, 2, 2, 0], [0, 0, 0, 1, 1]], np.uint8),
    "b": np.array([[2, 2, 2, 2, 2], [0, 1, 0, 1, 0], [255, 255, 1, 1, 0]], np.uint8),
    "c": np.array([[1, 0, 1, 0, 1], [2, 2, 1, 1, 0], [0, 0, 2, 2, 2]], np.uint8),
}


def jpeg(value: int, size=(5, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 100, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_label(path: Path, values: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values, mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putpalette([255 - k % 256 for k in range(768)])  # colours that are not the indices
    image.save(path)


def split_folders(root: Path, classes: str = "id,name\n0,sky\n1,road\n2,car\n") -> Path:
    """train: a, b; val: c. Images JPEG, except b: an RGBA PNG."""
    for split, stems in (("train", ("a", "b")), ("val", ("c",))):
        (root / split / "images").mkdir(parents=True)
        for stem in stems:
            if stem == "b":
                Image.new("RGBA", (5, 3), (9, 8, 7, 128)).save(root / split / "images" / "b.png")
            else:
                (root / split / "images" / f"{stem}.jpg").write_bytes(jpeg(len(stem)))
            write_label(root / split / "labels" / f"{stem}.png", LABELS[stem])
    (root / "classes.csv").write_text(classes)
    return root


def split_lists(root: Path) -> Path:
    """images/, labels/, splits/: labels use 0 = unlabelled and ids 1..3; d is in no split."""
    for stem in ("a", "b", "c", "d"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{stem}.JPG").write_bytes(jpeg(7))
        values = LABELS.get(stem, LABELS["a"])
        shifted = np.where(values == 255, 0, values + 1).astype(np.uint8)
        write_label(root / "labels" / f"{stem}.png", shifted, mode="P" if stem == "b" else "L")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("# training images\nb\n\na\n")
    (root / "splits" / "val.txt").write_text("c\n")
    (root / "classes.csv").write_text("id,name\n0,sky\n1,road\n2,car\n")
    return root


def folder_params(params, name: str, spec) -> object:
    return with_overrides(params, {f"data.folders.{name}": spec})


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (to show nothing changed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.array(image)


def test_split_folder_layout(params, tmp_path):
    source = split_folders(tmp_path / "mine")
    before = tree(source)
    out = prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert out == Path(params.data.root) / "mine"
    assert (out / "classes.csv").read_text() == "id,name\n0,sky\n1,road\n2,car\n"
    marker = json.loads((out / MARKER).read_text())
    assert marker == {
        "dataset": "mine",
        "files": 7,
        **content_fingerprint(out, skip=MARKER),
    }  # classes.csv, 3 images, 3 labels
    np.testing.assert_array_equal(read(out / "train" / "labels" / "a.png"), LABELS["a"])
    np.testing.assert_array_equal(read(out / "val" / "labels" / "c.png"), LABELS["c"])
    assert (out / "train" / "images" / "a.jpg").read_bytes() == (source / "train" / "images" / "a.jpg").read_bytes()
    with Image.open(out / "train" / "images" / "b.png") as image:
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (9, 8, 7)
    assert tree(source) == before  # read in place, never written


def test_split_list_layout_with_ignore_and_remap(params, tmp_path):
    source = split_lists(tmp_path / "mine")
    spec = {"path": str(source), "ignore": 0, "remap": {1: 0, 2: 1, 3: 2}}
    out = prepare_dataset(folder_params(params, "mine", spec), "mine")
    assert sorted(p.name for p in (out / "train" / "labels").iterdir()) == ["a.png", "b.png"]
    assert sorted(p.name for p in (out / "val" / "images").iterdir()) == ["c.jpg"]  # d: in no split, left out
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        np.testing.assert_array_equal(read(out / split / "labels" / f"{stem}.png"), LABELS[stem])  # P read as indices


def test_remap_to_ignore(params, tmp_path):
    source = split_folders(tmp_path / "mine")
    out = prepare_dataset(folder_params(params, "mine", {"path": str(source), "remap": {2: 255}}), "mine")
    expected = np.where(LABELS["a"] == 2, 255, LABELS["a"])
    np.testing.assert_array_equal(read(out / "train" / "labels" / "a.png"), expected)


def corrupt(case: str, root: Path) -> str:
    """Damage the split-folder dataset at ``root`` as ``case`` says; return the expected message."""
    train = root / "train"
    if case == "no class table":
        (root / "classes.csv").unlink()
        return f"{root / 'classes.csv'}: class table not found"
    if case == "duplicate class":
        (root / "classes.csv").write_text("id,name\n0,sky\n1,road\n2,sky\n")
        return f"{root / 'classes.csv'}: duplicate class names: sky"
    if case == "256 classes":
        (root / "classes.csv").write_text("id,name\n" + "".join(f"{k},c{k}\n" for k in range(256)))
        return f"{root / 'classes.csv'}: 256 classes; 8-bit labels hold at most 255 (255 = ignore)"
    if case == "ids out of order":
        (root / "classes.csv").write_text("id,name\n0,sky\n2,road\n")
        return f"{root / 'classes.csv'}: row 3: id '2', expected 1"
    if case == "both layouts":
        (root / "images").mkdir()
        return f"{root}: holds both train/ and images/"
    if case == "no layout":
        for split in ("train", "val"):
            (root / split).rename(root / f"old-{split}")
        return f"{root}: expected train/ and val/"
    if case == "image without label":
        (train / "labels" / "a.png").unlink()
        return f"{train / 'images' / 'a.jpg'}: image without a label (expected {train / 'labels' / 'a.png'})"
    if case == "label without image":
        (train / "images" / "a.jpg").unlink()
        return f"{train / 'labels' / 'a.png'}: label without an image"
    if case == "two images of a stem":
        (train / "images" / "a.png").write_bytes(b"x")
        return "two images with the stem 'a'"
    if case == "not an image":
        (train / "images" / "notes.txt").write_text("x")
        return f"{train / 'images' / 'notes.txt'}: not a JPEG or PNG image file"
    if case == "jpeg label":
        (train / "labels" / "z.jpg").write_bytes(jpeg(1))
        return f"{train / 'labels' / 'z.jpg'}: labels must be 8-bit PNG files"
    if case == "colour label":
        Image.new("RGB", (5, 3)).save(train / "labels" / "a.png")
        return f"{train / 'labels' / 'a.png'}: label image has mode 'RGB'; expected a single-channel index image"
    if case == "16-bit label":
        Image.fromarray(LABELS["a"].astype(np.uint16) * 300).save(train / "labels" / "a.png")
        return f"{train / 'labels' / 'a.png'}: label image has mode 'I;16'"
    if case == "value above K":
        values = LABELS["a"].copy()
        values[2, 3] = 7
        write_label(train / "labels" / "a.png", values)
        return (
            f"{train / 'labels' / 'a.png'}: value 7 at row 2, column 3 is not a class id 0..2 nor the ignore value 255"
        )
    if case == "size mismatch":
        (train / "images" / "a.jpg").write_bytes(jpeg(1, size=(6, 3)))
        return f"{train / 'images' / 'a.jpg'}: image is 6x3 but its label {train / 'labels' / 'a.png'} is 5x3"
    if case == "unreadable image":
        (train / "images" / "a.jpg").write_bytes(b"not a jpeg")
        return f"{train / 'images' / 'a.jpg'}: unreadable image"
    if case == "stem in both splits":
        (root / "val" / "images" / "a.jpg").write_bytes(jpeg(1))
        write_label(root / "val" / "labels" / "a.png", LABELS["a"])
        return f"{root / 'val' / 'images' / 'a.jpg'}: stem 'a' is in both the train and the val split"
    if case == "empty split":
        for path in (root / "val").rglob("*.*"):
            path.unlink()
        return f"{root}: the val split is empty"
    raise AssertionError(case)


CASES = (
    "no class table",
    "duplicate class",
    "256 classes",
    "ids out of order",
    "both layouts",
    "no layout",
    "image without label",
    "label without image",
    "two images of a stem",
    "not an image",
    "jpeg label",
    "colour label",
    "16-bit label",
    "value above K",
    "size mismatch",
    "unreadable image",
    "stem in both splits",
    "empty split",
)


@pytest.mark.parametrize("case", CASES)
def test_bad_folder_is_one_line_and_writes_nothing(case, params, tmp_path, capsys):
    source = split_folders(tmp_path / "mine")
    message = corrupt(case, source)
    before = tree(source)
    params_file = tmp_path / "params.yaml"
    raw = params.model_dump(mode="json")
    raw["data"]["folders"] = {"mine": str(source)}
    params_file.write_text(yaml.safe_dump(raw))
    assert main(["prepare", "mine", "--params", str(params_file)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar, when decoding had begun
    assert err.startswith("grar: error: ") and "\r" not in err
    assert message in err
    assert not (Path(params.data.root) / "mine").exists()
    assert list(Path(params.data.root).glob(".mine.*")) == []  # no temporary folder left
    assert tree(source) == before


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("a\n../b\n", "line 2: '../b' is not a file stem"),
        ("a\nb\na\n", "line 3: 'a' is listed twice (first on line 1)"),
        ("a\nzz\n", "line 2: no image zz.jpg/.jpeg/.png in"),
    ],
)
def test_bad_split_list(listing, message, params, tmp_path):
    source = split_lists(tmp_path / "mine")
    (source / "splits" / "train.txt").write_text(listing)
    with pytest.raises(DataError, match=rf"splits/train\.txt: {message}".replace("(", r"\(").replace(")", r"\)")):
        prepare_dataset(folder_params(params, "mine", {"path": str(source), "ignore": 0}), "mine")


def test_remap_target_beyond_the_classes(params, tmp_path):
    source = split_folders(tmp_path / "mine")
    with pytest.raises(ConfigError, match=r"data\.folders\.mine\.remap\.1: target 3 is not a class id 0\.\.2"):
        prepare_dataset(folder_params(params, "mine", {"path": str(source), "remap": {1: 3}}), "mine")


def test_without_remap_the_shifted_labels_fail(params, tmp_path):
    source = split_lists(tmp_path / "mine")  # values 1..3: 3 is no class id without the remap
    with pytest.raises(
        DataError, match=r"value 3 at row \d+, column \d+ is not a class id 0\.\.2 nor the ignore value 0"
    ):
        prepare_dataset(folder_params(params, "mine", {"path": str(source), "ignore": 0}), "mine")


def test_a_folder_where_grar_writes_is_refused(params, tmp_path, capsys):
    target = Path(params.data.root) / "mine"
    split_folders(target)
    before = tree(target)
    raw = params.model_dump(mode="json")
    raw["data"]["folders"] = {"mine": str(target)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["prepare", "mine", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"data.folders.mine: {target} overlaps {target}, where grar writes the prepared 'mine' dataset" in err
    raw["data"]["folders"] = {"mine": str(Path(params.data.root))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["prepare", "mine", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert tree(target) == before


def test_an_output_grar_did_not_write_is_kept(params, tmp_path):
    source = split_folders(tmp_path / "mine")
    target = Path(params.data.root) / "mine"
    target.mkdir(parents=True)
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(
        ConfigError, match=rf"prepared dataset {target}: exists, is not empty and was not written by grar prepare"
    ):
        prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert (target / "thesis.tex").read_text() == "precious"
    (target / "thesis.tex").unlink()  # empty: fine; then ours (marker): replaced
    prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    (source / "val" / "labels" / "c.png").unlink()
    (source / "val" / "images" / "c.jpg").rename(source / "val" / "images" / "d.jpg")
    write_label(source / "val" / "labels" / "d.png", LABELS["c"])
    prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert sorted(p.name for p in (target / "val" / "labels").iterdir()) == ["d.png"]


def test_folder_dataset_through_stats(params, tmp_path, capsys):
    source = split_folders(tmp_path / "mine")
    raw = params.model_dump(mode="json")
    raw["data"]["folders"] = {"mine": str(source)}
    raw["stats"]["root"] = str(tmp_path / "stats")
    raw["stats"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["prepare", "mine", "--params", str(tmp_path / "params.yaml")]) == 0
    assert "mine: train 2 images, val 1 images" in capsys.readouterr().out
    assert main(["stats", "mine", "--params", str(tmp_path / "params.yaml")]) == 0
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "stats" / "mine" / "cooccurrence.parquet").to_pandas()
    counts = {(int(i), int(j)): int(n) for i, j, n in zip(t["i"], t["j"], t["t"])}
    assert counts[(0, 0)] == 2 and counts[(2, 2)] == 2 and counts[(0, 2)] == 2  # a and b hold every class


def test_file_names_that_are_not_utf8_are_prepared_counted_and_named_escaped(params, tmp_path, capsys):
    """``caf\\xe9`` (Latin-1, as an old camera or Windows share writes it): kept byte for byte, named escaped."""
    source = split_folders(tmp_path / "mine")
    images, labels = os.fsencode(source / "train" / "images"), os.fsencode(source / "train" / "labels")
    with open(os.path.join(images, b"caf\xe9.jpg"), "wb") as image:
        image.write(jpeg(3))
    write_label(Path(os.fsdecode(os.path.join(labels, b"caf\xe9.png"))), LABELS["a"])
    raw = params.model_dump(mode="json")
    raw["data"]["folders"] = {"mine": str(source)}
    raw["stats"]["root"] = str(tmp_path / "stats")
    raw["stats"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    argv = ["--params", str(tmp_path / "params.yaml")]
    assert source_fingerprint(folder_params(params, "mine", str(source)), "mine")["files"] == 9  # the sources stage
    assert main(["prepare", "mine", *argv]) == 0
    assert "mine: train 3 images, val 1 images" in capsys.readouterr().out
    prepared = os.fsencode(Path(params.data.root) / "mine" / "train" / "labels")
    assert os.path.isfile(os.path.join(prepared, b"caf\xe9.png"))
    assert main(["stats", "mine", *argv]) == 0
    assert "3 images" in capsys.readouterr().out

    with open(os.path.join(labels, b"caf\xe9.png"), "wb") as label:
        label.write(b"not a png")
    assert main(["prepare", "mine", *argv]) == 1
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines() if "error" in line]  # progress bars aside
    assert len(lines) == 1 and "Traceback" not in err
    name = f"{source}/train/labels/caf\\xe9.png"
    assert lines[0] == f"grar: error: {name}: unreadable label image (cannot identify image file '{name}')"


def test_a_class_table_with_a_byte_order_mark_is_read(params, tmp_path):
    """What spreadsheet programs save as "CSV UTF-8": a BOM before the header."""
    source = split_folders(tmp_path / "mine")
    (source / "classes.csv").write_bytes(b"\xef\xbb\xbfid,name\r\n0,sky\r\n1,road\r\n2,caf\xc3\xa9\r\n")
    out = prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert (out / "classes.csv").read_text(encoding="utf-8") == "id,name\n0,sky\n1,road\n2,café\n"


def test_a_phone_photo_is_prepared_as_displayed_with_its_label_drawn_on_it(params, tmp_path):
    """The JPEG stores 5 x 3 pixels and an EXIF orientation (6) that shows them turned: 3 wide, 5 high."""
    source = split_folders(tmp_path / "mine")
    stored = Image.new("RGB", (5, 3), (10, 100, 200))
    stored.putpixel((0, 0), (250, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(source / "train" / "images" / "a.jpg", "JPEG", exif=exif, quality=100)
    write_label(source / "train" / "labels" / "a.png", LABELS["a"].T.copy())  # drawn on the displayed 3 x 5 photo
    out = prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert not (out / "train" / "images" / "a.jpg").exists()  # turned: written upright, untagged, as PNG
    with (
        Image.open(out / "train" / "images" / "a.png") as image,
        Image.open(source / "train" / "images" / "a.jpg") as jpg,
    ):
        assert image.size == (3, 5) and image.getexif().get(0x0112) is None
        assert np.array_equal(np.array(image), np.array(ImageOps.exif_transpose(jpg)))
    np.testing.assert_array_equal(read(out / "train" / "labels" / "a.png"), LABELS["a"].T)


def test_an_image_over_the_pixel_limit_is_one_line(params, tmp_path, capsys):
    source = split_folders(tmp_path / "mine")
    big = source / "train" / "images" / "a.png"
    (source / "train" / "images" / "a.jpg").unlink()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 10000, 5001, 8, 2, 0, 0, 0)  # claims 50,010,000 RGB pixels; holds none
    big.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    with pytest.raises(DataError) as info:
        prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert str(info.value) == (
        f"{big}: 10000x5001 pixels (50.0 Mpx), more than the 50 Mpx grar decodes "
        "(pipeline.datasets.layout.MAX_IMAGE_PIXELS); scale it down or cut it into tiles first"
    )
    assert not (Path(params.data.root) / "mine").exists()


def test_a_full_disk_while_preparing_is_one_line_naming_the_dataset_and_the_file(params, tmp_path, monkeypatch):
    source = split_folders(tmp_path / "mine")
    save = Image.Image.save

    def full_disk(image, fp, *args, **kwargs):  # PIL opens the file, then the write fails, naming nothing
        if "labels" in str(fp):
            open(fp, "wb").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    target = Path(params.data.root) / "mine"
    with pytest.raises(DataError) as info:
        prepare_dataset(folder_params(params, "mine", str(source)), "mine")
    assert str(info.value) == (
        f"{target}: not prepared: No space left on device (writing train/labels/a.png); {target} is as it was: "
        "free some space and run `grar prepare mine` again"
    )
    assert not target.exists() and list(Path(params.data.root).iterdir()) == []  # nothing half-written
