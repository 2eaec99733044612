"""Qualitative examples like the paper's Figure 5: image / ground truth / FCN baseline / GRAr on validation images.

The models are the finished runs of grid ``table1`` named in ``MODELS`` (the
first cell with a finished run, its lowest seed), rebuilt from their checkpoints
with ``pipeline.training.run.load_run_model``. The images are the first ``n`` samples,
sorted by stem, of ``data/<dataset>/val``: the same every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.datasets.layout import read_label_png
from pipeline.report.runs import Grid, Run

GRID = "table1"
# Column heading -> the cells that can fill it, in order of preference (embedded and paper profile names).
MODELS: dict[str, tuple[str, ...]] = {
    "FCN baseline": ("fcn", "r50-fcn"),
    "GRAr": ("grar-sr", "r50-grar-sr", "r101-grar-sr", "resnest101-grar-sr", "grar", "r50-grar"),
}


def pick_runs(grid: Grid | None) -> dict[str, Run] | None:
    """Heading -> the run drawn for it; ``None`` unless every heading has a finished run on one dataset."""
    if grid is None:
        return None
    chosen: dict[str, Run] = {}
    for heading, names in MODELS.items():
        for name in names:
            cells = grid.cell(name)
            if cells is not None and cells.finished:
                chosen[heading] = min(cells.finished, key=lambda run: run.seed)
                break
    datasets = {run.provenance.get("dataset") for run in chosen.values()}
    return chosen if len(chosen) == len(MODELS) and len(datasets) == 1 else None


def load_examples(dataset: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB image (H, W, 3) uint8, label (H, W)) of the first ``n`` val samples of ``dataset``, by stem."""
    from pipeline.training.data import list_split, read_image

    return [
        (sample.stem, read_image(sample.image), read_label_png(sample.label))
        for sample in list_split(dataset, "val")[:n]
    ]


def predict(run: Run, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Single-scale class predictions (H, W) of ``run``'s checkpoint for each RGB image (``evaluation.infer``)."""
    import torch

    from pipeline.training.data import image_tensor
    from pipeline.training.inference import infer
    from pipeline.training.run import load_run_model

    model, params = load_run_model(run.run_dir)
    predictions = []
    with torch.inference_mode():
        for image in images:
            batch = image_tensor(image).unsqueeze(0)  # (1, 3, H, W)
            device = next(model.parameters()).device
            probabilities = infer(model, batch.to(device), params.eval, params.train.precision)  # (1, K, H, W)
            predictions.append(probabilities.argmax(1)[0].cpu().numpy().astype(np.uint8))  # (H, W)
    return predictions
