"""Run-level evaluation: a trained model over the val split, single scale and multi-scale + flip.

Every run is scored single scale (scale 1.0, no flip: the plain columns of the
tables); with ``eval.multi_scale`` also at ``eval.scales`` fusing every scale
(and the horizontally flipped image with ``eval.flip``) as ``eval.fusion``
says: the "MS" column of Table 1. ``eval.base_size`` sets each scale's size
from the long side, ``eval.window`` processes each (scaled) image in sliding
crops, ``eval.align_corners`` is that of every resize, ``train.precision`` the
autocast on CUDA. ``infer`` is the one inference function (evaluation, the
report's qualitative figure and ``grar predict`` call it); it calls
``Segmentor.predict``, which holds the modes. Scores come from one dataset-level
confusion matrix per mode (``pipeline.scores.metrics``: ignore 255, mIoU over the
classes present in ground truth or prediction), and per image the sparse
confusion counts of the same predictions (``pipeline.scores.per_image``: what the
report's paired bootstrap resamples; their sum is the dataset-level matrix).

Images are batched when they have the same size, up to ``EVAL_PIXELS`` input
pixels per batch (the embedded val split: 42 strips of 32 x 192). In a
multi-process job each rank scores every ``world_size``-th batch and the
confusion matrices are summed over the ranks.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from model.segmentor import Segmentor
from pipeline.config import EvalConfig
from pipeline.scores.metrics import ConfusionMatrix, Scores
from pipeline.scores.per_image import ImageConfusions, image_entries
from pipeline.training.data import BLACK, SegmentationDataset
from pipeline.training.distributed import MEMORY_FORMAT, Ranks, all_gather, all_sum, amp

EVAL_PIXELS = 2**18
SCORE_KEYS = ("miou", "pixel_accuracy", "mean_accuracy", "per_class_iou")


@dataclass(frozen=True)
class Evaluation:
    """Confusion matrices (K, K) int64, rows = ground truth: single scale, and multi-scale + flip or ``None``;
    the same counts per image (``single_images``, ``multi_images``)."""

    single: np.ndarray
    multi: np.ndarray | None
    seconds: float
    single_images: ImageConfusions | None = None
    multi_images: ImageConfusions | None = None


def size_batches(dataset: SegmentationDataset, max_pixels: int = EVAL_PIXELS) -> list[list[int]]:
    """Consecutive indices of images of one size, at most ``max_pixels`` input pixels per batch (>= 1 image)."""
    return batches_by_size([dataset.image_size(index) for index in range(len(dataset))], max_pixels)


def batches_by_size(sizes: list[tuple[int, int]], max_pixels: int = EVAL_PIXELS) -> list[list[int]]:
    """Consecutive indices of ``sizes`` (H, W) of one size, at most ``max_pixels`` pixels per batch (>= 1 image).

    Evaluation and ``grar predict`` batch alike, so the same images give the same batches and the same numbers.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_size = None
    for index, size in enumerate(sizes):
        if current and (size != current_size or (len(current) + 1) * size[0] * size[1] > max_pixels):
            batches.append(current)
            current = []
        current.append(index)
        current_size = size
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def infer(model: Segmentor, images: Tensor, config: EvalConfig, precision: str, multi: bool = False) -> Tensor:
    """Class probabilities (B, K, H, W) of normalised ``images`` (B, 3, H, W), as evaluation computes them.

    ``multi`` False: single scale (1.0, no flip); True: ``config.scales`` and
    ``config.flip``. Both with ``config.base_size``, ``config.window``
    (windows padded with black, as the reference), ``config.fusion`` and
    ``config.align_corners`` (``Segmentor.predict``), under the autocast of
    ``precision``, the run's ``train.precision`` (bfloat16 on CUDA for
    ``bf16``). ``model`` must be in eval mode and on the images' device;
    labels are ``infer(...).argmax(1)``.
    """
    scales, flip = (config.scales, config.flip) if multi else ((1.0,), False)
    with amp(images.device, precision):
        return model.predict(
            images,
            scales,
            flip,
            window=config.window,
            base_size=config.base_size,
            pad_value=BLACK,
            fusion=config.fusion,
            align_corners=config.align_corners,
        )


@torch.no_grad()
def evaluate_model(
    model: Segmentor,
    dataset: SegmentationDataset,
    config: EvalConfig,
    device: torch.device,
    precision: str,
    ranks: Ranks = Ranks(),
    desc: str = "eval",
) -> Evaluation:
    """Score ``model`` on every sample of ``dataset`` (unaugmented) as described in the module docstring;
    ``precision``: the run's ``train.precision``."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    k = dataset.num_classes
    single = ConfusionMatrix(k)
    multi = ConfusionMatrix(k) if config.multi_scale else None
    entries: dict[str, list[np.ndarray]] = {"single": [], "multi": []}  # (e, 4) [image, gt, pred, count]
    batches = size_batches(dataset)[ranks.rank :: ranks.world_size]
    bar = tqdm(batches, desc=desc, unit="batch", disable=not (ranks.main and sys.stderr.isatty()), leave=False)
    for indices in bar:
        images, labels = zip(*(dataset[index] for index in indices))
        images = torch.stack(images).to(device, memory_format=MEMORY_FORMAT)  # (B, 3, H, W)
        labels = torch.stack(labels).to(device)  # (B, H, W)
        for mode, matrix in (("single", single), ("multi", multi)):
            if matrix is not None:
                predicted = infer(model, images, config, precision, multi=mode == "multi").argmax(dim=1)  # (B, H, W)
                matrix.update(labels, predicted)
                entries[mode].append(image_entries(indices, labels, predicted, k))
    model.train(was_training)
    matrices = [single.matrix] + ([multi.matrix] if multi is not None else [])
    summed = all_sum(torch.from_numpy(np.stack(matrices)).to(device), ranks).cpu().numpy()  # (1 or 2, K, K)
    per_image = {
        mode: ImageConfusions.from_entries(
            [block for rank in all_gather(blocks, ranks) for block in rank], k, len(dataset)
        )
        for mode, blocks in entries.items()
    }
    return Evaluation(
        summed[0],
        summed[1] if multi is not None else None,
        time.perf_counter() - start,
        per_image["single"],
        per_image["multi"] if multi is not None else None,
    )


def scores(matrix: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean accuracy (fractions) and per-class IoU by name of a confusion matrix."""
    full = Scores.from_matrix(matrix).to_dict(class_names)
    return {key: full[key] for key in SCORE_KEYS}
