"""Confusion matrix and scores against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.errors import DataError
from pipeline.scores.metrics import ConfusionMatrix, LabelValueError, Scores, confusion_counts

NAN = math.nan
K = 6
# 3 x 5 label map; 255 = ignore. Class 3 is predicted only on ignored pixels and
# class 5 nowhere: both are absent. Class 4 is predicted once, never true: IoU 0.
GT = np.array(
    [[0, 0, 1, 1, 255], [0, 2, 2, 1, 255], [2, 2, 2, 0, 0]],
    dtype=np.uint8,
)
PRED = np.array(
    [[0, 1, 1, 1, 3], [0, 2, 0, 1, 2], [2, 2, 1, 0, 4]],
    dtype=np.uint8,
)
# Rows = ground truth, columns = prediction, counted pair by pair from the arrays above.
MATRIX = np.array(
    [
        [3, 1, 0, 0, 1, 0],
        [0, 3, 0, 0, 0, 0],
        [1, 1, 3, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
)
# IoU = TP / (GT + PRED - TP): 3/(5+4-3), 3/(3+5-3), 3/(5+3-3), 0/0, 0/(0+1-0), 0/0.
IOU = [1 / 2, 3 / 5, 3 / 5, NAN, 0.0, NAN]
MIOU = (1 / 2 + 3 / 5 + 3 / 5 + 0) / 4  # the 4 classes present in GT or prediction
PIXEL_ACCURACY = 9 / 13  # 13 labelled pixels, 9 on the diagonal
ACCURACY = [3 / 5, 3 / 3, 3 / 5, NAN, NAN, NAN]
MEAN_ACCURACY = (3 / 5 + 1 + 3 / 5) / 3  # the 3 classes present in GT


def test_confusion_counts_by_hand():
    counts = confusion_counts(GT, PRED, K)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, MATRIX)


def test_scores_by_hand():
    scores = Scores.from_matrix(MATRIX)
    np.testing.assert_allclose(scores.iou, IOU, rtol=0, atol=1e-15)  # NaN positions must match too
    np.testing.assert_allclose(scores.accuracy, ACCURACY, rtol=0, atol=1e-15)
    assert scores.miou == pytest.approx(MIOU, abs=1e-15)
    assert scores.pixel_accuracy == pytest.approx(PIXEL_ACCURACY, abs=1e-15)
    assert scores.mean_accuracy == pytest.approx(MEAN_ACCURACY, abs=1e-15)
    assert (scores.num_pixels, scores.num_present) == (13, 4)


def test_streaming_equals_one_update():
    whole = ConfusionMatrix(K)
    whole.update(GT, PRED)
    parts = ConfusionMatrix(K)
    parts.update(GT[:1], PRED[:1])
    parts.update(GT[1:], PRED[1:])
    np.testing.assert_array_equal(parts.matrix, MATRIX)
    np.testing.assert_array_equal(whole.matrix, MATRIX)
    batch = ConfusionMatrix(K)
    batch.update(np.stack([GT, GT]), np.stack([PRED, PRED]))  # (2, 3, 5)
    np.testing.assert_array_equal(batch.matrix, 2 * MATRIX)
    assert batch.scores().miou == pytest.approx(MIOU, abs=1e-15)  # scale-free


def test_torch_tensors_count_like_numpy():
    counts = confusion_counts(torch.from_numpy(GT), torch.from_numpy(PRED).long(), K)
    np.testing.assert_array_equal(counts, MATRIX)
    with pytest.raises(LabelValueError, match="prediction value 6 out of range"):
        confusion_counts(torch.from_numpy(GT), torch.full(GT.shape, 6), K)


def test_random_maps_match_a_direct_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 7, size=(13, 17)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, 7, size=(13, 17)).astype(np.uint8)
    expected = np.zeros((7, 7), dtype=np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g != 255:
            expected[g, p] += 1
    np.testing.assert_array_equal(confusion_counts(gt, pred, 7), expected)


def test_out_of_range_values_name_the_value():
    bad_pred = PRED.copy()
    bad_pred[2, 1] = 9
    with pytest.raises(LabelValueError, match=r"prediction value 9 out of range: expected a class id 0\.\.5$") as info:
        confusion_counts(GT, bad_pred, K)
    assert (info.value.role, info.value.value) == ("prediction", 9)
    bad_pred = PRED.copy()
    bad_pred[0, 4] = 255  # on an ignored pixel: still not a class id
    with pytest.raises(LabelValueError, match="prediction value 255"):
        confusion_counts(GT, bad_pred, K)
    bad_gt = GT.copy()
    bad_gt[1, 3] = 7
    with pytest.raises(LabelValueError, match="ground truth value 7 out of range: .* or the ignore index 255") as info:
        confusion_counts(bad_gt, PRED, K)
    assert isinstance(info.value, DataError)
    with pytest.raises(LabelValueError, match="prediction value -1"):
        confusion_counts(GT.astype(np.int64), PRED.astype(np.int64) - 1, K)


def test_shape_mismatch_and_bad_arguments():
    with pytest.raises(DataError, match=r"shape \(3, 5\) differs from prediction shape \(3, 4\)"):
        confusion_counts(GT, PRED[:, :4], K)
    with pytest.raises(ValueError, match="ignore index 3 is a class id"):
        ConfusionMatrix(K, ignore_index=3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ConfusionMatrix(0)


def test_all_ignored_scores_are_undefined():
    matrix = ConfusionMatrix(3)
    matrix.update(np.full((3, 3), 255, np.uint8), np.zeros((3, 3), np.uint8))
    result = matrix.scores().to_dict()
    assert result["miou"] is None and result["pixel_accuracy"] is None and result["mean_accuracy"] is None
    assert result["per_class_iou"] == {"0": None, "1": None, "2": None}
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN


def test_to_dict_uses_names_and_null_for_absent_classes():
    names = ["sky", "tree", "road", "car", "boat", "bird"]
    result = Scores.from_matrix(MATRIX).to_dict(names)
    assert result["per_class_iou"] == {"sky": 0.5, "tree": 0.6, "road": 0.6, "car": None, "boat": 0.0, "bird": None}
    assert (result["num_classes"], result["num_classes_present"], result["num_pixels"]) == (6, 4, 13)
    with pytest.raises(ValueError, match="2 class names for 6 classes"):
        Scores.from_matrix(MATRIX).to_dict(["a", "b"])
