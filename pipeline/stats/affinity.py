"""Class affinity from co-occurrence counts: Eq. 1 (three readings) and the clustering distance.

``t[i, j]`` is the number of images holding both classes i and j (``t[i, i]``: the
images holding i). Three normalisations turn it into the affinity ``f[i, j]``, the
support class i gives class j (GRAr's positive edge ``e^p_ij = f_ij``, its
negative edge ``e^n_ij = 1 - f_ij``, Eq. 2-3):

- ``printed`` -- Eq. 1 exactly as printed::

      f_ij = t_ij / (sum_k t_kj - t_jj)   for i != j,      f_jj = 1

  The denominator is column j's total co-occurrence with the other classes, so
  each column (i != j) sums to 1: f_ij is the share of j's co-occurrences that
  involve i. Note that this normalises by the supported class j, which does not
  match the text's example: in PASCAL-Context "aeroplane strongly supports sky"
  would need a large f[aeroplane, sky], but sky co-occurs with many classes, so
  its column is spread thin and that entry is small.
- ``conditional`` -- the reading that matches the example::

      f_ij = P(j | i) = t_ij / t_ii   for i != j,      f_jj = 1

  the fraction of images holding i that also hold j: an aeroplane image almost
  always shows sky (f[aeroplane, sky] near 1), a sky image seldom an aeroplane.
- ``row`` -- Eq. 1's denominator taken over the supporting class i instead::

      f_ij = t_ij / (sum_k t_ik - t_ii)   for i != j,      f_ii = 1

  each row (j != i) sums to 1: f_ij is the share of i's co-occurrences that
  involve j. It normalises by i as ``conditional`` does, but spreads a row
  over all of i's partners, so its values are small when K is large.

**The 0/0 case.** A denominator is 0 when class j co-occurs with no other class
(``printed``: j absent from the split, or only ever alone in its images) or when
class i is absent (``conditional``: ``t_ii = 0``) or co-occurs with no other
class (``row``). The numerator is then 0 too;
we define f_ij = 0 for i != j (no evidence of support, hence full negative edge
1 - f = 1), and keep f_jj = 1 on the diagonal as Eq. 1 does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage, to_tree
from scipy.spatial.distance import squareform

from pipeline.errors import ConfigError


def printed_frequency(t: np.ndarray) -> np.ndarray:
    """Eq. 1 as printed: ``f_ij = t_ij / (sum_k t_kj - t_jj)``, ``f_jj = 1``; 0/0 -> 0."""
    diagonal = np.diag(t)  # (K,)
    return finish(t, t.sum(axis=0) - diagonal, axis=0)


def conditional_frequency(t: np.ndarray) -> np.ndarray:
    """``f_ij = P(j | i) = t_ij / t_ii``, ``f_jj = 1``; 0/0 (class i absent) -> 0."""
    return finish(t, np.diag(t), axis=1)


def row_frequency(t: np.ndarray) -> np.ndarray:
    """``f_ij = t_ij / (sum_k t_ik - t_ii)``, ``f_ii = 1``: Eq. 1 normalised over the supporter's row; 0/0 -> 0."""
    return finish(t, t.sum(axis=1) - np.diag(t), axis=1)


def edge_spread(f: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of the positive (f) and negative (1 - f) edges off the diagonal.

    What GRAr's graph can carry: edges that are all alike (a small std) weigh
    every pair of regions the same. Keys ``positive_mean``, ``positive_std``,
    ``negative_mean``, ``negative_std`` (population std, ddof 0); NaN for K < 2.
    """
    off = f[~np.eye(f.shape[0], dtype=bool)].astype(np.float64)  # (K (K - 1),)
    if off.size == 0:
        nan = float("nan")
        return {"positive_mean": nan, "positive_std": nan, "negative_mean": nan, "negative_std": nan}
    return {
        "positive_mean": float(off.mean()),
        "positive_std": float(off.std()),
        "negative_mean": float((1 - off).mean()),
        "negative_std": float((1 - off).std()),
    }


def finish(t: np.ndarray, denominator: np.ndarray, axis: int) -> np.ndarray:
    """``t`` divided by ``denominator`` along ``axis`` (0: per column j, 1: per row i); 0 where it is 0; diagonal 1."""
    shape = (1, -1) if axis == 0 else (-1, 1)
    denominator = denominator.astype(np.float64).reshape(shape)
    f = np.divide(t, denominator, out=np.zeros(t.shape, np.float64), where=denominator > 0)  # (K, K)
    np.fill_diagonal(f, 1.0)
    return f


NORMALISATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "printed": printed_frequency,
    "conditional": conditional_frequency,
    "row": row_frequency,
}

DESCRIPTIONS = {
    "printed": "Eq. 1 as printed: f_ij = t_ij / (sum_k t_kj - t_jj)",
    "conditional": "conditional: f_ij = P(j | i) = t_ij / t_ii",
    "row": "row: f_ij = t_ij / (sum_k t_ik - t_ii)",
}


def normaliser(normalisation: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function of ``NORMALISATIONS`` named ``normalisation``; ``ConfigError`` listing the names otherwise."""
    try:
        return NORMALISATIONS[normalisation]
    except KeyError:
        raise ConfigError(f"normalisation {normalisation!r} unknown; allowed: {', '.join(NORMALISATIONS)}") from None


def frequency(t: np.ndarray, normalisation: str) -> np.ndarray:
    """The affinity ``f`` (K, K, float64) of counts ``t`` under ``normalisation`` (see module docstring)."""
    return normaliser(normalisation)(t)


def jaccard_distance(t: np.ndarray) -> np.ndarray:
    """``1 - |I_i & I_j| / |I_i | I_j|`` over the image sets ``I`` of the classes: symmetric, 0 on the diagonal.

    It depends on ``t`` only, so the figure order is the same for both
    normalisations. Two classes of which neither appears are at distance 1.
    """
    diagonal = np.diag(t).astype(np.float64)
    union = diagonal[:, None] + diagonal[None, :] - t  # (K, K)
    distance = 1.0 - np.divide(t, union, out=np.zeros(t.shape, np.float64), where=union > 0)
    np.fill_diagonal(distance, 0.0)
    return distance


def cluster_order(t: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class order for the heatmaps and the clusters cut from it.

    Average-linkage hierarchical clustering of ``jaccard_distance(t)`` with
    scipy's optimal leaf ordering (deterministic: no random state, ties broken
    by class id through scipy's stable ordering). Returns the leaf order (K,)
    and the clusters (consecutive runs of that order) used for the per-cluster
    panels, see ``cut_clusters``.
    """
    k = t.shape[0]
    if k < 3:
        return np.arange(k), [np.arange(k)]
    tree = linkage(squareform(jaccard_distance(t), checks=False), method="average", optimal_ordering=True)
    return leaves_list(tree), cut_clusters(tree)


def cut_clusters(tree: np.ndarray, max_size: int = 30) -> list[np.ndarray]:
    """Split the dendrogram top-down until every cluster has at most ``max_size`` classes,
    then merge neighbouring small clusters (in leaf order) while they fit in ``max_size``."""
    pending = [to_tree(tree)]
    clusters: list[list[int]] = []
    while pending:
        node = pending.pop()
        if node.count <= max_size:
            clusters.append(node.pre_order())
        else:
            pending += [node.get_right(), node.get_left()]
    merged: list[list[int]] = []
    for cluster in clusters:
        if merged and len(merged[-1]) + len(cluster) <= max_size:
            merged[-1] = merged[-1] + cluster
        else:
            merged.append(cluster)
    return [np.asarray(cluster) for cluster in merged]
