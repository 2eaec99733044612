"""Statistics figures written as SVG text directly: matrix panels and bar charts, in milliseconds.

matplotlib lays out and draws every label and cell value as an object, which at
150-171 classes costs seconds per figure (a 30 x 30 cluster panel holds up to
900 numbers; a page of bar charts 16 axes). These figures are rectangles and
text, so writing the SVG elements ourselves is exact, deterministic (no date,
no random ids) and about a hundred times faster. Names and numbers stay
``<text>``: searchable and selectable in a browser; the cells of a cluster
panel carry a ``<title>`` (hover: both names and the value; the full matrix
leaves hovering to the report's affinity explorer, keeping the file small).
Colours are matplotlib's viridis.

Coordinates are pixels; text widths are estimated (``CHAR`` em per character),
which only sizes the margins.
"""

from __future__ import annotations

from html import escape

import matplotlib
import numpy as np
import pandas as pd

FONT = "DejaVu Sans, Arial, sans-serif"
CHAR = 0.62  # estimated advance of one character, in em
GREY = "#d9d9d9"  # the diagonal (f = 1 by definition), as the PNG's "0.85" grey
GREEN, RED = "#2ca02c", "#d62728"  # matplotlib's tab:green and tab:red
NAME_CHARS = 24


def short(name: str) -> str:
    """``name`` cut to ``NAME_CHARS`` characters for labels."""
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def text(x: float, y: float, value: str, size: float, anchor: str = "start", extra: str = "") -> str:
    """One ``<text>`` element, ``value`` escaped; ``y`` is the baseline."""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" text-anchor="{anchor}"{extra}>'
        f"{escape(value, quote=False)}</text>"
    )


def document(width: float, height: float, body: list[str]) -> str:
    """A standalone SVG document of ``width`` x ``height`` pixels holding ``body``."""
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">',
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def colours(values: np.ndarray, vmax: float) -> np.ndarray:
    """Viridis hex colours (``#rrggbb``) of ``values`` scaled to [0, ``vmax``], same shape."""
    rgb = np.rint(matplotlib.colormaps["viridis"](np.clip(values / vmax, 0.0, 1.0))[..., :3] * 255).astype(int)
    flat = rgb.reshape(-1, 3)
    return np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in flat.tolist()]).reshape(values.shape)


def matrix_svg(f: np.ndarray, names: list[str], order: np.ndarray, title: str, annotate: bool) -> str:
    """``f`` restricted to and ordered by the classes ``order`` (rows: supporter i, columns: supported class j).

    The diagonal (always 1) is grey and the colour scale spans the off-diagonal
    values, as in the PNG heatmap; ``annotate`` writes the non-zero values
    (``.2g``) in the cells. Cells are drawn only where f > 0, over a background
    of the colour of 0, so a sparse 171 x 171 matrix stays small.
    """
    n = len(order)
    values = f[np.ix_(order, order)].astype(np.float64)  # (n, n)
    off = ~np.eye(n, dtype=bool)
    vmax = float(values[off].max()) if n > 1 and values[off].max() > 0 else 1.0
    labels = [short(names[c]) for c in order]
    cell = 26 if annotate else (12 if n > 40 else 22)
    size = 7 if n > 40 else 9
    margin = max(60.0, CHAR * size * max((len(name) for name in labels), default=1) + 12)
    top, left = 40.0, margin + 18  # title; names and the axis label
    side = cell * n
    width, height = left + side + 90, top + side + margin + 18
    body = [text(4, 14 + 14 * number, line, 10) for number, line in enumerate(title.splitlines()[:2])]
    body.append(f'<g transform="translate({left:.1f},{top:.1f})">')
    body.append(f'<rect width="{side}" height="{side}" fill="{colours(np.zeros(1), vmax)[0]}"/>')
    fills = colours(values, vmax)
    rows, cols = np.nonzero((values > 0) | ~off)
    for row, col in zip(rows.tolist(), cols.tolist()):
        fill = GREY if row == col else fills[row, col]
        rect = f'<rect x="{col * cell}" y="{row * cell}" width="{cell}" height="{cell}" fill="{fill}"'
        if annotate:
            hover = f"{labels[row]} supports {labels[col]}: f = {values[row, col]:.4g}"
            body.append(f"{rect}><title>{escape(hover, quote=False)}</title></rect>")
        else:
            body.append(f"{rect}/>")
    if annotate:
        for row, col in zip(rows.tolist(), cols.tolist()):
            if row != col:
                value = values[row, col]
                colour = "black" if value > 0.6 * vmax else "white"
                body.append(
                    text(
                        col * cell + cell / 2,
                        row * cell + cell / 2 + 2.5,
                        f"{value:.2g}",
                        7,
                        "middle",
                        f' fill="{colour}"',
                    )
                )
    for index, name in enumerate(labels):
        middle = index * cell + cell / 2 + size * 0.35
        body.append(text(-4, middle, name, size, "end"))
        body.append(text(0, 0, name, size, "end", f' transform="translate({middle:.1f},{side + 4}) rotate(-90)"'))
    body.append(text(side / 2, side + margin + 12, "supported class j", 9, "middle"))
    turn = f' transform="translate({-margin - 6:.1f},{side / 2}) rotate(-90)"'
    body.append(text(0, 0, "supporter i", 9, "middle", turn))
    body.append("</g>")
    body += colour_bar(left + side + 14, top, side, vmax)
    return document(width, height, body)


