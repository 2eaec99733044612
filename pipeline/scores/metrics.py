"""Segmentation scores from a dataset-level confusion matrix (the paper's mIoU, section 4.2).

The paper defers the definition of mIoU to FCN [49] (Long et al., CVPR 2015).
With ``n[i, j]`` the number of pixels of ground-truth class ``i`` predicted as
class ``j``, summed over the *whole dataset* (not averaged per image), and
``t_i = sum_j n[i, j]`` the pixels of class ``i`` in the ground truth:

- pixel accuracy   ``sum_i n[i, i] / sum_i t_i``
- class accuracy   ``acc_i = n[i, i] / t_i``; mean accuracy averages it over
  the classes present in the ground truth (``t_i > 0``)
- class IoU        ``iou_i = n[i, i] / (t_i + sum_j n[j, i] - n[i, i])``
  (true positives over the union of ground truth and prediction)
- mIoU             the mean of ``iou_i`` over the classes present in the
  ground truth OR the prediction. A class absent from both has an undefined
  IoU (0/0): it is reported as NaN (``null`` in JSON) and left out of the
  mean, which is how FCN's reference code and the benchmarks' evaluation
  servers treat it. A class that is only predicted has IoU 0 and counts.

Pixels whose ground truth is the ignore index (255) count nowhere. Every other
ground-truth value and every predicted value (ignored pixels included: a stray
value there means a wrong K or a broken writer) must be a class id ``0..K-1``;
anything else raises ``LabelValueError`` (a ``DataError``) naming the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.datasets.layout import IGNORE_INDEX
from pipeline.errors import DataError


class LabelValueError(DataError):
    """A ground-truth or predicted value that is not a class id; ``role`` says which of the two."""

    def __init__(self, role: str, value: int, num_classes: int, ignore_index: int):
        allowed = f"a class id 0..{num_classes - 1}"
        if role == "ground truth":
            allowed += f" or the ignore index {ignore_index}"
        super().__init__(f"{role} value {value} out of range: expected {allowed}")
        self.role = role
        self.value = value


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _check_range(values: Any, num_classes: int, ignore_index: int, role: str) -> None:
    """Raise ``LabelValueError`` for a negative value or the largest value >= K of 1-D ``values``."""
    if len(values) == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise LabelValueError(role, low, num_classes, ignore_index)
    if high >= num_classes:
        raise LabelValueError(role, high, num_classes, ignore_index)


def confusion_counts(gt: Any, pred: Any, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The (K, K) int64 confusion matrix of one label map pair; rows = ground truth, columns = prediction.

    ``gt`` and ``pred`` are integer arrays of the same shape, both numpy arrays or
    both torch tensors (counted on their own device with ``torch.bincount``).
    """
    if tuple(gt.shape) != tuple(pred.shape):
        raise DataError(f"ground truth shape {tuple(gt.shape)} differs from prediction shape {tuple(pred.shape)}")
    _check_range(pred.reshape(-1), num_classes, ignore_index, "prediction")  # everywhere, ignored pixels too
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]  # (N,) labelled pixels only
    _check_range(gt, num_classes, ignore_index, "ground truth")
    if _is_tensor(gt):
        import torch

        index = gt.long() * num_classes + pred.long()  # (N,)
        counts = torch.bincount(index, minlength=num_classes**2).cpu().numpy()
    else:
        index = gt.astype(np.int64) * num_classes + pred.astype(np.int64)  # (N,)
        counts = np.bincount(index, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(np.int64)  # (K, K)


class ConfusionMatrix:
    """Streaming dataset-level confusion matrix: call ``update`` per image, then ``scores()``.

    ``matrix`` is a plain (K, K) int64 array, so counts from several processes
    can be summed (e.g. an all-reduce) and scored with ``Scores.from_matrix``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore index {ignore_index} is a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # (K, K) rows = GT

    def update(self, gt: Any, pred: Any) -> None:
        """Add one image (or a batch: any shape, the same for both) to the counts."""
        self.matrix += confusion_counts(gt, pred, self.num_classes, self.ignore_index)

    def scores(self) -> Scores:
        return Scores.from_matrix(self.matrix)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


@dataclass(frozen=True)
class Scores:
    """The scores of one confusion matrix (definitions in the module docstring).

    ``iou`` and ``accuracy`` are (K,) float arrays with NaN for undefined classes.
    """

    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    num_pixels: int

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Scores:
        matrix = np.asarray(matrix, dtype=np.int64)  # (K, K)
        true_pos = np.diag(matrix)  # (K,)
        gt_pixels = matrix.sum(axis=1)  # (K,) t_i
        pred_pixels = matrix.sum(axis=0)  # (K,)
        iou = _ratio(true_pos, gt_pixels + pred_pixels - true_pos)  # (K,)
        accuracy = _ratio(true_pos, gt_pixels)  # (K,)
        total = int(gt_pixels.sum())
        return cls(
            iou=iou,
            accuracy=accuracy,
            miou=_mean(iou),
            pixel_accuracy=float(true_pos.sum() / total) if total else math.nan,
            mean_accuracy=_mean(accuracy),
            num_pixels=total,
        )

    @property
    def num_present(self) -> int:
        """Classes present in the ground truth or the prediction (those in the mIoU)."""
        return int((~np.isnan(self.iou)).sum())

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready scores as fractions in [0, 1]; undefined values are ``None``.

        ``per_class_iou`` maps each class name (default: its id as a string) to its IoU.
        """
        names = class_names if class_names is not None else [str(i) for i in range(len(self.iou))]
        if len(names) != len(self.iou):
            raise ValueError(f"{len(names)} class names for {len(self.iou)} classes")

        def number(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "miou": number(self.miou),
            "pixel_accuracy": number(self.pixel_accuracy),
            "mean_accuracy": number(self.mean_accuracy),
            "num_classes": len(self.iou),
            "num_classes_present": self.num_present,
            "num_pixels": self.num_pixels,
            "per_class_iou": {name: number(v) for name, v in zip(names, self.iou)},
        }
