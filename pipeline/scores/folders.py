"""Scoring a folder of PNG predictions against a folder of label maps (``grar evaluate``).

Predictions and label maps are paired by file stem; every label map needs
exactly one prediction of the same size and vice versa. Counts are summed over
the whole folder into one confusion matrix (``pipeline.scores.metrics``).
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from pipeline.datasets.layout import IGNORE_INDEX, read_classes, read_label_png
from pipeline.errors import ConfigError, DataError
from pipeline.scores.metrics import ConfusionMatrix, LabelValueError, Scores


def class_names(path: Path, num_classes: int) -> list[str]:
    """Names from a class table (``id,name``, ids 0..K-1); unique, since they key ``per_class_iou``."""
    names = read_classes(path, num_classes)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate class names: {', '.join(duplicates)}")
    return names


def _pngs(folder: Path, flag: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: no such folder")
    return {path.stem: path for path in sorted(folder.glob("*.png"))}


def _describe(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def match_predictions(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, label map) pairs matched by file stem; every file must have its partner."""
    preds, gts = _pngs(pred_dir, "--pred"), _pngs(gt_dir, "--gt")
    if not gts:
        raise DataError(f"--gt {gt_dir}: no label maps (*.png)")
    missing = [pred_dir / f"{stem}.png" for stem in gts if stem not in preds]
    if missing:
        raise DataError(f"missing prediction for {len(missing)} label map(s): {_describe(missing)}")
    extra = [path for stem, path in preds.items() if stem not in gts]
    if extra:
        raise DataError(f"{len(extra)} prediction(s) without a label map in {gt_dir}: {_describe(extra)}")
    return [(preds[stem], gts[stem]) for stem in gts]


def score_folders(
    pred_dir: Path,
    gt_dir: Path,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = True,
) -> tuple[Scores, int]:
    """The scores of all prediction/label pairs in two folders, and the number of images."""
    try:
        matrix = ConfusionMatrix(num_classes, ignore_index)
    except ValueError as err:
        raise ConfigError(f"--num-classes {num_classes} / --ignore-index {ignore_index}: {err}") from err
    pairs = match_predictions(pred_dir, gt_dir)
    for pred_path, gt_path in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        gt, pred = read_label_png(gt_path), read_label_png(pred_path)  # (H, W) each
        if gt.shape != pred.shape:
            raise DataError(
                f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} differs from {gt_path} "
                f"({gt.shape[1]}x{gt.shape[0]}, width x height)"
            )
        try:
            matrix.update(gt, pred)
        except LabelValueError as err:
            raise DataError(f"{pred_path if err.role == 'prediction' else gt_path}: {err}") from err
    scores = matrix.scores()
    if scores.num_pixels == 0:
        raise DataError(f"--gt {gt_dir}: every pixel is the ignore index {ignore_index}: nothing to score")
    return scores, len(pairs)
