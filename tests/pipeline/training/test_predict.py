"""`grar predict`: the evaluation's own inference on new images, label maps and overlays, bad inputs as one line."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import IMAGE_SIZE

from pipeline.cli.main import main
from pipeline.datasets.layout import palette
from pipeline.paths import dataset_dir
from pipeline.training.predict import MARKER, RUN_WINDOW, PredictOptions, overlay_image, predict_images
from pipeline.training.run import run_cell


@pytest.fixture(scope="module")
def trained(tiny_project, tmp_path_factory):
    """One tiny run (6 iterations), its metrics, and the val split it was scored on."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    metrics = run_cell(tiny_project, run_dir)
    yield run_dir, metrics, dataset_dir(tiny_project, "embedded") / "val"
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The same thread count as the run's own evaluation: identical sums, identical predictions."""


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("ms", [False, True])
def test_predict_then_evaluate_gives_the_runs_own_miou(trained, tmp_path, ms, capsys):
    run_dir, metrics, val = trained
    out = tmp_path / "pred"
    args = ["predict", str(run_dir), str(val / "images"), "--out", str(out)] + (["--ms"] if ms else [])
    assert main(args) == 0
    assert f"3 label map(s) written to {out}" in capsys.readouterr().out
    scores = tmp_path / "scores.json"
    assert (
        main(
            ["evaluate", "--pred", str(out), "--gt", str(val / "labels"), "--num-classes", "24", "--json", str(scores)]
        )
        == 0
    )
    expected = metrics["ms"] if ms else metrics
    measured = json.loads(scores.read_text())
    assert measured["miou"] == expected["miou"]
    assert measured["pixel_accuracy"] == expected["pixel_accuracy"]


def test_label_maps_are_palette_pngs_at_the_input_size(trained, tmp_path):
    run_dir, _, val = trained
    source = tmp_path / "in"
    source.mkdir()
    first = sorted((val / "images").iterdir())[0]
    with Image.open(first) as image:
        image.convert("RGB").resize((50, 21)).save(source / "wide.png")  # another size: its own batch
    shutil.copy(first, source / first.name)
    result = predict_images(run_dir, [source], tmp_path / "out", PredictOptions(), progress=False)
    assert [p.name for p in result.written] == sorted([f"{first.stem}.png", "wide.png"])
    assert result.failed == ()
    for path, size in (
        (tmp_path / "out" / "wide.png", (50, 21)),
        (tmp_path / "out" / f"{first.stem}.png", (IMAGE_SIZE, IMAGE_SIZE)),
    ):
        with Image.open(path) as label:
            assert label.mode == "P" and label.size == size
            colours = np.array(label.getpalette()[: 24 * 3], np.uint8).reshape(24, 3)
            np.testing.assert_array_equal(colours, palette(24))
            assert int(np.array(label).max()) < 24
    assert (tmp_path / "out" / MARKER).is_file()


def test_window_alone_is_the_runs_crop(trained, tmp_path):
    run_dir, _, val = trained
    run_default = predict_images(
        run_dir, [val / "images"], tmp_path / "a", PredictOptions(window=RUN_WINDOW), progress=False
    )
    explicit = predict_images(run_dir, [val / "images"], tmp_path / "b", PredictOptions(window=33), progress=False)
    for a, b in zip(run_default.written, explicit.written):
        assert a.read_bytes() == b.read_bytes()


def test_overlay_blends_and_lists_the_classes_present(tmp_path):
    image = np.full((4, 6, 3), 200, np.uint8)
    prediction = np.zeros((4, 6), np.int64)
    prediction[:, 4:] = 2  # class 0: 16 px, class 2: 8 px; class 1 absent
    colours = palette(3)
    out = overlay_image(image, prediction, colours, ["sky", "road", "car"])
    pixels = np.array(out)
    assert tuple(pixels[0, 0]) == tuple(int(round(100 + c / 2)) for c in colours[0])
    assert tuple(pixels[0, 5]) == tuple(int(round(100 + c / 2)) for c in colours[2])
    assert out.height == 2 * 4 + 2 * 14  # padding + two legend rows (sky, car): taller than the image
    legend = pixels[:, 6:]
    swatches = {tuple(int(v) for v in p) for p in legend.reshape(-1, 3)}
    assert tuple(int(c) for c in colours[0]) in swatches and tuple(int(c) for c in colours[2]) in swatches
    assert tuple(int(c) for c in colours[1]) not in swatches