def colour_bar(x: float, y: float, height: float, vmax: float, steps: int = 64) -> list[str]:
    """A vertical viridis bar from 0 (bottom) to ``vmax`` (top) with three ticks and its label."""
    step = height / steps
    fills = colours(np.linspace(vmax, 0.0, steps), vmax)
    body = [
        f'<rect x="{x:.1f}" y="{y + index * step:.2f}" width="14" height="{step + 0.3:.2f}" fill="{fill}"/>'
        for index, fill in enumerate(fills)
    ]
    for fraction in (0.0, 0.5, 1.0):
        body.append(text(x + 18, y + height * (1 - fraction) + 3, f"{vmax * fraction:.3g}", 8))
    body.append(
        text(
            0,
            0,
            "f[i, j]  (diagonal = 1, grey)",
            9,
            "middle",
            f' transform="translate({x + 58:.1f},{y + height / 2:.1f}) rotate(-90)"',
        )
    )
    return body


def bars_svg(supporters: pd.DataFrame, names: list[str], images: np.ndarray, ids: range, title: str) -> str:
    """A grid of bar charts (4 columns), one per class in ``ids``: supporters (green) above opponents (red).

    Each bar is ``f[i, j]``, written beside it; an opponent that never
    co-occurs with j reads ``never (i in N images)``.
    """
    columns, bar, gap = 4, 13, 3
    top_k = int(supporters["rank"].max()) if len(supporters) else 1
    label_width, plot_width = 150, 170
    panel_width, panel_height = label_width + plot_width + 20, 26 + 2 * top_k * (bar + gap)
    rows = -(-len(ids) // columns)
    width, height = columns * panel_width + 10, 44 + rows * panel_height
    legend = "supporters (largest f[i, j], green) and opponents (smallest, red) of each class j"
    body = [text(8, 16, title.splitlines()[0] if title else "", 11), text(8, 32, legend, 10)]
    j_of, role = supporters["j"].to_numpy(), supporters["role"].to_numpy(str)
    i_of, f_of, t_of = supporters["i"].to_numpy(), supporters["f"].to_numpy(), supporters["t"].to_numpy()
    i_names = supporters["i_name"].to_numpy(str)
    for slot, j in enumerate(ids):
        x0 = 8 + (slot % columns) * panel_width
        y0 = 44 + (slot // columns) * panel_height
        body.append(text(x0, y0 + 12, f"{j}: {short(names[j])} ({images[j]} images)", 9))
        mine = j_of == j  # rows are already supporters then opponents, by rank
        sup, opp = np.flatnonzero(mine & (role == "supporter")), np.flatnonzero(mine & (role == "opponent"))
        values = f_of[np.concatenate([sup, opp])]
        right = float(values.max()) * 1.35 if values.size and values.max() > 0 else 1.0
        x_plot = x0 + label_width
        body.append(
            f'<line x1="{x_plot}" y1="{y0 + 18}" x2="{x_plot}" y2="{y0 + panel_height - 6}" '
            f'stroke="black" stroke-width="0.6"/>'
        )
        entries = [(i_names[r], f_of[r], GREEN, f"{f_of[r]:.3g}") for r in sup]
        entries += [
            (i_names[r], f_of[r], RED, f"never (i in {images[i_of[r]]} images)" if t_of[r] == 0 else f"{f_of[r]:.3g}")
            for r in opp
        ]
        for row, (i_name, value, fill, note) in enumerate(entries):
            y = y0 + 20 + row * (bar + gap)
            length = plot_width * float(value) / right
            body.append(text(x_plot - 4, y + bar - 3, short(str(i_name)), 8, "end"))
            body.append(f'<rect x="{x_plot}" y="{y}" width="{length:.2f}" height="{bar}" fill="{fill}"/>')
            body.append(text(x_plot + length + 3, y + bar - 3, note, 7))
    return document(width, height, body)
