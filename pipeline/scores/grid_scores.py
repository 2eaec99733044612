"""The DVC stage ``evaluate``: each grid's scores and training curves, in the files DVC shows.

Reads the grid indexes ``<grid.runs>/grids/<grid>.json`` written by the train
stage and the ``metrics.json`` / ``train_log.csv`` of the run folders they name
(run-folder contract, ``pipeline.cluster.grids``); every (cell, seed) of params must be
done. Writes, each folder all or nothing:

* ``<grid.metrics>/<grid>/<cell>.json`` (the declared metrics: ``dvc metrics
  show`` prints one row per cell): ``{"miou", "miou_ms"}``, the cell's mean over
  its seeds in percent (``miou_ms``, multi-scale + flip, is ``null`` when
  ``eval.multi_scale`` was off for some seed), and for every cell but the
  grid's FCN baseline (``baseline_cell``) ``"vs_fcn", "vs_fcn_low",
  "vs_fcn_high"``: the single-scale mIoU difference to the baseline in percent
  points and its 95 % paired-bootstrap interval (``pipeline.scores.bootstrap``,
  ``grid.bootstrap`` replicates; ``null`` when the runs lack per-image
  confusions).
* ``<grid.details>/<grid>.json`` (an output, not metrics): per cell, in params
  order, ``{"miou", "miou_ms", "pixel_accuracy", "seeds": {"<seed>": {"miou",
  "miou_ms", "pixel_accuracy", "run_dir"}}, "vs_fcn": {"baseline", "miou":
  {"diff", "low", "high"} | {"none": why}, "ms": ...}}``: scores as fractions in
  [0, 1] (means over seeds), differences in percent points.
* ``<grid.plots>/<grid>/<cell>.csv`` (``dvc plots show``): the training curve
  ``iteration,loss,lr``, the loss averaged over the seeds at each iteration.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cluster.index import read_index
from pipeline.config import Params, with_overrides
from pipeline.errors import DataError
from pipeline.io import atomic_dir
from pipeline.paths import grid_index
from pipeline.rundir import finished_metrics
from pipeline.scores.bootstrap import Interval, compare_runs

SCORES = ("miou", "miou_ms", "pixel_accuracy")
CURVE = ("iteration", "loss", "lr")


def collect_grids(params: Params) -> None:
    """Write the metrics, per-seed details and training curves of every grid of ``params`` (the evaluate stage)."""
    grids = {grid: grid_runs(params, grid) for grid in params.grid.grids}
    details = {grid: grid_details(params, grid, cells) for grid, cells in grids.items()}
    with atomic_dir(params.grid.details) as tmp:
        for grid, table in details.items():
            (tmp / f"{grid}.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    with atomic_dir(params.grid.metrics) as tmp:
        for grid, table in details.items():
            (tmp / grid).mkdir()
            for cell, scores in table.items():
                (tmp / grid / f"{cell}.json").write_text(
                    json.dumps(cell_metrics(scores), indent=2) + "\n", encoding="utf-8"
                )
    with atomic_dir(params.grid.plots) as tmp:
        for grid, cells in grids.items():
            (tmp / grid).mkdir()
            for cell, runs in cells.items():
                curve = mean_curve([Path(run["run_dir"]) / "train_log.csv" for run in runs.values()])
                curve.to_csv(tmp / grid / f"{cell}.csv", index=False, float_format="%.6g")


def baseline_cell(params: Params, grid: str) -> str | None:
    """The grid's FCN baseline: its first cell whose resolved ``model.head`` is ``fcn`` (``None`` without one)."""
    for cell, overrides in params.grid.cells(grid).items():
        if with_overrides(params, overrides).model.head == "fcn":
            return cell
    return None


def grid_details(params: Params, grid: str, cells: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per cell: ``cell_scores`` and, except for the baseline, ``vs_fcn`` (intervals of both scores)."""
    baseline = baseline_cell(params, grid)
    table = {}
    for cell, runs in cells.items():
        table[cell] = cell_scores(runs)
        if baseline is not None and cell != baseline:
            table[cell]["vs_fcn"] = {"baseline": baseline} | {
                score: interval_entry(
                    compare_runs(
                        {seed: Path(run["run_dir"]) for seed, run in runs.items()},
                        {seed: Path(run["run_dir"]) for seed, run in cells[baseline].items()},
                        score,
                        params.grid.bootstrap,
                    )
                )
                for score in ("miou", "ms")
            }
    return table


def interval_entry(interval: Interval | str) -> dict[str, Any]:
    """``{"diff", "low", "high"}`` (percent points) of an interval, or ``{"none": why}``."""
    return interval.to_dict() if isinstance(interval, Interval) else {"none": interval}


def cell_metrics(scores: dict[str, Any]) -> dict[str, float | None]:
    """A cell's declared metrics: mean mIoU and MS mIoU (percent), and the single-scale interval vs the FCN."""

    def percent(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 4)

    metrics = {"miou": percent(scores["miou"]), "miou_ms": percent(scores["miou_ms"])}
    if "vs_fcn" in scores:
        interval = scores["vs_fcn"]["miou"]
        metrics |= {
            f"vs_fcn{suffix}": interval.get(key) for suffix, key in (("", "diff"), ("_low", "low"), ("_high", "high"))
        }
    return metrics


def grid_runs(params: Params, grid: str) -> dict[str, dict[int, dict[str, Any]]]:
    """``{cell: {seed: {"run_dir", "metrics"}}}`` of ``grid``, in params order; ``DataError`` unless all are done."""
    path = grid_index(params, grid)
    if not path.is_file():
        raise DataError(f"{path}: no grid index; train the grid first (dvc repro train, or grar grid submit {grid})")
    entries = {(entry.get("cell"), entry.get("seed")): entry for entry in read_index(path)}
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in params.grid.cells(grid):  # the names
        for seed in params.grid.seeds:
            entry = entries.get((cell, seed))
            if entry is None:
                raise DataError(f"{path}: no run of cell {cell!r} seed {seed}; train the grid first")
            run_dir = Path(str(entry.get("run_dir")))
            metrics = finished_metrics(run_dir, str(entry.get("config_hash")))
            if metrics is None:
                raise DataError(
                    f"{path}: cell {cell!r} seed {seed} is not done (state {entry.get('state')}, "
                    f"log {entry.get('log')}; no metrics.json of its config in {run_dir})"
                )
            cells.setdefault(cell, {})[seed] = {"run_dir": str(run_dir), "metrics": metrics}
    return cells


def run_scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """``miou``, ``miou_ms`` (``None`` without multi-scale evaluation) and ``pixel_accuracy`` of a metrics.json."""
    return {
        "miou": metrics["miou"],
        "miou_ms": (metrics.get("ms") or {}).get("miou"),
        "pixel_accuracy": metrics["pixel_accuracy"],
    }


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
        raise DataError(
            f"{path}: a training log needs the columns iteration, lr and loss (has: "
            f"{', '.join(map(str, frame.columns)) or 'none'})"
        )
    return frame


def mean_curve(logs: list[Path]) -> pd.DataFrame:
    """``iteration, loss, lr``: the mean over ``logs`` (one ``train_log.csv`` per seed) at each iteration."""
    frames = [
        read_log_frame(log)[list(CURVE)].drop_duplicates("iteration", keep="last")  # rows redone after a resume
        for log in logs
    ]
    curve = pd.concat(frames).groupby("iteration", as_index=False, sort=True).mean()
    return curve.astype({"iteration": int})
