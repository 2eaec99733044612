"""95 % intervals for a difference of mIoU between two grid cells: a paired bootstrap over val images and seeds.

Every difference the report states (GRAr − FCN in Table 1, Table 2's
orderings, each Table 3 head against FCN) and the evaluate stage's ``vs_fcn``
metrics come from ``paired_difference``. Without torch.

**Statistic.** Side A and side B are two cells, each trained once per seed;
seed s of A is paired with seed s of B (same initialisation seed and batch
order). The point estimate is the mean over the seeds of
``mIoU(A_s) − mIoU(B_s)``, each mIoU the dataset-level one of the run
(``pipeline.scores.metrics``: from the confusion matrix summed over the val images, in
percent), i.e. exactly the difference of the report's seed means.

**Replicates** (``grid.bootstrap`` of them, generator seeded with
``BOOTSTRAP_SEED``, so reruns print the same intervals). Each replicate

1. draws S seeds with replacement from the S paired seeds, and
2. draws N val images with replacement (multinomial weights w_i, sum N), the
   SAME draw for both sides and every seed (paired: an image that is hard for
   both cells moves both mIoUs together);
3. recomputes every run's mIoU from its per-image confusion matrices
   (``pipeline.scores.per_image``) as ``Σ_i w_i C_i`` (only the diagonal, row and
   column sums are needed: K x 3 numbers per image), and
4. averages ``mIoU(A_s) − mIoU(B_s)`` over the drawn seeds.

The interval is the 2.5 % and 97.5 % quantiles of the replicates (numpy's
linear interpolation). A finding whose interval contains 0 is "within noise".

**Why resample the seeds too** (rather than only average the per-seed
differences inside each replicate). Resampling images only measures how much
the numbers would move on another val set of the same size, for these very
trained weights. On the embedded profile the seeds themselves move a cell's
mIoU by 4-8 points, more than the image sampling does; an interval that
ignored this would call differences "real" that the next seed reverses. With
the seeds resampled, a difference whose sign changes between the seeds
straddles 0 (with 2 seeds each replicate picks seed 0 twice, seed 1 twice, or
one of each, with probability 1/4, 1/4, 1/2, so the interval reaches past both
per-seed differences) and is reported as within noise. It is conservative with
2 seeds; with more seeds it becomes the usual two-level (hierarchical)
bootstrap. With one seed it is the plain paired image bootstrap.

Identical runs give exactly [0, 0]: both sides recompute the same numbers in
every replicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.rundir import CONFUSION_IMAGES_FILE, CONFUSION_IMAGES_MS_FILE
from pipeline.scores.per_image import ImageConfusions, read_image_confusions

BOOTSTRAP_SEED = 20211011  # fixed: the same intervals on every rerun (ICCV 2021 opened on 11 Oct 2021)
LEVEL = 0.95
CHUNK = 250  # replicates per matrix product (bounds memory on 2000-image val sets)
FILES = {"miou": CONFUSION_IMAGES_FILE, "ms": CONFUSION_IMAGES_MS_FILE}  # score -> per-image file of a run


@dataclass(frozen=True)
class Interval:
    """A difference A − B of mIoU in percent points: its estimate and 95 % bootstrap interval."""

    diff: float
    low: float
    high: float
    replicates: int
    seeds: tuple[int, ...]  # the paired seeds

    @property
    def within_noise(self) -> bool:
        """Whether the interval contains 0 (the sign of the difference is not established)."""
        return self.low <= 0 <= self.high

    def text(self) -> str:
        """``+2.31 [95 % CI −0.52, +5.10], within noise``; ``... [95 % CI +1.02, +3.50]`` otherwise."""
        return f"{self.diff:+.2f} [95 % CI {self.low:+.2f}, {self.high:+.2f}]" + (
            ", within noise" if self.within_noise else ""
        )

    def to_dict(self) -> dict[str, float]:
        return {"diff": round(self.diff, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


def class_sums(confusions: ImageConfusions) -> np.ndarray:
    """(N, 3K) float64 per image: true positives, ground-truth pixels and predicted pixels of each class."""
    n, k = confusions.num_images, confusions.num_classes
    sums = np.zeros((n, 3 * k))
    diagonal = confusions.gt == confusions.pred
    np.add.at(sums, (confusions.image[diagonal], confusions.gt[diagonal].astype(np.int64)), confusions.count[diagonal])
    np.add.at(sums, (confusions.image, k + confusions.gt.astype(np.int64)), confusions.count)
    np.add.at(sums, (confusions.image, 2 * k + confusions.pred.astype(np.int64)), confusions.count)
    return sums


def miou_of_sums(sums: np.ndarray, k: int) -> np.ndarray:
    """(R,) mIoU in percent of (R, 3K) class sums: the mean IoU over the classes in ground truth or prediction.

    The definition of ``pipeline.scores.metrics.Scores`` (a class absent from both is left
    out; NaN when every class is), vectorised over replicates.
    """
    tp, gt, pred = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
    union = gt + pred - tp  # (R, K)
    iou = np.divide(tp, union, out=np.full(union.shape, np.nan), where=union > 0)
    present = (~np.isnan(iou)).sum(axis=1)
    total = np.nansum(iou, axis=1)
    return np.divide(100 * total, present, out=np.full(total.shape, np.nan), where=present > 0)


def paired_difference(
    a: Mapping[int, ImageConfusions], b: Mapping[int, ImageConfusions], replicates: int, seed: int = BOOTSTRAP_SEED
) -> Interval:
    """The mean over the paired seeds of mIoU(a[s]) − mIoU(b[s]) with its interval (see the module docstring).

    ``a`` and ``b`` map seeds to a run's per-image confusions; only the seeds of
    both count (``ValueError`` when there is none). Every run must have scored
    the same val images with the same classes (``DataError`` otherwise).
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError("no seed finished on both sides")
    runs = [a[s] for s in seeds] + [b[s] for s in seeds]
    n, k = runs[0].num_images, runs[0].num_classes
    if any((run.num_images, run.num_classes) != (n, k) for run in runs):
        found = sorted({(run.num_images, run.num_classes) for run in runs})
        raise DataError(f"per-image confusions of different val sets (images, classes): {found}")
    sums = np.stack([class_sums(run) for run in runs])  # (2S, N, 3K)
    point = miou_of_sums(sums.sum(axis=1), k)  # (2S,)
    count = len(seeds)
    diff = float(np.mean(point[:count] - point[count:]))
    rng = np.random.default_rng(seed)
    statistics = np.empty(replicates)
    for start in range(0, replicates, CHUNK):
        size = min(CHUNK, replicates - start)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=size).astype(np.float64)  # (R, N), same for all runs
        drawn = rng.integers(0, count, size=(size, count))  # (R, S) seeds drawn with replacement
        scores = np.stack([miou_of_sums(weights @ sums[r], k) for r in range(2 * count)])  # (2S, R)
        differences = scores[:count] - scores[count:]  # (S, R)
        statistics[start : start + size] = differences[drawn.T, np.arange(size)].mean(axis=0)
    low, high = np.quantile(statistics, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(diff, float(low), float(high), replicates, seeds)


def run_confusions(run_dir: Path | None, score: str) -> ImageConfusions | None:
    """The per-image confusions of a run for ``score`` (``miou`` or ``ms``); ``None`` when the run has none
    (a run evaluated before they were written, or without multi-scale evaluation)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / FILES[score]
    return read_image_confusions(path) if path.is_file() else None


def compare_runs(
    a: Mapping[int, Path | None], b: Mapping[int, Path | None], score: str, replicates: int
) -> Interval | str:
    """``paired_difference`` of two cells' finished runs (seed -> run folder), or why there is no interval."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "no interval: no seed finished in both cells"
    loaded = {side: {s: run_confusions(runs[s], score) for s in seeds} for side, runs in (("a", a), ("b", b))}
    lacking = [str(runs[s]) for side, runs in (("a", a), ("b", b)) for s in seeds if loaded[side][s] is None]
    if lacking:
        return (
            f"no interval: {len(lacking)} run(s) without {FILES[score]}, e.g. {lacking[0]} (evaluated before "
            "per-image confusions, or without multi-scale)"
        )
    interval = paired_difference(loaded["a"], loaded["b"], replicates)
    if math.isnan(interval.diff):
        return "no interval: no class present"
    return interval
