"""Figures: the class palette, row normalisation, curves, confusion matrices, and qualitative examples
(fabricated arrays, then predictions of two checkpoints trained for real on a tiny dataset)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from report_runs import write_dataset

from pipeline.config import with_overrides
from pipeline.paths import dataset_dir
from pipeline.report import qualitative
from pipeline.report.figures import (
    MAX_POINTS,
    _binned,
    colourise,
    confusion_figure,
    palette,
    qualitative_figure,
    row_normalised,
    training_curves,
)
from pipeline.report.runs import load_grids
from pipeline.report.site import write_report
from pipeline.stats.compute import StatsJob, build_stats


def test_palette_is_the_voc_map_shifted_by_one():
    colours = palette(150)
    assert colours[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]  # VOC 1..4
    assert len({tuple(c) for c in colours}) == 150 and not (colours == 0).all(axis=1).any()  # distinct, none black
    assert np.array_equal(palette(150), colours) and np.array_equal(palette(3), colours[:3])


def test_colourise_paints_ignore_black():
    label = np.array([[0, 2, 255], [1, 1, 7]], np.uint8)  # 7: beyond a 3-class palette
    out = colourise(label, palette(3))
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [128, 0, 0] and out[0, 1].tolist() == [128, 128, 0]
    assert out[0, 2].tolist() == [0, 0, 0] and out[1, 2].tolist() == [0, 0, 0]


def test_row_normalised():
    values = row_normalised(np.array([[1, 3, 0], [0, 0, 0], [2, 2, 4]]))
    assert values[0].tolist() == [0.25, 0.75, 0.0] and values[2].tolist() == [0.25, 0.25, 0.5]
    assert all(math.isnan(v) for v in values[1])  # a class absent from the ground truth


def test_binned_curves_keep_long_logs_short():
    x = np.arange(1, 5001, dtype=float)
    bx, by = _binned(x, 2 * x)
    assert len(bx) == MAX_POINTS and bx[:2].tolist() == [1.5, 4.0] and by[:2].tolist() == [3.0, 8.0]  # 1-2, 3-5
    assert _binned(x[:7], x[:7])[0].tolist() == x[:7].tolist()


def test_training_curves_one_line_per_term_and_seed():
    log = pd.DataFrame(
        {
            "iteration": [1, 2, 3],
            "lr": [0.03, 0.02, 0.01],
            "loss": [3.0, 2.0, 1.0],
            "ce": [2.0, 1.5, 0.7],
            "aux": [0.5, 0.4, 0.3],
            "sr": [None] * 3,  # no SR term
            "seconds": [0.1, 0.1, 0.1],
        }
    )
    figure = training_curves({0: log, 1: log.iloc[:2]}, "t")
    loss_ax, lr_ax = figure.axes
    assert [line.get_label() for line in loss_ax.lines] == [
        "loss (seed 0)",
        "ce (seed 0)",
        "aux (seed 0)",
        "loss (seed 1)",
        "ce (seed 1)",
        "aux (seed 1)",
    ]
    assert lr_ax.lines[0].get_ydata().tolist() == [0.03, 0.02, 0.01] and len(lr_ax.lines[1].get_xdata()) == 2


def test_confusion_figure_grows_with_classes_and_names_them():
    names = [f"class {c}" for c in range(150)]
    figure = confusion_figure(np.eye(150, dtype=np.int64), names, "t")
    width, height = figure.get_size_inches()
    assert width >= 0.14 * 150 and height >= 0.14 * 150
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["class 0", "class 1"]
    small = confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], "t")
    assert sorted(t.get_text() for t in small.axes[0].texts) == ["0.25", "0.75", "1.00"]  # zeros unwritten


def test_qualitative_figure_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (5, 7)).astype(np.uint8)  # (H, W)
    examples = [
        (
            f"s{n}",
            rng.integers(0, 256, (5, 7, 3)).astype(np.uint8),
            gt,
            {"FCN baseline": np.zeros((5, 7), np.uint8), "GRAr": gt},
        )
        for n in range(2)
    ]
    figure = qualitative_figure(examples, ["wall", "floor", "sky", "tree"], "t")
    axes = figure.axes
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["image", "ground truth", "FCN baseline", "GRAr"]
    assert np.array_equal(axes[3].images[0].get_array(), colourise(gt, palette(4)))
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["wall", "floor", "sky", "ignored"]  # the classes shown ("tree" is not)


def test_wide_images_stack_their_panels(tmp_path):
    gt = np.tile(np.arange(3, dtype=np.uint8), (4, 8))  # (4, 24): six times wider than high
    examples = [(f"s{n}", np.zeros((4, 24, 3), np.uint8), gt, {"FCN baseline": gt, "GRAr": gt}) for n in range(2)]
    figure = qualitative_figure(examples, ["wall", "floor", "sky"], "t")
    axes = figure.axes
    assert len(axes) == 2 * 4
    assert [ax.get_ylabel() for ax in axes] == ["image", "ground truth", "FCN baseline", "GRAr"] * 2
    assert [axes[0].get_title(loc="left"), axes[4].get_title(loc="left")] == ["s0", "s1"]
    positions = [ax.get_position() for ax in axes]
    assert len({round(p.x0, 6) for p in positions}) == 1  # one column
    assert all(a.y0 > b.y0 for a, b in zip(positions, positions[1:]))  # read top to bottom
    figure.savefig(tmp_path / "wide.png")


def test_qualitative_examples_from_real_checkpoints(params, runs, tmp_path):
    """Two runs trained for real (2 iterations, 17 x 19 images): the figure holds their checkpoints' predictions."""
    from pipeline.training.run import load_run_model, run_cell

    torch.set_num_threads(1)
    tiny = {
        "stats.workers": 1,
        "train.schedules.embedded.iterations": 2,
        "train.crop_size": 16,
        "train.batch_size": 2,
        "eval.multi_scale": False,
        "model.width": 16,
        "train.checkpoint_every": 2,
    }
    params = with_overrides(params, tiny)
    write_dataset(dataset_dir(params, "embedded"), images=3, size=(17, 19))
    build_stats(StatsJob.for_dataset(params, "embedded"))
    for cell, overrides in list(params.grid.cells("table1").items())[:2]:  # fcn, grar
        run_dir = Path(params.grid.runs) / f"{cell}-s0"
        runs.record("table1", cell, 0, run_dir, run_cell(with_overrides(params, overrides), run_dir))
    chosen = qualitative.pick_runs(load_grids(params)["table1"])
    assert {heading: run.cell for heading, run in chosen.items()} == {"FCN baseline": "fcn", "GRAr": "grar"}
    loaded = qualitative.load_examples(dataset_dir(params, "embedded"), 2)
    assert [stem for stem, _, _ in loaded] == ["val_000", "val_001"] and loaded[0][1].shape == (17, 19, 3)
    predictions = qualitative.predict(chosen["GRAr"], [image for _, image, _ in loaded])
    model, _ = load_run_model(chosen["GRAr"].run_dir)
    from pipeline.training.data import image_tensor

    expected = model.predict(image_tensor(loaded[1][1]).unsqueeze(0)).argmax(1)[0].numpy()
    assert predictions[1].shape == (17, 19) and np.array_equal(predictions[1], expected)
    summary = write_report(params, tmp_path / "reports", examples=2)
    assert not summary.notes
    figure = Image.open(tmp_path / "reports" / "figures" / "qualitative" / "embedded.png")
    assert figure.size[0] > figure.size[1] > 300
    assert "figures/qualitative/embedded.png" in (tmp_path / "reports" / "datasets" / "embedded.html").read_text()


@pytest.mark.parametrize("cells", [("fcn",), ("grar",)])
def test_qualitative_needs_both_models(params, runs, cells):
    for cell in cells:
        runs.done("table1", cell, 0, 0.5)
    assert qualitative.pick_runs(load_grids(params)["table1"]) is None
