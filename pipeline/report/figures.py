"""Figures of the report (matplotlib ``Figure`` objects, no pyplot: no global state; saved like the statistics').

- ``training_curves``: every loss term and the learning rate against the
  iteration, one line per seed, from each run's ``train_log.csv``.
- ``lambda_curves``: GRAr's λ and λ̂ against the iteration, one line per seed.
- ``edges_figure``: f beside the learnt e^p and e^n of a conv run (``pipeline.report.edges``).
- ``confusion_figure``: a run's confusion matrix, row-normalised (each ground-truth
  class sums to 1; a class absent from the ground truth is a grey row), class
  names on both axes; cells grow with the class count so 150 names stay legible.
- ``qualitative_figure``: like the paper's Figure 5: image, ground truth and the
  predictions of several models, one row per validation image, with a legend of
  the classes shown.
- ``palette``: one colour per class id, the same in every figure (the PASCAL VOC
  bit-interleaving colour map, shifted by one so no class is black; black is the
  ignore index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.datasets.layout import colourise, palette
from pipeline.stats.heatmaps import matrix_figure, short

NOT_TERMS = ("iteration", "lr", "seconds", "lambda_pos", "lambda_neg")
LAMBDA_NAMES = {"lambda_pos": "λ (positive, Eq. 2)", "lambda_neg": "λ̂ (negative, Eq. 3)"}
MAX_POINTS = 2000  # longer logs are averaged into this many bins per curve


def _binned(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_POINTS`` points: the mean of consecutive bins of equal size."""
    if len(x) <= MAX_POINTS:
        return x, y
    edges = np.linspace(0, len(x), MAX_POINTS + 1).astype(int)
    return (
        np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]),
        np.array([np.nanmean(y[a:b]) for a, b in zip(edges[:-1], edges[1:])]),
    )


def training_curves(logs: Mapping[int, pd.DataFrame], title: str) -> Figure:
    """Loss terms (left) and learning rate (right) against the iteration; one line style per seed."""
    figure = Figure(figsize=(10, 3.6))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.86, wspace=0.25)
    loss_ax, lr_ax = figure.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    colours = matplotlib.colormaps["tab10"].colors
    terms = [
        column
        for log in logs.values()
        for column in log.columns
        if column not in NOT_TERMS and log[column].notna().any()
    ]  # a term the run lacks is logged empty
    terms = list(dict.fromkeys(terms))  # first-seen order, loss first
    for position, (seed, log) in enumerate(sorted(logs.items())):
        style = styles[position % len(styles)]
        x = log["iteration"].to_numpy(float)
        for colour, term in zip(colours, terms):
            if term in log and log[term].notna().any():
                bx, by = _binned(x, log[term].to_numpy(float))
                loss_ax.plot(bx, by, style, color=colour, linewidth=1, label=f"{term} (seed {seed})")
        bx, by = _binned(x, log["lr"].to_numpy(float))
        lr_ax.plot(bx, by, style, color="black", linewidth=1, label=f"seed {seed}")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("loss (weighted terms as logged)")
    loss_ax.legend(fontsize=6, ncol=2)
    lr_ax.set_xlabel("iteration")
    lr_ax.set_ylabel("learning rate")
    lr_ax.legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    return figure


