"""The embedded dataset: tables, twins, determinism, layout, co-occurrence structure, context bounds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import hw, with_overrides
from pipeline.datasets import embedded as E
from pipeline.datasets.prepare import prepare_dataset
from pipeline.training.inputs import build_model

SIZE = 37  # odd on purpose


def small(params, **changes):
    """``params`` with a tiny embedded dataset (``train``/``val`` images, ``size`` pixels)."""
    values = {"train": 9, "val": 5, "size": SIZE, "seed": 3, "workers": 1} | changes
    return with_overrides(
        params,
        {
            "data.embedded.train_images": values["train"],
            "data.embedded.val_images": values["val"],
            "data.embedded.image_size": values["size"],
            "data.embedded.seed": values["seed"],
            "data.workers": values["workers"],
        },
    )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


# --- the tables ---------------------------------------------------------------------------------


def test_classes_scenes_and_twins_are_the_documented_design():
    assert len(E.CLASSES) == 24 and len(set(E.CLASSES)) == 24
    assert list(E.SCENES) == ["bedroom", "pasture", "harbour", "street"]
    assert [c for scene in E.SCENES.values() for c in scene.classes] == list(E.CLASSES)
    assert E.SCENES["bedroom"].classes == (
        "bedroom.wall",
        "bedroom.floor",
        "bedroom.pillow",
        "bedroom.lamp",
        "bedroom.bed",
        "bedroom.wardrobe",
    )
    assert set(E.TWINS) == {
        ("bedroom.wall", "pasture.sky", "harbour.haze", "street.facade"),
        ("bedroom.floor", "pasture.grass", "harbour.water", "street.road"),
        ("bedroom.pillow", "pasture.rock"),
        ("bedroom.lamp", "harbour.buoy"),
        ("bedroom.bed", "street.car"),
        ("pasture.cow", "harbour.boat"),
        ("pasture.sheep", "street.bollard"),
        ("harbour.container", "street.bus"),
    }
    twins = {c for group in E.TWINS for c in group}
    assert set(E.CLASSES) - twins == {scene.unique for scene in E.SCENES.values()}
    # every pair of scenes shares exactly one twin object appearance
    for a in E.SCENES.values():
        for b in E.SCENES.values():
            if a is not b:
                shared = {E.CLASS_APPEARANCE[c] for c in a.twins} & {E.CLASS_APPEARANCE[c] for c in b.twins}
                assert len(shared) == 1
    for scene in E.SCENES.values():
        assert E.APPEARANCES[E.CLASS_APPEARANCE[scene.far]].shape is None
        assert all(E.APPEARANCES[E.CLASS_APPEARANCE[c]].shape is not None for c in (*scene.twins, scene.unique))


def test_tables_cannot_be_mutated():
    with pytest.raises(TypeError):
        E.SCENES["kitchen"] = E.SCENES["bedroom"]
    with pytest.raises(TypeError):
        E.CLASS_APPEARANCE["bedroom.pillow"] = "glow"
    with pytest.raises(TypeError):
        E.APPEARANCES["glow"] = E.APPEARANCES["hide"]


def test_unknown_pattern_lists_the_valid_ones():
    spec = E.Texture("zigzag", ((0, 0, 0), (1, 1, 1)), 4)
    with pytest.raises(ValueError, match="unknown texture pattern 'zigzag'; valid: stripes, checks, dots, noise"):
        E.texture(spec, 5, 7, np.random.default_rng(0))


# --- twins ---------------------------------------------------------------------------------------


def scene_with(name: str) -> E.Scene:
    return next(scene for scene in E.SCENES.values() if name in scene.classes)


def object_regions(obj: str, seed: int) -> tuple[list[tuple[int, np.ndarray]], np.random.Generator]:
    """Ground + band of ``obj``'s scene and one ``obj`` blob, drawn from ``seed``; the rng is returned for rendering."""
    rng = np.random.default_rng(seed)
    scene = scene_with(obj)
    band = np.zeros((SIZE, SIZE), bool)
    band[:6] = True
    shape = E.APPEARANCES[E.CLASS_APPEARANCE[obj]].shape
    mask = E.blob(shape, SIZE, SIZE, 25.5, 17.0, rng)
    return [(E.class_id(scene.ground), ~band), (E.class_id(scene.far), band), (E.class_id(obj), mask)], rng


@pytest.mark.parametrize("group", [g for g in E.TWINS if len(g) == 2], ids=lambda g: "=".join(g))
def test_twin_objects_on_their_scenes_render_identical_pixels(group):
    a, b = group
    regions_a, rng_a = object_regions(a, seed=11)
    regions_b, rng_b = object_regions(b, seed=11)
    assert all(np.array_equal(ma, mb) for (_, ma), (_, mb) in zip(regions_a, regions_b))  # same shape draws
    image_a, labels_a = E.render(regions_a, rng_a)
    image_b, labels_b = E.render(regions_b, rng_b)
    assert np.array_equal(image_a, image_b)
    assert set(np.unique(labels_a)) != set(np.unique(labels_b))
    assert (labels_a == E.class_id(a)).sum() == (labels_b == E.class_id(b)).sum() > 20


