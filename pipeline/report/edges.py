"""Prior vs learned edges: what GRAr's learnable edges became, beside the statistics they replace.

For a run with ``model.grar.edges: conv`` the head learns e^p and e^n (the
``(N, N)`` parameters ``head.reasoning.positive_edges`` and
``head.reasoning.negative_edges`` of ``model.heads.grar.RegionGraphReasoning``)
from scratch, where ``edges: graph`` uses the dataset's f and 1 − f (Eq. 2-3).
``learned_vs_prior`` reads them from the run's checkpoint and sets them beside f
(the run's dataset statistics under the run's ``stats.normalisation``), all in
the class order of the statistics' hierarchical clustering
(``pipeline.stats.affinity.cluster_order``), with the Spearman rank correlation
over the off-diagonal pairs (i != j; the diagonal is 1 by definition in f):
rho(e^p, f), and rho(e^n, 1 − f) (= −rho(e^n, f)). A rho near 0 means the
learnt edges found another structure than co-occurrence; near 1, that they
rediscovered it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from pipeline.errors import ConfigError, DataError
from pipeline.rundir import CHECKPOINT_FILE, CONFIG_FILE
from pipeline.safe_yaml import parse_yaml
from pipeline.stats.affinity import cluster_order, frequency
from pipeline.stats.files import load_counts

POSITIVE, NEGATIVE = "head.reasoning.positive_edges", "head.reasoning.negative_edges"


@dataclass(frozen=True)
class LearnedEdges:
    """f, e^p and e^n of one conv run, each (K, K) in ``order``, and their rank correlations."""

    prior: np.ndarray  # f, reordered
    positive: np.ndarray  # e^p, reordered
    negative: np.ndarray  # e^n, reordered
    names: list[str]  # class names in order
    order: np.ndarray  # (K,) class ids
    rho_positive: float  # Spearman(e^p, f), off the diagonal
    rho_negative: float  # Spearman(e^n, 1 - f), off the diagonal
    normalisation: str


def off_diagonal_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two (K, K) matrices over the pairs i != j; NaN when one is constant there."""
    mask = ~np.eye(len(a), dtype=bool)
    if np.ptp(a[mask]) == 0 or np.ptp(b[mask]) == 0:
        return float("nan")  # no ranks to correlate (e.g. every class in every image: f constant)
    return float(spearmanr(a[mask], b[mask]).statistic)


def run_normalisation(run_dir: Path) -> str:
    """``stats.normalisation`` of a run's ``config.yaml`` (``printed`` when absent)."""
    try:
        path = run_dir / CONFIG_FILE
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        return str(raw["stats"]["normalisation"])
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ConfigError):
        return "printed"


def learned_vs_prior(run_dir: Path, cooccurrence: Path, names: list[str]) -> LearnedEdges | None:
    """The comparison for the conv run in ``run_dir`` (``None`` when its checkpoint has no learnt edges)."""
    import torch

    path = run_dir / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if POSITIVE not in state or NEGATIVE not in state:
        return None
    positive = state[POSITIVE].float().numpy().astype(np.float64)  # (K, K)
    negative = state[NEGATIVE].float().numpy().astype(np.float64)  # (K, K)
    t = load_counts(cooccurrence, len(positive))  # (K, K)
    normalisation = run_normalisation(run_dir)
    f = frequency(t, normalisation)
    order, _ = cluster_order(t)
    grid = np.ix_(order, order)
    return LearnedEdges(
        f[grid],
        positive[grid],
        negative[grid],
        [names[c] for c in order],
        order,
        off_diagonal_spearman(positive, f),
        off_diagonal_spearman(negative, 1 - f),
        normalisation,
    )
