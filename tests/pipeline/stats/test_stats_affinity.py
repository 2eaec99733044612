"""Eq. 1 in its three readings, the 0/0 case, the clustering distance and order, on hand-worked counts."""

from __future__ import annotations

import numpy as np
import pytest
from stats_toy import T

from pipeline.errors import ConfigError
from pipeline.stats.affinity import (
    cluster_order,
    conditional_frequency,
    cut_clusters,
    edge_spread,
    frequency,
    jaccard_distance,
)

SKY, PLANE, COW, GRASS, BOAT = range(5)


def test_printed_eq1_by_hand():
    # Column sums without the diagonal: sky 4, plane 1, cow 2, grass 3, boat 0 (0/0 -> 0).
    expected = np.array(
        [
            [1, 1 / 1, 1 / 2, 2 / 3, 0],
            [1 / 4, 1, 0 / 2, 0 / 3, 0],
            [1 / 4, 0 / 1, 1, 1 / 3, 0],
            [2 / 4, 0 / 1, 1 / 2, 1, 0],
            [0 / 4, 0 / 1, 0 / 2, 0 / 3, 1],
        ]
    )
    f = frequency(T, "printed")
    np.testing.assert_array_equal(f, expected)
    off_diagonal = f - np.eye(5)
    np.testing.assert_array_equal(off_diagonal.sum(axis=0), [1, 1, 1, 1, 0])  # columns are distributions