def test_non_twins_render_differently():
    """The control that makes the twin test able to fail: a pillow is not a wardrobe."""
    regions, rng = object_regions("bedroom.pillow", seed=11)
    same, rng_same = object_regions("bedroom.pillow", seed=11)
    swapped = [*same[:2], (E.class_id("bedroom.wardrobe"), same[2][1])]
    image, _ = E.render(regions, rng)
    other, _ = E.render(swapped, rng_same)
    mask = regions[2][1]
    assert np.array_equal(image[~mask], other[~mask])
    assert not np.array_equal(image[mask], other[mask])


# --- prepare: layout, determinism ------------------------------------------------------------------


def test_prepare_writes_the_canonical_layout(tmp_path, params):
    out = tmp_path / "out"
    E.prepare(small(params, train=9, val=5), out)
    assert read_csv(out / "classes.csv") == [["id", "name"], *([str(k), name] for k, name in enumerate(E.CLASSES))]
    scenes = read_csv(out / "scenes.csv")
    assert scenes[0] == ["stem", "split", "scene"]
    assert scenes[1:4] == [
        ["train_00000", "train", "bedroom"],
        ["train_00001", "train", "pasture"],
        ["train_00002", "train", "harbour"],
    ]
    assert scenes[-1] == ["val_00004", "val", "bedroom"]
    for split, count in (("train", 9), ("val", 5)):
        stems = [f"{split}_{i:05d}" for i in range(count)]
        assert sorted(p.stem for p in (out / split / "images").iterdir()) == stems
        assert sorted(p.name for p in (out / split / "labels").iterdir()) == [f"{s}.png" for s in stems]
        for stem in stems:
            with Image.open(out / split / "images" / f"{stem}.png") as image:
                assert (image.mode, image.size) == ("RGB", (SIZE, SIZE))
            with Image.open(out / split / "labels" / f"{stem}.png") as label:
                assert (label.mode, label.size) == ("L", (SIZE, SIZE))
                assert np.array(label).max() < len(E.CLASSES)
    assert len(scenes) == 1 + 9 + 5


def test_prepare_dataset_accepts_it(params):
    target = prepare_dataset(small(params, train=4, val=4), "embedded")
    assert target == Path(params.data.root) / "embedded" and (target / "scenes.csv").is_file()


def test_same_params_same_bytes_whatever_the_workers(tmp_path, params):
    E.prepare(small(params, workers=1), tmp_path / "one")
    E.prepare(small(params, workers=2), tmp_path / "two")
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) == 2 + 2 * (9 + 5) and one == two


def test_another_seed_gives_other_images_and_more_images_keep_the_first(tmp_path, params):
    E.prepare(small(params), tmp_path / "a")
    E.prepare(small(params, seed=4), tmp_path / "b")
    E.prepare(small(params, train=12), tmp_path / "c")
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    labels = [k for k in a if "labels" in k]
    assert all(a[k] != b[k] for k in labels)
    assert all(a[k] == c[k] for k in a if k != "scenes.csv") and len(c) == len(a) + 6


def test_strips_are_height_by_width_with_objects_scaled_to_the_height(tmp_path, params):
    out = tmp_path / "out"
    E.prepare(small(params, train=4, val=1, size=[24, 80]), out)
    for stem in ("train_00000", "train_00003", "val_00000"):
        split = stem.split("_")[0]
        with Image.open(out / split / "images" / f"{stem}.png") as image:
            assert (image.mode, image.size) == ("RGB", (80, 24))
        with Image.open(out / split / "labels" / f"{stem}.png") as label:
            labels = np.array(label)
        assert labels.shape == (24, 80)
        far = E.class_id(E.SCENES[E.scene_of(int(stem[-1]))].far)
        band_rows = (labels == far).any(axis=1).nonzero()[0]
        assert band_rows.min() == 0 and band_rows.max() < 24 * (E.FAR_BAND[1] + E.FAR_WAVE)  # the top rows only
    rng = np.random.default_rng(0)
    shape = E.APPEARANCES["wardrobe"].shape
    small_blob, tall_blob = E.blob(shape, 20, 300, 10, 150, rng), E.blob(shape, 40, 300, 20, 150, rng)
    assert tall_blob.sum() > 2.5 * small_blob.sum()  # areas grow with the height squared, not with the width


