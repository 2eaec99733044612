"""Figures of the statistics, like the paper's Figure 3, and the matplotlib helpers the report shares.

- ``heatmap.svg``: the full affinity ``f`` (rows: supporter i, columns:
  supported class j), classes ordered by hierarchical clustering, the diagonal
  (always 1) greyed out so the colour scale spans the off-diagonal values.
  Cells grow with the class count so 171 names stay legible; cells are vector
  rectangles and names text, so it zooms and searches. The report shows it on
  the dataset page.
- ``clusters/cluster_NN.svg``: one panel per cluster of at most 30 classes
  (``affinity.cut_clusters``), with the non-zero values written in the cells
  and each cell's names and value on hover.
- ``bars/classes_AAA-BBB.svg``: per-class bar charts of the top-k supporters
  (green) and opponents (red), 16 classes per file in id order.

All three are written as SVG text (``pipeline.stats.svg``): matplotlib took
seconds per figure for these rectangles and labels (about 20 s for 150
classes), the SVG writer milliseconds. A raster copy of the full heatmap would be
a 4000-pixel PNG costing more than the rest of the stage; the page shows the SVG.
``matrix_figure``, ``save``, ``RC`` and ``short`` serve the report's matplotlib figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline.stats.svg import NAME_CHARS, bars_svg, matrix_svg, short

__all__ = ["NAME_CHARS", "RC", "matrix_figure", "save", "short", "write_figures"]

PER_BAR_FILE = 16
# text.parse_math off: class names and paths are drawn literally ("$\alpha$" is not TeX, and a lone "$" no error).
RC = {"svg.hashsalt": "grar", "svg.fonttype": "none", "font.size": 8, "text.parse_math": False}


def write_figures(
    out: Path,
    f: np.ndarray,
    t: np.ndarray,
    names: list[str],
    supporters: pd.DataFrame,
    order: np.ndarray,
    clusters: list[np.ndarray],
    title: str,
) -> list[Path]:
    """Write every figure into folder ``out``; return their paths."""
    written = [write_svg(out / "heatmap.svg", matrix_svg(f, names, order, title, annotate=False))]
    for number, cluster in enumerate(clusters, start=1):
        panel = matrix_svg(f, names, cluster, f"{title}\ncluster {number} of {len(clusters)}", annotate=True)
        written.append(write_svg(out / "clusters" / f"cluster_{number:02d}.svg", panel))
    images = np.diag(t)
    for start in range(0, len(names), PER_BAR_FILE):
        ids = range(start, min(start + PER_BAR_FILE, len(names)))
        chart = bars_svg(supporters, names, images, ids, title)
        written.append(write_svg(out / "bars" / f"classes_{ids[0]:03d}-{ids[-1]:03d}.svg", chart))
    return written


def write_svg(path: Path, document: str) -> Path:
    """Write the SVG ``document`` to ``path`` (UTF-8), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def save(figure: Figure, path: Path) -> Path:
    """Save ``figure`` to ``path`` (format from the suffix) without a date stamp, so reruns give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if path.suffix == ".svg" else {"Software": None}
    figure.savefig(path, dpi=150, metadata=metadata)
    return path


def matrix_figure(names: list[str], title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes, Axes]:
    """A square n x n panel (cell (row, col) spans [col, col + 1] x [row, row + 1], row 0 on top) with the
    ``names`` on both axes, and the axes of its colour bar. Cells grow with n, so 150 names stay legible."""
    n = len(names)
    cell = 0.14 if n > 40 else 0.32
    margin, side = 1.9, max(cell * n, 2.5)  # inches: names, plot
    width, height = margin + side + 1.2, margin + side + 0.9
    figure = Figure(figsize=(width, height))
    ax = figure.add_axes((margin / width, margin / height, side / width, side / height))
    ticks = np.arange(n) + 0.5
    labels = [short(name) for name in names]
    fontsize = 6 if n > 40 else 8
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8, loc="left")
    bar = figure.add_axes(((margin + side + 0.2) / width, margin / height, 0.18 / width, side / height))
    return figure, ax, bar
