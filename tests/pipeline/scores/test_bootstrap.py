"""The paired bootstrap of mIoU differences: hand-computable cases, exact values."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.scores.bootstrap import Interval, class_sums, compare_runs, miou_of_sums, paired_difference
from pipeline.scores.metrics import Scores
from pipeline.scores.per_image import ImageConfusions, write_image_confusions


def confusions(*matrices: list[list[int]]) -> ImageConfusions:
    """Sparse per-image confusions of dense (K, K) matrices, one per image."""
    blocks = []
    for index, matrix in enumerate(np.asarray(matrices)):
        gt, pred = np.nonzero(matrix)
        blocks.append(np.stack([np.full(gt.shape, index), gt, pred, matrix[gt, pred]], axis=1))
    return ImageConfusions.from_entries(blocks, len(matrices[0]), len(matrices))


def test_vectorised_miou_is_the_metrics_definition():
    rng = np.random.default_rng(3)
    matrices = rng.integers(0, 4, size=(6, 5, 5)) * (rng.random((6, 5, 5)) < 0.4)
    matrices[0, 2, :] = matrices[0, :, 2] = 0  # a class absent from ground truth and prediction
    per_image = confusions(*matrices)
    sums = class_sums(per_image)  # (images, 3K)
    for index, matrix in enumerate(matrices):
        assert miou_of_sums(sums[index : index + 1], 5)[0] == pytest.approx(100 * Scores.from_matrix(matrix).miou)
    assert miou_of_sums(sums.sum(axis=0, keepdims=True), 5)[0] == pytest.approx(
        100 * Scores.from_matrix(per_image.dense_total()).miou
    )


def test_one_image_one_seed_every_replicate_is_the_difference():
    a = confusions([[2, 0], [0, 2]])  # mIoU 100
    b = confusions([[1, 1], [0, 2]])  # IoU 1/2 and 2/3: mIoU 58.33
    interval = paired_difference({0: a}, {0: b}, replicates=200)
    assert interval.diff == pytest.approx(100 - 100 * (1 / 2 + 2 / 3) / 2)
    assert interval.low == pytest.approx(interval.diff) and interval.high == pytest.approx(interval.diff)
    assert not interval.within_noise and interval.seeds == (0,)


def test_two_images_paired_resampling():
    # image 0: ground truth class 0; A right, B says class 1. image 1: ground truth class 1, both right.
    a = confusions([[2, 0], [0, 0]], [[0, 0], [0, 2]])
    b = confusions([[0, 2], [0, 0]], [[0, 0], [0, 2]])
    # resamples (image 0, image 1) x (2, 0) p 1/4: A 100, B 0 -> 100; (1, 1) p 1/2: A 100, B (0 + 2/4) / 2 -> 75;
    # (0, 2) p 1/4: both 100 -> 0. Point estimate: the (1, 1) resample, 75.
    interval = paired_difference({0: a}, {0: b}, replicates=1000)
    assert (interval.diff, interval.low, interval.high) == (75.0, 0.0, 100.0)
    assert interval.within_noise
    assert interval.text() == "+75.00 [95 % CI +0.00, +100.00], within noise"


def test_seeds_are_resampled_too():
    perfect = confusions([[2, 0], [0, 2]])  # 100
    half = confusions([[1, 1], [0, 2]])  # 58.33
    wrong = confusions([[0, 2], [2, 0]])  # 0
    # seed 0: A − B = 100 − 58.33; seed 1: A − B = 0 − 58.33. Replicates: both seed 0, both seed 1, or one of each.
    interval = paired_difference({0: perfect, 1: wrong}, {0: half, 1: half}, replicates=1000)
    d0, d1 = 100 - 175 / 3, -175 / 3
    assert interval.diff == pytest.approx((d0 + d1) / 2)
    assert interval.low == pytest.approx(d1) and interval.high == pytest.approx(d0)
    assert interval.within_noise and interval.seeds == (0, 1)
    only_shared = paired_difference({0: perfect, 5: wrong}, {0: half}, replicates=10)
    assert only_shared.seeds == (0,) and only_shared.low == pytest.approx(d0)


def test_identical_runs_give_exactly_zero():
    rng = np.random.default_rng(0)
    run = confusions(*rng.integers(0, 5, size=(7, 4, 4)))
    other = confusions(*rng.integers(0, 5, size=(7, 4, 4)))
    interval = paired_difference({0: run, 1: other}, {0: run, 1: other}, replicates=300)
    assert (interval.diff, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.within_noise


def test_fixed_seed_and_replicates():
    rng = np.random.default_rng(1)
    a = confusions(*rng.integers(0, 5, size=(9, 3, 3)))
    b = confusions(*rng.integers(0, 5, size=(9, 3, 3)))
    first, again = (paired_difference({0: a}, {0: b}, replicates=400) for _ in range(2))
    assert first == again and first.replicates == 400
    assert first.low < first.diff < first.high


def test_different_val_sets_and_no_shared_seed():
    with pytest.raises(DataError, match="different val sets"):
        paired_difference({0: confusions([[1]])}, {0: confusions([[1]], [[1]])}, replicates=10)
    with pytest.raises(ValueError, match="no seed"):
        paired_difference({0: confusions([[1]])}, {1: confusions([[1]])}, replicates=10)


def test_compare_runs_reads_run_folders_and_says_why_not(tmp_path):
    for name, matrix in (("a", [[2, 0], [0, 2]]), ("b", [[1, 1], [0, 2]])):
        (tmp_path / name).mkdir()
        write_image_confusions(tmp_path / name / "confusion_images.npz", confusions(matrix))
    interval = compare_runs({0: tmp_path / "a"}, {0: tmp_path / "b"}, "miou", replicates=20)
    assert isinstance(interval, Interval) and interval.diff == pytest.approx(100 - 175 / 3)
    assert (
        compare_runs({0: tmp_path / "a"}, {1: tmp_path / "b"}, "miou", 20)
        == "no interval: no seed finished in both cells"
    )
    why = compare_runs({0: tmp_path / "a"}, {0: tmp_path / "b"}, "ms", 20)
    assert why == (
        f"no interval: 2 run(s) without confusion_images_ms.npz, e.g. {tmp_path / 'a'} (evaluated before "
        "per-image confusions, or without multi-scale)"
    )
