"""The DVC stage ``evaluate``: each grid's scores and training curves, in the files DVC shows.

Reads the grid indexes ``<grid.runs>/grids/<grid>.json`` written by the train
stage and the ``metrics.json`` / ``train_log.csv`` of the run folders they name
(run-folder contract, ``pipeline.grid``); every (cell, seed) of params must be
done. Writes, each folder all or nothing:

* ``<grid.metrics>/<grid>.json`` (``dvc metrics show``): per cell, in params
  order, ``{"miou", "miou_ms", "pixel_accuracy", "seeds": {"<seed>": {"miou",
  "miou_ms", "pixel_accuracy", "run_dir"}}}``: fractions in [0, 1]; the cell's
  scores are the means over its seeds; ``miou_ms`` (multi-scale + flip) is
  ``null`` when ``eval.multi_scale`` was off for some seed.
* ``<grid.plots>/<grid>/<cell>.csv`` (``dvc plots show``): the training curve
  ``iteration,loss,lr``, the loss averaged over the seeds at each iteration.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.grid import grid_cells, read_index
from pipeline.io import atomic_dir
from pipeline.paths import grid_index
from pipeline.rundir import finished_metrics

SCORES = ("miou", "miou_ms", "pixel_accuracy")
CURVE = ("iteration", "loss", "lr")


def collect_grids(params: Params) -> None:
    """Write the metrics and training curves of every grid of ``params`` (the evaluate stage)."""
    grids = {grid: grid_runs(params, grid) for grid in params.grid.grids}
    with atomic_dir(params.grid.metrics) as tmp:
        for grid, cells in grids.items():
            table = {cell: cell_scores(runs) for cell, runs in cells.items()}
            (tmp / f"{grid}.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    with atomic_dir(params.grid.plots) as tmp:
        for grid, cells in grids.items():
            (tmp / grid).mkdir()
            for cell, runs in cells.items():
                curve = mean_curve([Path(run["run_dir"]) / "train_log.csv" for run in runs.values()])
                curve.to_csv(tmp / grid / f"{cell}.csv", index=False, float_format="%.6g")


def grid_runs(params: Params, grid: str) -> dict[str, dict[int, dict[str, Any]]]:
    """``{cell: {seed: {"run_dir", "metrics"}}}`` of ``grid``, in params order; ``DataError`` unless all are done."""
    path = grid_index(params, grid)
    if not path.is_file():
        raise DataError(f"{path}: no grid index; train the grid first (dvc repro train, or grar grid submit {grid})")
    entries = {(entry.get("cell"), entry.get("seed")): entry for entry in read_index(path)}
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in grid_cells(params, grid):
        for seed in params.grid.seeds:
            entry = entries.get((cell.name, seed))
            if entry is None:
                raise DataError(f"{path}: no run of cell {cell.name!r} seed {seed}; train the grid first")
            run_dir = Path(str(entry.get("run_dir")))
            metrics = finished_metrics(run_dir, str(entry.get("config_hash")))
            if metrics is None:
                raise DataError(f"{path}: cell {cell.name!r} seed {seed} is not done (state {entry.get('state')}, "
                                f"log {entry.get('log')}; no metrics.json of its config in {run_dir})")
            cells.setdefault(cell.name, {})[seed] = {"run_dir": str(run_dir), "metrics": metrics}
    return cells


def run_scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """``miou``, ``miou_ms`` (``None`` without multi-scale evaluation) and ``pixel_accuracy`` of a metrics.json."""
    return {"miou": metrics["miou"], "miou_ms": (metrics.get("ms") or {}).get("miou"),
            "pixel_accuracy": metrics["pixel_accuracy"]}


def cell_scores(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A cell's scores: the mean over its seeds of each score, and each seed's scores and run folder."""
    seeds = {str(seed): {**run_scores(run["metrics"]), "run_dir": run["run_dir"]} for seed, run in runs.items()}
    means: dict[str, Any] = {}
    for score in SCORES:
        values = [scores[score] for scores in seeds.values()]
        means[score] = None if None in values else statistics.fmean(values)
    return {**means, "seeds": seeds}


def read_log_frame(path: Path) -> pd.DataFrame:
    """A run's ``train_log.csv`` as numbers; an empty cell (a term the run lacks) is NaN.

    ``DataError`` naming the file when it cannot be read as numbers or lacks one of
    the ``CURVE`` columns (iteration, loss, lr).
    """
    try:
        frame = pd.read_csv(path).astype(float)
    except (OSError, ValueError) as err:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: cannot read the training log ({err})") from None
    if not set(CURVE) <= set(frame.columns):
        raise DataError(f"{path}: a training log needs the columns iteration, lr and loss (has: "
                        f"{', '.join(map(str, frame.columns)) or 'none'})")
    return frame


def mean_curve(logs: list[Path]) -> pd.DataFrame:
    """``iteration, loss, lr``: the mean over ``logs`` (one ``train_log.csv`` per seed) at each iteration."""
    frames = [read_log_frame(log)[list(CURVE)].drop_duplicates("iteration", keep="last")  # rows redone after a resume
              for log in logs]
    curve = pd.concat(frames).groupby("iteration", as_index=False, sort=True).mean()
    return curve.astype({"iteration": int})