def test_conditional_by_hand():
    # Rows divided by t_ii: sky 3, plane 1, cow 1, grass 3, boat 0 (0/0 -> 0).
    expected = np.array(
        [
            [1, 1 / 3, 1 / 3, 2 / 3, 0],
            [1 / 1, 1, 0, 0, 0],
            [1 / 1, 0, 1, 1 / 1, 0],
            [2 / 3, 0, 1 / 3, 1, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(frequency(T, "conditional"), expected)


def test_the_two_readings_disagree_on_the_papers_example():
    """'The aeroplane strongly supports the sky; the sky only weakly supports the aeroplane' (section 3.2)."""
    conditional, printed = conditional_frequency(T), frequency(T, "printed")
    assert conditional[PLANE, SKY] == 1 and conditional[SKY, PLANE] == 1 / 3
    assert printed[PLANE, SKY] == 1 / 4 and printed[SKY, PLANE] == 1


def test_zero_over_zero_when_a_class_is_only_ever_alone():
    t = np.array([[2, 0, 0], [0, 1, 1], [0, 1, 1]])  # class 0 appears, never with another class
    for name in ("printed", "conditional"):
        f = frequency(t, name)
        assert f[0, 0] == 1 and not np.isnan(f).any()
        np.testing.assert_array_equal(f[1:, 0], [0, 0])
        np.testing.assert_array_equal(f[0, 1:], [0, 0])
        np.testing.assert_array_equal(f[1:, 1:], [[1, 1], [1, 1]])


def test_unknown_normalisation_lists_the_names():
    with pytest.raises(ConfigError, match="normalisation 'column' unknown; allowed: printed, conditional"):
        frequency(T, "column")


def test_jaccard_distance_by_hand():
    d = jaccard_distance(T)
    assert d[SKY, GRASS] == 1 - 2 / 4  # 2 images together, 4 with either
    assert d[SKY, PLANE] == 1 - 1 / 3
    assert d[COW, GRASS] == 1 - 1 / 3
    assert d[BOAT, SKY] == 1 and d[BOAT, BOAT] == 0
    np.testing.assert_array_equal(d, d.T)
    two_absent = jaccard_distance(np.zeros((2, 2), np.int64))
    np.testing.assert_array_equal(two_absent, [[0, 1], [1, 0]])


def scene_counts() -> np.ndarray:
    """t of 9 classes in three scenes {0, 4, 8}, {1, 3, 7}, {2, 5, 6}: each image shows a whole scene."""
    presence = np.zeros((9, 9), np.int64)
    for image in range(9):
        scene = [(0, 4, 8), (1, 3, 7), (2, 5, 6)][image % 3]
        presence[image, list(scene)] = 1
    presence[0, 1] = 1  # one image mixes two scenes
    return presence.T @ presence


def test_cluster_order_groups_scenes_and_is_deterministic():
    order, clusters = cluster_order(scene_counts())
    assert sorted(order) == list(range(9))
    positions = {int(c): p for p, c in enumerate(order)}
    for scene in [(0, 4, 8), (1, 3, 7), (2, 5, 6)]:
        spots = sorted(positions[c] for c in scene)
        assert spots[-1] - spots[0] == 2, (scene, order)  # contiguous
    again, _ = cluster_order(scene_counts())
    np.testing.assert_array_equal(order, again)
    np.testing.assert_array_equal(np.concatenate(clusters), order)


def test_cut_clusters_respects_the_size_and_the_order():
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    tree = linkage(squareform(jaccard_distance(scene_counts()), checks=False), method="average", optimal_ordering=True)
    clusters = cut_clusters(tree, max_size=3)
    assert [len(c) for c in clusters] == [3, 3, 3]
    np.testing.assert_array_equal(np.concatenate(clusters), leaves_list(tree))
    assert len(cut_clusters(tree, max_size=30)) == 1


def test_tiny_class_counts_need_no_clustering():
    order, clusters = cluster_order(np.array([[1, 1], [1, 2]]))
    np.testing.assert_array_equal(order, [0, 1])
    assert [list(c) for c in clusters] == [[0, 1]]


# A 3 x 3 t: 4 images hold a, 3 hold b, 2 hold c; a+b in 2, a+c in 1, b+c in none.
T3 = np.array([[4, 2, 1], [2, 3, 0], [1, 0, 2]])


def test_row_normalisation_by_hand():
    # Row sums without the diagonal: a 2 + 1 = 3, b 2 + 0 = 2, c 1 + 0 = 1.
    expected = np.array(
        [
            [1, 2 / 3, 1 / 3],
            [2 / 2, 1, 0 / 2],
            [1 / 1, 0 / 1, 1],
        ]
    )
    f = frequency(T3, "row")
    np.testing.assert_array_equal(f, expected)
    np.testing.assert_array_equal((f - np.eye(3)).sum(axis=1), [1, 1, 1])  # rows are distributions
    # the other two readings of the same t, for contrast: columns (printed), P(j | i) (conditional)
    np.testing.assert_array_equal(frequency(T3, "printed"), expected.T)  # t is symmetric
    np.testing.assert_array_equal(frequency(T3, "conditional"), [[1, 2 / 4, 1 / 4], [2 / 3, 1, 0], [1 / 2, 0, 1]])


def test_row_normalisation_zero_over_zero_off_the_diagonal():
    # c is only ever alone: its row has no co-occurrence, 0/0 -> 0 off the diagonal, 1 on it
    t = np.array([[4, 2, 0], [2, 3, 0], [0, 0, 2]])
    np.testing.assert_array_equal(frequency(t, "row"), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_edge_spread_by_hand():
    # row f of T3 off the diagonal: 2/3, 1/3, 1, 0, 1, 0 -> mean 1/2; deviations +-1/6 (twice), +-1/2 (four times)
    spread = edge_spread(frequency(T3, "row"))
    variance = (2 * (1 / 6) ** 2 + 4 * (1 / 2) ** 2) / 6  # 19 / 108
    assert spread == pytest.approx(
        {"positive_mean": 0.5, "positive_std": variance**0.5, "negative_mean": 0.5, "negative_std": variance**0.5},
        rel=1e-12,
    )
    # conditional f off the diagonal: 1/2, 1/4, 2/3, 0, 1/2, 0 -> mean 23/72; 1 - f: mean 49/72
    spread = edge_spread(frequency(T3, "conditional"))
    assert spread["positive_mean"] == pytest.approx(23 / 72, rel=1e-12)
    assert spread["negative_mean"] == pytest.approx(49 / 72, rel=1e-12)
    assert spread["negative_std"] == pytest.approx(spread["positive_std"], rel=1e-12)
    assert np.isnan(edge_spread(np.ones((1, 1)))["positive_mean"])