def test_overlay_files(trained, tmp_path):
    run_dir, _, val = trained
    assert main(["predict", str(run_dir), str(val / "images"), "--out", str(tmp_path / "o"), "--overlay"]) == 0
    overlays = sorted((tmp_path / "o" / "overlays").iterdir())
    assert [p.name for p in overlays] == sorted(f"{p.stem}.png" for p in (val / "images").iterdir())
    with Image.open(overlays[0]) as image:
        assert image.mode == "RGB" and image.width > IMAGE_SIZE


def bad_input(case: str, tmp_path: Path, val: Path) -> tuple[list[str], str]:
    images = tmp_path / "images"
    shutil.copytree(val / "images", images)
    first = sorted(images.iterdir())[0]
    out = str(tmp_path / "out")
    if case == "missing file":
        return [str(images / "nope.jpg"), "--out", out], f"{images / 'nope.jpg'}: no such file or folder"
    if case == "not an image":
        (tmp_path / "notes.txt").write_text("x")
        return [str(tmp_path / "notes.txt"), "--out", out], f"{tmp_path / 'notes.txt'}: not a JPEG or PNG file"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return [str(tmp_path / "empty"), "--out", out], f"{tmp_path / 'empty'}: no JPEG or PNG images in this folder"
    if case == "same stem twice":
        (tmp_path / "other").mkdir()
        shutil.copy(first, tmp_path / "other" / first.name)
        return [str(images), str(tmp_path / "other"), "--out", out], "both would be written to"
    if case == "garbage image":
        (images / "zz.jpg").write_bytes(b"not a jpeg at all")
        return [str(images), "--out", out], f"{images / 'zz.jpg'}: unreadable image"
    if case == "no checkpoint":
        return [str(images), "--out", out], "checkpoint.pt: no checkpoint; train the run first"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["missing file", "not an image", "empty folder", "same stem twice", "garbage image", "no checkpoint"]
)
def test_bad_input_is_one_line_before_any_work(case, trained, tmp_path, capsys):
    run_dir, _, val = trained
    args, message = bad_input(case, tmp_path, val)
    before = tree(tmp_path)
    assert main(["predict", str(tmp_path / "norun" if case == "no checkpoint" else run_dir), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("grar: error: ") and message in err
    assert not (tmp_path / "out").exists()
    assert tree(tmp_path) == before


def test_out_that_holds_inputs_or_foreign_files_is_refused(trained, tmp_path, capsys):
    run_dir, _, val = trained
    images = tmp_path / "images"
    shutil.copytree(val / "images", images)
    before = tree(tmp_path)
    for out, message in (
        (images, f"--out {images}: overlaps the input {images}"),
        (images / "sub", f"--out {images / 'sub'}: overlaps the input {images}"),
        (tmp_path, f"--out {tmp_path}: overlaps the input {images}"),
    ):
        assert main(["predict", str(run_dir), str(images), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    single = sorted(images.iterdir())[0]
    assert main(["predict", str(run_dir), str(single), "--out", str(images)]) == 2
    assert f"--out {images}: overlaps the input {single}" in capsys.readouterr().err
    assert tree(tmp_path) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.md").write_text("keep me")
    assert main(["predict", str(run_dir), str(images), "--out", str(foreign)]) == 2
    assert "exists, is not empty and was not written by grar predict" in capsys.readouterr().err
    assert (foreign / "notes.md").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "ours")]) == 0
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "ours")]) == 0  # ours: replaced


def test_an_image_that_fails_to_decode_leaves_the_others_written(trained, tmp_path, capsys):
    run_dir, _, val = trained
    images = tmp_path / "images"
    shutil.copytree(val / "images", images)
    whole = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    Image.fromarray(whole).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (images / "broken.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "out")]) == 1
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if "grar: error" in line]
    assert len(err) == 2 and err[0].startswith(f"grar: error: {images / 'broken.png'}: unreadable image")
    assert err[-1] == "grar: error: 1 image(s) could not be read (named above); the other 3 were written"
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == sorted(f"{p.stem}.png" for p in (val / "images").iterdir())


