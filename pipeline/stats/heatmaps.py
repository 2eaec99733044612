"""Figures of the statistics, like the paper's Figure 3 (matplotlib, no pyplot: no global state).

- ``heatmap.png`` / ``heatmap.svg``: the full affinity ``f`` (rows: supporter i,
  columns: supported class j), classes ordered by hierarchical clustering, the
  diagonal (always 1) greyed out so the colour scale spans the off-diagonal
  values. Cells grow with the class count so 150 names stay legible; the SVG
  keeps cells as vector shapes and names as text, so it zooms and searches.
- ``clusters/cluster_NN.png``: one panel per cluster of at most 30 classes
  (``affinity.cut_clusters``), with the non-zero values written in the cells.
- ``bars/classes_AAA-BBB.png``: per-class bar charts of the top-k supporters
  (green) and opponents (red), 16 classes per file in id order.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

PER_BAR_FILE = 16
NAME_CHARS = 24
# text.parse_math off: class names and paths are drawn literally ("$\alpha$" is not TeX, and a lone "$" no error).
RC = {"svg.hashsalt": "grar", "svg.fonttype": "none", "font.size": 8, "text.parse_math": False}


def short(name: str) -> str:
    """``name`` cut to ``NAME_CHARS`` characters for axis labels."""
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def write_figures(
    out: Path, f: np.ndarray, t: np.ndarray, names: list[str], supporters: pd.DataFrame,
    order: np.ndarray, clusters: list[np.ndarray], title: str,
) -> list[Path]:
    """Write every figure into folder ``out``; return their paths."""
    written: list[Path] = []
    with matplotlib.rc_context(RC):
        figure = heatmap(f, names, order, title, annotate=False)
        for suffix in (".png", ".svg"):
            written.append(save(figure, out / f"heatmap{suffix}"))
        for number, cluster in enumerate(clusters, start=1):
            figure = heatmap(f, names, cluster, f"{title}\ncluster {number} of {len(clusters)}", annotate=True)
            written.append(save(figure, out / "clusters" / f"cluster_{number:02d}.png"))
        for start in range(0, len(names), PER_BAR_FILE):
            ids = range(start, min(start + PER_BAR_FILE, len(names)))
            figure = bars(supporters, names, np.diag(t), ids, title)
            written.append(save(figure, out / "bars" / f"classes_{ids[0]:03d}-{ids[-1]:03d}.png"))
    return written


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


def heatmap(f: np.ndarray, names: list[str], order: np.ndarray, title: str, annotate: bool) -> Figure:
    """``f`` restricted to and ordered by the classes ``order``, names on both axes."""
    n = len(order)
    values = np.ma.masked_array(f[np.ix_(order, order)], mask=np.eye(n, dtype=bool))  # (n, n)
    off_diagonal = values.compressed()
    vmax = float(off_diagonal.max()) if off_diagonal.size and off_diagonal.max() > 0 else 1.0
    figure, ax, bar = matrix_figure([names[c] for c in order], title, "supported class j", "supporter i")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(values, cmap=cmap, vmin=0.0, vmax=vmax)
    if annotate:
        for (row, col), value in np.ndenumerate(values.filled(0.0)):
            if value > 0:
                color = "black" if value > 0.6 * vmax else "white"
                ax.text(col + 0.5, row + 0.5, f"{value:.2g}", ha="center", va="center", fontsize=5, color=color)
    figure.colorbar(mesh, cax=bar, label="f[i, j]  (diagonal = 1, grey)")
    return figure


def bars(supporters: pd.DataFrame, names: list[str], images: np.ndarray, ids: range, title: str) -> Figure:
    """A grid of bar charts, one per class in ``ids``: supporters (green) above opponents (red)."""
    columns = 4
    rows = -(-len(ids) // columns)
    top_k = int(supporters["rank"].max()) if len(supporters) else 1
    panel_height = 0.5 + 0.22 * 2 * top_k
    height = panel_height * rows + 0.9
    figure = Figure(figsize=(4.4 * columns, height))
    legend = "supporters (largest f[i, j], green) and opponents (smallest, red) of each class j"
    figure.suptitle(f"{title}\n{legend}", fontsize=9)
    # Fixed margins in inches (names need ~1.2 in); constrained layout costs seconds per figure.
    figure.subplots_adjust(left=1.25 / (4.4 * columns), right=0.98, bottom=0.35 / height, top=1 - 0.75 / height,
                           wspace=0.75, hspace=0.45 * 1.6 / panel_height)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, j in zip(axes, ids):
        mine = supporters[supporters["j"] == j]
        sup, opp = mine[mine["role"] == "supporter"], mine[mine["role"] == "opponent"]
        values = np.concatenate([sup["f"].to_numpy(), opp["f"].to_numpy()])
        labels = [short(name) for name in [*sup["i_name"], *opp["i_name"]]]
        colors = ["tab:green"] * len(sup) + ["tab:red"] * len(opp)
        positions = np.arange(len(values))
        ax.barh(positions, values, color=colors)
        ax.set_yticks(positions, labels, fontsize=6)
        ax.set_ylim(2 * top_k - 0.5, -0.5)
        right = float(values.max()) * 1.35 if values.size and values.max() > 0 else 1.0
        ax.set_xlim(0, right)
        ax.tick_params(axis="x", labelsize=6)
        notes = [f"{value:.3g}" for value in values]
        for row, (i, t_ij) in enumerate(zip(opp["i"], opp["t"]), start=len(sup)):
            notes[row] = f"never (i in {images[i]} images)" if t_ij == 0 else notes[row]
        for y, value, note in zip(positions, values, notes):
            ax.text(value + right * 0.01, y, note, va="center", fontsize=5)
        ax.set_title(f"{j}: {short(names[j])} ({images[j]} images)", fontsize=7)
    for ax in axes[len(ids):]:
        ax.set_visible(False)
    return figure
