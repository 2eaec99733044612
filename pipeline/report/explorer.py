"""The affinity explorer: one self-contained HTML page per dataset (``datasets/<name>-explorer.html``).

Everything it shows is embedded in the page as JSON (no network, no CDN, works
from ``file://``; vanilla JavaScript in ``templates/explorer.html.j2``):

- ``names`` (K class names), ``order`` (the statistics' hierarchical-clustering
  order, ``pipeline.stats.affinity.cluster_order``), ``t`` (K x K co-occurrence
  counts, row i, column j), ``images`` (t_jj);
- ``normalisations``: for every normalisation of
  ``pipeline.stats.affinity.NORMALISATIONS`` (printed and conditional) its
  description, ``f`` (K x K, recomputed from t exactly as the trainer does,
  6 decimals) and per class j its ranked ``supporters`` and ``opponents`` (ids i,
  ``pipeline.stats.supporters.rank_supporters`` with ``TOP`` of each);
- ``normalisation``: the one the statistics were written with (shown first).

The page draws the clustered heatmap on a canvas (cell size adjustable, so 171
class names stay legible; the grid scrolls), shows both class names, t_ij and
f_ij under every normalisation on hover, lists a clicked class's supporters
and opponents with bars, finds a class by name, and switches the normalisation
that colours the heatmap and ranks the lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stats.affinity import DESCRIPTIONS, NORMALISATIONS, cluster_order
from pipeline.stats.files import COOCCURRENCE_PARQUET, load_counts, read_metadata
from pipeline.stats.supporters import rank_supporters

TOP = 10  # supporters and opponents listed per class


def explorer_data(stats: Path, names: list[str]) -> dict[str, Any]:
    """The JSON the explorer embeds, from ``stats/cooccurrence.parquet`` and the class ``names``."""
    t = load_counts(stats / COOCCURRENCE_PARQUET, len(names))  # (K, K)
    order, _ = cluster_order(t)
    normalisations = {}
    for name, normalise in NORMALISATIONS.items():
        f = normalise(t)  # (K, K)
        ranked: dict[str, list[list[int]]] = {"supporter": [[] for _ in names], "opponent": [[] for _ in names]}
        for j, role, _, i in rank_supporters(t, f, TOP):
            ranked[role][j].append(i)
        normalisations[name] = {
            "description": DESCRIPTIONS[name],
            "f": np.round(f, 6).tolist(),
            "supporters": ranked["supporter"],
            "opponents": ranked["opponent"],
        }
    metadata = read_metadata(stats / COOCCURRENCE_PARQUET)
    return {
        "dataset": str(metadata.get("dataset", stats.name)),
        "names": list(names),
        "order": [int(c) for c in order],
        "t": t.tolist(),
        "images": np.diag(t).tolist(),
        "normalisation": str(metadata.get("normalisation", "printed")),
        "normalisations": normalisations,
    }


def embedded_json(data: dict[str, Any]) -> str:
    """``data`` as JSON safe inside ``<script type="application/json">`` (no ``</`` can close the element)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