def test_names_that_are_not_utf8_are_predicted_scored_and_printed_escaped(trained, tmp_path, capsys):
    run_dir, metrics, val = trained
    images, labels = os.fsencode(tmp_path / "images"), os.fsencode(tmp_path / "labels")
    os.mkdir(images), os.mkdir(labels)
    for source in sorted((val / "images").iterdir()):  # each stem with a Latin-1 byte: "\xe9<stem>"
        shutil.copy(source, os.path.join(images, b"\xe9" + os.fsencode(source.name)))
        shutil.copy(val / "labels" / f"{source.stem}.png", os.path.join(labels, b"\xe9" + os.fsencode(source.stem)))
    for name in os.listdir(labels):
        os.rename(os.path.join(labels, name), os.path.join(labels, name + b".png"))
    out = os.fsdecode(os.fsencode(tmp_path) + b"/pr\xe9d")
    assert main(["predict", str(run_dir), os.fsdecode(images), "--out", out]) == 0
    assert f"3 label map(s) written to {tmp_path}/pr\\xe9d" in capsys.readouterr().out
    scores = tmp_path / "scores.json"
    args = ["evaluate", "--pred", out, "--gt", os.fsdecode(labels), "--num-classes", "24", "--json", str(scores)]
    assert main(args) == 0
    assert json.loads(scores.read_text())["miou"] == pytest.approx(metrics["miou"])


def test_a_symbolic_link_that_leads_nowhere_is_named_before_any_work(trained, tmp_path, capsys):
    run_dir, _, val = trained
    images = tmp_path / "images"
    shutil.copytree(val / "images", images)
    (images / "self.jpg").symlink_to("self.jpg")
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"grar: error: {images / 'self.jpg'}: a symbolic link that leads back to itself (a loop); remove it\n"
    )
    (images / "self.jpg").unlink()
    (images / "gone.png").symlink_to(tmp_path / "deleted.png")
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"grar: error: {images / 'gone.png'}: a symbolic link to {tmp_path / 'deleted.png'}, which does not exist\n"
    )
    assert not (tmp_path / "out").exists()


def test_an_image_whose_inference_does_not_fit_in_memory_is_named_and_the_others_written(
    trained, tmp_path, capsys, monkeypatch
):
    from pipeline.training import inference

    run_dir, _, val = trained
    images = tmp_path / "images"
    shutil.copytree(val / "images", images)
    Image.fromarray(np.zeros((40, 52, 3), np.uint8)).save(images / "wide.png")
    real = inference.infer

    def infer(model, tensors, *args):
        if tensors.shape[-1] == 52:  # (B, 3, H, W)
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                "allocate 5408000000 bytes. Error code 12 (Cannot allocate memory)"
            )
        return real(model, tensors, *args)

    monkeypatch.setattr(inference, "infer", infer)
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "out")]) == 1
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if "grar: error" in line]
    assert err == [
        f"grar: error: {images / 'wide.png'}: 52x40 pixels do not fit in memory for inference ([enforce fail at "
        "alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 5408000000 "
        "bytes. Error code 12 (Cannot allocate memory)); predict it with --window, or scaled down",
        "grar: error: 1 image(s) could not be read (named above); the other 3 were written",
    ]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(
        f"{p.stem}.png" for p in (val / "images").iterdir()
    )


def test_a_photo_is_predicted_as_displayed_its_exif_orientation_applied(trained, tmp_path):
    run_dir, _, _ = trained
    stored = Image.fromarray(np.random.default_rng(1).integers(0, 255, (35, 48, 3), np.uint8))  # 48 wide, 35 high
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: viewers turn the stored pixels 90 degrees clockwise
    photos = tmp_path / "photos"
    photos.mkdir()
    stored.save(photos / "tagged.png", exif=exif)
    stored.transpose(Image.Transpose.ROTATE_270).save(photos / "upright.png")  # what a viewer shows, untagged
    assert main(["predict", str(run_dir), str(photos), "--out", str(tmp_path / "out"), "--overlay"]) == 0
    tagged, upright = (np.array(Image.open(tmp_path / "out" / f"{n}.png")) for n in ("tagged", "upright"))
    assert tagged.shape == (48, 35) and np.array_equal(tagged, upright)
    overlays = [np.array(Image.open(tmp_path / "out" / "overlays" / f"{n}.png")) for n in ("tagged", "upright")]
    assert np.array_equal(*overlays)  # the photo as displayed, its colours over it


def test_a_full_disk_is_one_line_naming_the_label_map_being_written(trained, tmp_path, capsys, monkeypatch):
    run_dir, _, val = trained
    save = Image.Image.save
    written = []

    def full_disk_after_one(image, fp, *args, **kwargs):  # PIL opens the file, then the write fails, naming nothing
        if written:
            open(fp, "wb").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(fp)
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk_after_one)
    out = tmp_path / "out"
    assert main(["predict", str(run_dir), str(val / "images"), "--out", str(out)]) == 1
    second = sorted(val.joinpath("images").iterdir())[1].stem
    err = [line.split("\r")[-1] for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [f"grar: error: {out / second}.png: No space left on device"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".grar-predictions",
        f"{sorted(val.joinpath('images').iterdir())[0].stem}.png",
    ]
