"""The SVG figures written directly: cells, colours, names and bars with exact coordinates on tiny inputs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from pipeline.stats.supporters import supporters_frame
from pipeline.stats.svg import GREEN, GREY, RED, bars_svg, colours, matrix_svg

NS = "{http://www.w3.org/2000/svg}"
F = np.array(
    [
        [1.0, 0.5, 0.0],
        [0.25, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
)
NAMES = ["sky", "a<b & c", "cow"]


def cells(svg: str, size: int) -> dict[tuple[int, int], str]:
    """(row, col) -> fill of the cell rectangles of a matrix panel with ``size``-pixel cells."""
    found = {}
    for x, y, fill in re.findall(rf'<rect x="(\d+)" y="(\d+)" width="{size}" height="{size}" fill="(#\w+)"', svg):
        found[int(y) // size, int(x) // size] = fill
    return found


def test_viridis_colours_scaled_to_vmax():
    assert colours(np.array([0.0, 0.25, 0.5, 0.9]), 0.5).tolist() == ["#440154", "#21918c", "#fde725", "#fde725"]


def test_matrix_draws_non_zero_cells_grey_diagonal_and_escaped_names():
    svg = matrix_svg(F, NAMES, np.array([0, 1, 2]), "toy: 4 images\nsecond line", annotate=False)
    ET.fromstring(svg.encode())  # well-formed XML, names escaped
    # vmax = 0.5, the largest off-diagonal value; zeros are the background (the colour of 0), not cells
    assert cells(svg, 22) == {(0, 0): GREY, (1, 1): GREY, (2, 2): GREY, (0, 1): "#fde725", (1, 0): "#21918c"}
    assert '<rect width="66" height="66" fill="#440154"/>' in svg
    assert svg.count(">a&lt;b &amp; c</text>") == 2  # row and column label
    assert ">supported class j<" in svg and ">supporter i<" in svg and ">toy: 4 images<" in svg
    assert "<title>" not in svg  # the full matrix leaves hovering to the explorer


def test_matrix_in_cluster_order_with_values():
    svg = matrix_svg(F, NAMES, np.array([1, 0]), "cluster", annotate=True)
    ET.fromstring(svg.encode())
    assert cells(svg, 26) == {(0, 0): GREY, (1, 1): GREY, (0, 1): "#21918c", (1, 0): "#fde725"}
    values = re.findall(r'text-anchor="middle" fill="(\w+)">([^<]+)</text>', svg)
    assert values == [("white", "0.25"), ("black", "0.5")]  # black above 0.6 vmax, as in the paper's panels
    assert "<title>a&lt;b &amp; c supports sky: f = 0.25</title>" in svg


def test_matrix_is_deterministic_and_survives_an_all_zero_matrix():
    order = np.array([0, 1, 2])
    assert matrix_svg(F, NAMES, order, "t", True) == matrix_svg(F.copy(), list(NAMES), order.copy(), "t", True)
    svg = matrix_svg(np.eye(3), NAMES, order, "t", annotate=True)  # no co-occurrence: vmax falls back to 1
    assert cells(svg, 26) == {(0, 0): GREY, (1, 1): GREY, (2, 2): GREY}


def test_bars_lengths_notes_and_colours():
    t = np.array([[3, 2, 0], [2, 2, 0], [0, 0, 1]])
    f = np.array([[1.0, 1.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    supporters = supporters_frame(t, f, NAMES, top_k=1)
    svg = bars_svg(supporters, NAMES, np.diag(t), range(0, 3), "toy: 3 images")
    ET.fromstring(svg.encode())
    bars = re.findall(r'<rect x="([\d.]+)" y="(\d+)" width="([\d.]+)" height="13" fill="(#\w+)"/>', svg)
    # class 0: supporter 1 (f 0.5, the panel's largest: 170 / 1.35 px), opponent 2 (never: no bar length)
    # class 1: supporter 0 (f 1.0), opponent 2; class 2: no supporter, opponent 0 (f 0, never)
    assert [(float(width), fill) for _, _, width, fill in bars] == [
        (round(170 / 1.35, 2), GREEN),
        (0.0, RED),
        (round(170 / 1.35, 2), GREEN),
        (0.0, RED),
        (0.0, RED),
    ]
    assert svg.count("never (i in 1 images)") == 2 and "never (i in 3 images)" in svg
    assert ">0: sky (3 images)<" in svg and ">1: a&lt;b &amp; c (2 images)<" in svg and ">2: cow (1 images)<" in svg
    assert ">0.5<" in svg and ">1<" in svg


def test_bars_of_an_empty_table():
    empty = pd.DataFrame({"j": [], "role": [], "rank": [], "i": [], "i_name": [], "f": [], "t": []})
    svg = bars_svg(empty, NAMES, np.zeros(3, np.int64), range(0, 2), "none")
    ET.fromstring(svg.encode())
    assert ">0: sky (0 images)<" in svg and 'fill="#2ca02c"' not in svg