def test_default_strip_is_wider_than_the_fcn_receptive_field(params):
    """The design claim of the module docstring: the FCN cannot see the whole default strip, GRAr's nodes can.

    The receptive field is measured by gradient: the input columns that reach
    the logits of the middle pixel of a 32 x 512 image, random weights.
    """
    height, width = hw(params.data.embedded.image_size)
    assert (height, width) == (32, 192) and width > 131

    def seen_columns(head: str) -> int:
        torch.manual_seed(0)
        changes = {"model.head": head, "model.grar.edges": "conv"}  # conv edges: no statistics needed
        model = build_model(with_overrides(params, changes), len(E.CLASSES)).eval()
        image = torch.randn(1, 3, 32, 512, requires_grad=True)
        model(image)["out"][0, :, 16, 256].sum().backward()
        return int((image.grad.abs().sum(dim=(0, 1, 2)) > 0).sum())

    assert seen_columns("fcn") == 131
    assert seen_columns("grar") == 512


def test_train_and_val_images_differ():
    train, _ = E.generate(0, "train", 5, (SIZE, SIZE))
    val, _ = E.generate(0, "val", 5, (SIZE, SIZE))
    again, _ = E.generate(0, "train", 5, (SIZE, SIZE))
    assert not np.array_equal(train, val) and np.array_equal(train, again)


# --- co-occurrence, from the written labels ------------------------------------------------------


def test_cooccurrence_is_block_diagonal_over_scenes(tmp_path, params):
    out = tmp_path / "out"
    E.prepare(small(params, train=40, val=4, size=[32, 96]), out)
    rows = read_csv(out / "scenes.csv")[1:41]
    presence = np.zeros((40, len(E.CLASSES)), np.int64)
    for n, (stem, _, scene) in enumerate(rows):
        with Image.open(out / "train" / "labels" / f"{stem}.png") as label:
            present = np.unique(np.array(label))
        presence[n, present] = 1
        names = {E.CLASSES[k] for k in present}
        assert names <= set(E.SCENES[scene].classes)
        assert {E.SCENES[scene].far, E.SCENES[scene].ground} <= names
    t = presence.T @ presence  # t[i, j]: images holding both i and j
    scene_of = {c: name for name, scene in E.SCENES.items() for c in scene.classes}
    for i, a in enumerate(E.CLASSES):
        for j, b in enumerate(E.CLASSES):
            if scene_of[a] != scene_of[b]:
                assert t[i, j] == 0, (a, b)
            else:
                assert t[i, j] > 0, (a, b)
    assert [t[E.class_id(s.far), E.class_id(s.far)] for s in E.SCENES.values()] == [10, 10, 10, 10]
    unique_images = [t[E.class_id(s.unique), E.class_id(s.unique)] for s in E.SCENES.values()]
    assert min(unique_images) >= 9  # painted first among objects; rarely hidden entirely


# --- what context is worth -----------------------------------------------------------------------


def test_local_only_ceiling_by_hand():
    ones = np.ones(len(E.CLASSES))
    # 4 uniques perfect, two 4-way groups at 1/7 per member, six pairs at 1/3 per member
    expected_miou = (4 * 1 + 8 * (1 / 7) + 12 * (1 / 3)) / 24
    # correct: uniques 4, each group its largest member: 2 + 6
    assert E.local_only_ceiling(ones) == pytest.approx({"pixel_accuracy": 12 / 24, "miou": expected_miou})

    pixels = np.zeros(len(E.CLASSES))
    pixels[E.class_id("bedroom.pillow")] = 3
    pixels[E.class_id("pasture.rock")] = 1
    pixels[E.class_id("bedroom.wardrobe")] = 4
    # pillow q=3/4: IoU 0.75/1.25 = 0.6; rock q=1/4: 0.25/1.75 = 1/7; wardrobe 1; absent classes left out
    assert E.local_only_ceiling(pixels) == pytest.approx({"pixel_accuracy": 7 / 8, "miou": (0.6 + 1 / 7 + 1) / 3})
    with pytest.raises(ValueError, match="expected 24 non-negative pixel counts"):
        E.local_only_ceiling(np.ones(5))


def test_twin_confusion_by_hand():
    k = len(E.CLASSES)
    assert E.twin_confusion(np.eye(k) * 7) == 0.0
    confusion = np.zeros((k, k))
    floor, grass, wall = E.class_id("bedroom.floor"), E.class_id("pasture.grass"), E.class_id("bedroom.wall")
    confusion[floor, floor] = 6
    confusion[floor, grass] = 4  # a twin: context error
    confusion[floor, wall] = 5  # another appearance: not a context error, but twin pixels all the same
    wardrobe = E.class_id("bedroom.wardrobe")
    confusion[wardrobe, E.class_id("pasture.tractor")] = 9  # not a twin class: not counted
    assert E.twin_confusion(confusion) == pytest.approx(4 / 15)
    with pytest.raises(ValueError, match="expected a 24x24 confusion matrix"):
        E.twin_confusion(np.eye(3))