def lambda_curves(logs: Mapping[int, pd.DataFrame], title: str) -> Figure | None:
    """GRAr's λ and λ̂ against the iteration (``train_log.csv`` columns ``lambda_pos``, ``lambda_neg``), one line
    style per seed; ``None`` when no log has them (other heads, logs from before they were logged)."""
    present = [
        (seed, log, column)
        for seed, log in sorted(logs.items())
        for column in LAMBDA_NAMES
        if column in log and log[column].notna().any()
    ]
    if not present:
        return None
    figure = Figure(figsize=(6, 3.4))
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.16, top=0.86)
    ax = figure.subplots()
    styles = ["-", "--", ":", "-."]
    seeds = sorted({seed for seed, _, _ in present})
    colours = {"lambda_pos": "tab:green", "lambda_neg": "tab:red"}
    for seed, log, column in present:
        bx, by = _binned(log["iteration"].to_numpy(float), log[column].to_numpy(float))
        ax.plot(
            bx,
            by,
            styles[seeds.index(seed) % len(styles)],
            color=colours[column],
            linewidth=1,
            label=f"{LAMBDA_NAMES[column]} (seed {seed})",
        )
    ax.axhline(0, color="0.6", linewidth=0.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("value after the step")
    ax.legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    return figure


def edges_figure(
    prior: np.ndarray, positive: np.ndarray, negative: np.ndarray, names: Sequence[str], title: str
) -> Figure:
    """f, learnt e^p and learnt e^n side by side, in the given class order (diagonal greyed out)."""
    n = len(names)
    cell = 0.12 if n > 40 else 0.22
    side = max(cell * n, 2.2)
    figure = Figure(figsize=(3 * side + 3.2, side + 1.9))
    axes = figure.subplots(1, 3)
    figure.subplots_adjust(left=1.4 / (3 * side + 3.2), right=0.98, bottom=1.2 / (side + 1.9), top=0.86, wspace=0.25)
    labels = [short(name) for name in names]
    fontsize = 4 if n > 40 else 6
    for ax, matrix, label in zip(axes, (prior, positive, negative), ("f (statistics)", "learnt e^p", "learnt e^n")):
        values = np.ma.masked_array(matrix, mask=np.eye(n, dtype=bool))  # (n, n)
        image = ax.imshow(
            values, cmap=matplotlib.colormaps["viridis"].with_extremes(bad="0.85"), interpolation="nearest"
        )
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(label, fontsize=8)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), labels if ax is axes[0] else [], fontsize=fontsize)
    figure.suptitle(title, fontsize=9)
    return figure


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """(K, K) counts -> each row divided by its sum; NaN rows for classes absent from the ground truth."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)  # (K, 1)
    out = np.full(matrix.shape, np.nan)
    np.divide(matrix, totals, out=out, where=totals > 0)
    return out


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """The row-normalised confusion matrix, rows = ground truth, columns = prediction, names on both axes."""
    values = row_normalised(matrix)  # (K, K)
    k = len(values)
    figure, ax, bar = matrix_figure(list(names), title, "predicted class", "ground-truth class")
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="0.85")
    # One K x K raster embedded unresampled (interpolation none; not K * K vector cells): small, fast SVGs
    # even at 150 classes, names stay text.
    mesh = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        interpolation="none",
        extent=(0, k, k, 0),
        aspect="auto",
    )
    if k <= 40:
        for (row, col), value in np.ndenumerate(np.nan_to_num(values)):
            if value >= 0.005:
                ax.text(
                    col + 0.5,
                    row + 0.5,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if value > 0.6 else "black",
                )
    figure.colorbar(mesh, cax=bar, label="fraction of the ground-truth class's pixels (grey: class absent)")
    return figure


WIDE = 2  # width / height from which qualitative panels are stacked, not side by side


def qualitative_figure(
    examples: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping[str, np.ndarray]]],
    names: Sequence[str],
    title: str,
) -> Figure:
    """One row per (stem, image (H, W, 3) uint8, ground truth (H, W), {model: prediction (H, W)}).

    Columns: image, ground truth, then each model in the order given (e.g. FCN baseline, GRAr).
    Images at least ``WIDE`` times wider than high (the embedded strips) are
    stacked instead: each example is a column of panels, read top to bottom.
    """
    colours = palette(len(names))
    models = list(examples[0][3]) if examples else []
    columns = 2 + len(models)
    rows = max(len(examples), 1)
    height, width = examples[0][2].shape if examples else (1, 1)
    wide = width >= WIDE * height
    if wide:  # panels 6 inches wide, stacked: rows x columns panels in one column
        panel_h = 6.0 * height / width + 0.25
        fig_w = 1.4 + 6.0 + 2.6  # inches: headings, panels, then the legend
        right = 1 - 2.6 / fig_w
        figure = Figure(figsize=(fig_w, panel_h * rows * columns + 0.3 * rows + 0.6))
        figure.subplots_adjust(left=1.4 / fig_w, right=right, bottom=0.02, top=0.95, hspace=0.35)
        axes = figure.subplots(rows * columns, 1, squeeze=False)[:, 0].reshape(rows, columns)
    else:
        fig_w = 2.2 * columns + 2.6  # inches: panels, then the legend
        right = 1 - 2.6 / fig_w
        figure = Figure(figsize=(fig_w, 2.2 * rows + 0.6))
        figure.subplots_adjust(left=0.03, right=right, bottom=0.02, top=0.9, wspace=0.04, hspace=0.12)
        axes = figure.subplots(rows, columns, squeeze=False)
    shown: set[int] = set()
    for row, (stem, image, gt, predictions) in enumerate(examples):
        panels = [("image", image), ("ground truth", colourise(gt, colours))]
        panels += [(model, colourise(prediction, colours)) for model, prediction in predictions.items()]
        for label in [gt, *predictions.values()]:
            shown |= {int(c) for c in np.unique(label) if c < len(names)}
        for ax, (heading, picture) in zip(axes[row], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if wide:
                ax.set_ylabel(heading, fontsize=8, rotation=0, ha="right", va="center")
            elif row == 0:
                ax.set_title(heading, fontsize=9)
        if wide:
            axes[row][0].set_title(stem, fontsize=8, loc="left")
        else:
            axes[row][0].set_ylabel(stem, fontsize=7)
    handles = [Patch(color=colours[c] / 255, label=short(names[c])) for c in sorted(shown)]
    handles.append(Patch(color="black", label="ignored"))
    figure.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(right + 0.01, 0.9),
        fontsize=6,
        ncol=1 + len(handles) // 40,
        frameon=False,
    )
    figure.suptitle(title, fontsize=9)
    return figure
