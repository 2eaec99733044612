"""Per-image confusion matrices of a run's evaluation, stored sparsely: what the paired bootstrap resamples.

Without torch (the report and the evaluate stage read these files). ``run_cell``
writes one file per evaluation mode beside ``confusion.npy``:
``confusion_images.npz`` (single scale) and ``confusion_images_ms.npz``
(multi-scale + flip). Schema (``numpy.savez_compressed``, read with
``allow_pickle=False``):

========== ======== ================================================================
array      dtype    content
========== ======== ================================================================
``image``  int32    (E,) index of the val image, in the dataset's order (sorted stems)
``gt``     int16    (E,) ground-truth class id (ignored pixels are not counted)
``pred``   int16    (E,) predicted class id
``count``  int64    (E,) pixels of that image with that (gt, pred), always > 0
``num_classes`` int64 scalar K
``num_images``  int64 scalar: val images scored (an image may have no entry: all ignored)
========== ======== ================================================================

Entries are sorted by (image, gt, pred), one per non-zero cell of an image's
(K, K) matrix, so a run over ADE20K's 2000 val images stores a few hundred
thousand entries instead of 2000 x 150 x 150 counts. The dataset-level matrix
(``confusion.npy``) is the sum over the images (``dense_total``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.layout import IGNORE_INDEX
from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.scores.metrics import confusion_counts

ARRAYS = ("image", "gt", "pred", "count")


@dataclass(frozen=True)
class ImageConfusions:
    """Sparse per-image confusion counts (see the module docstring); arrays of one length E."""

    image: np.ndarray  # (E,) int32
    gt: np.ndarray  # (E,) int16
    pred: np.ndarray  # (E,) int16
    count: np.ndarray  # (E,) int64
    num_classes: int
    num_images: int

    @classmethod
    def from_entries(cls, entries: Iterable[np.ndarray], num_classes: int, num_images: int) -> ImageConfusions:
        """From (e, 4) int64 blocks of rows ``[image, gt, pred, count]`` (any order), sorted."""
        rows = np.concatenate([np.asarray(e, np.int64).reshape(-1, 4) for e in entries] or [np.zeros((0, 4))])
        rows = rows.astype(np.int64)
        rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
        return cls(
            rows[:, 0].astype(np.int32),
            rows[:, 1].astype(np.int16),
            rows[:, 2].astype(np.int16),
            rows[:, 3].astype(np.int64),
            num_classes,
            num_images,
        )

    def dense_total(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The (K, K) int64 dataset-level matrix: the sum of the images' matrices (``weights`` (N,): times each)."""
        k = self.num_classes
        counts = self.count if weights is None else self.count * np.asarray(weights, np.int64)[self.image]
        flat = np.bincount(self.gt.astype(np.int64) * k + self.pred, weights=counts, minlength=k * k)
        return np.rint(flat).astype(np.int64).reshape(k, k)

    def image_matrix(self, index: int) -> np.ndarray:
        """The (K, K) matrix of image ``index``."""
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        keep = self.image == index
        matrix[self.gt[keep], self.pred[keep]] = self.count[keep]
        return matrix


def image_entries(
    indices: Iterable[int], labels: Any, preds: Any, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(e, 4) rows ``[image, gt, pred, count]`` of a batch: ``labels``/``preds`` (B, H, W), image ids ``indices``."""
    blocks = []
    for position, index in enumerate(indices):
        matrix = confusion_counts(labels[position], preds[position], num_classes, ignore_index)  # (K, K)
        gt, pred = np.nonzero(matrix)
        blocks.append(np.stack([np.full(gt.shape, index), gt, pred, matrix[gt, pred]], axis=1))
    return np.concatenate(blocks) if blocks else np.zeros((0, 4), np.int64)


def write_image_confusions(path: Path, confusions: ImageConfusions) -> None:
    """Save ``confusions`` as a compressed ``.npz`` (schema above), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            image=confusions.image,
            gt=confusions.gt,
            pred=confusions.pred,
            count=confusions.count,
            num_classes=np.int64(confusions.num_classes),
            num_images=np.int64(confusions.num_images),
        )


def read_image_confusions(path: Path) -> ImageConfusions:
    """A file written by ``write_image_confusions``; ``DataError`` naming it when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
            k, n = int(data["num_classes"]), int(data["num_images"])
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a per-image confusion file ({err})") from None
    lengths = {len(array) for array in arrays.values()}
    if len(lengths) != 1 or any(array.ndim != 1 for array in arrays.values()):
        raise DataError(f"{path}: arrays {', '.join(ARRAYS)} must be 1-D of one length")
    if len(arrays["image"]) and (
        arrays["image"].min() < 0
        or arrays["image"].max() >= n
        or min(arrays["gt"].min(), arrays["pred"].min()) < 0
        or max(arrays["gt"].max(), arrays["pred"].max()) >= k
    ):
        raise DataError(f"{path}: an image index or class id out of range ({n} images, {k} classes)")
    return ImageConfusions(
        arrays["image"].astype(np.int32),
        arrays["gt"].astype(np.int16),
        arrays["pred"].astype(np.int16),
        arrays["count"].astype(np.int64),
        k,
        n,
    )
