"""The runs of the grids as the report sees them: per cell, per seed, finished or why not.

Reads the grid index ``<grid.runs>/grids/<grid>.json`` and the run folders it
names (the run-folder contract of ``pipeline.cluster.grids`` / ``pipeline.training.loop``). A run
is *finished* when its ``metrics.json`` exists (written last by the trainer),
whatever the index says; otherwise its state says why there is no number:
``not run`` (no index, no entry, or pending), ``running``, ``failed`` (with the
run's ``error.txt`` and the job's log, when present). Scores in ``metrics.json``
are fractions; a ``Measure`` holds them in percent, averaged over the finished
seeds with their spread.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.paths import grid_index, runs_dir

NOT_RUN = "not run"
SCORES = ("miou", "ms")  # single scale, multi-scale + flip (the MS column of Table 1)


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; ``DataError`` naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSON ({err})") from None


@dataclass(frozen=True)
class Run:
    """One (cell, seed) of a grid: where it lives and what came of it."""

    grid: str
    cell: str
    seed: int
    state: str  # done | failed | running | pending | not run
    run_dir: Path | None
    metrics: dict | None  # metrics.json content when finished
    error: Path | None = None  # <run_dir>/error.txt (the traceback) when present
    log: Path | None = None  # the job's log (from the index) when present
    job_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def key(self) -> str:
        """A file-name-safe, unique name: the run folder's name, or ``<grid>-<cell>-s<seed>`` without one."""
        return self.run_dir.name if self.run_dir is not None else f"{self.grid}-{self.cell}-s{self.seed}"

    @property
    def provenance(self) -> dict:
        return (self.metrics or {}).get("provenance") or {}

    def score(self, score: str) -> float | None:
        """``miou`` (single scale) or ``ms`` (multi-scale mIoU) as a fraction; ``None`` when not measured."""
        if self.metrics is None:
            return None
        if score == "miou":
            return self.metrics.get("miou")
        return (self.metrics.get("ms") or {}).get("miou")


@dataclass(frozen=True)
class Measure:
    """A number measured over seeds, in percent: mean, sample standard deviation (n - 1) and the runs."""

    values: tuple[float, ...]  # percent, one per finished seed
    runs: tuple[Run, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n >= 2 else None

    def text(self) -> str:
        """``55.00 ± 7.07 (n=2)``; ``55.00 (n=1)`` for one seed."""
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        return f"{self.mean:.2f}{spread} (n={self.n})"


@dataclass(frozen=True)
class CellRuns:
    """Every seed of one cell of one grid."""

    grid: str
    cell: str
    runs: tuple[Run, ...]  # in seed order
    indexed: bool  # whether the grid index lists the cell
    index: Path | None = None  # the grid index, when it exists

    @property
    def finished(self) -> tuple[Run, ...]:
        return tuple(run for run in self.runs if run.finished)

    def measure(self, score: str = "miou", dataset: str | None = None) -> Measure | None:
        """The mean over the finished seeds of ``score`` (``miou`` | ``ms``), in percent; ``None`` without one.

        ``dataset`` keeps only the runs whose provenance names that dataset.
        """
        runs = tuple(
            run
            for run in self.finished
            if run.score(score) is not None and (dataset is None or run.provenance.get("dataset") == dataset)
        )
        if not runs:
            return None
        return Measure(tuple(100 * run.score(score) for run in runs), runs)

    def status(self, score: str = "miou") -> tuple[str, Run | None]:
        """Why ``measure(score)`` is ``None``: (text, the run whose logs explain it, if any)."""
        if self.finished:
            return "not evaluated multi-scale (eval.multi_scale false)" if score == "ms" else "no mIoU", None
        failed = [run for run in self.runs if run.state == "failed"]
        if failed:
            return "failed", failed[0]
        if any(run.state == "running" for run in self.runs):
            return "running", None
        if self.index is None:
            return f"{NOT_RUN} (grid {self.grid} not run yet: no grid index)", None
        if not self.indexed:
            return f"{NOT_RUN} (not in {self.index})", None
        return f"{NOT_RUN} (pending)", None

    @property
    def state(self) -> str:
        """``done`` when every seed finished, else a summary such as ``1/2 done, 1 failed``."""
        counts: dict[str, int] = {}
        for run in self.runs:
            state = "done" if run.finished else run.state
            counts[state] = counts.get(state, 0) + 1
        if counts.get("done") == len(self.runs):
            return "done"
        parts = [f"{counts.pop('done', 0)}/{len(self.runs)} done"] + [f"{n} {state}" for state, n in counts.items()]
        return ", ".join(parts)


@dataclass(frozen=True)
class Grid:
    """One grid: its cells in params order (then any extra cell of the index), and its index file."""

    name: str
    cells: tuple[CellRuns, ...]
    index: Path
    indexed: bool  # whether the index file exists

    def cell(self, name: str) -> CellRuns | None:
        return next((cell for cell in self.cells if cell.cell == name), None)

    @property
    def runs(self) -> tuple[Run, ...]:
        return tuple(run for cell in self.cells for run in cell.runs)


def load_grids(params: Params) -> dict[str, Grid]:
    """Every grid of ``params.grid.grids``, in order (``load_grid``)."""

    return {
        name: load_grid(
            grid_index(params, name), runs_dir(params), name, list(params.grid.cells(name)), params.grid.seeds
        )
        for name in params.grid.grids
    }


def load_grid(path: Path, runs: Path, grid: str, cells: Sequence[str], seeds: Sequence[int]) -> Grid:
    """The grid ``grid`` from its index ``path`` and the run folders under ``runs``; every (cell, seed) present.

    Cells and seeds of params without an index entry are ``not run``; entries of the
    index that params no longer lists are kept after them.
    """
    entries = _index_entries(path) if path.is_file() else []
    by_cell: dict[str, dict[int, dict]] = {}
    for entry in entries:
        by_cell.setdefault(entry["cell"], {})[entry["seed"]] = entry
    names = list(cells) + [name for name in by_cell if name not in cells]
    result = []
    for name in names:
        entries_of = by_cell.get(name, {})
        cell_seeds = sorted(set(seeds if name in cells else ()) | set(entries_of))
        result.append(
            CellRuns(
                grid,
                name,
                tuple(_run(runs, grid, name, seed, entries_of.get(seed)) for seed in cell_seeds),
                indexed=bool(entries_of),
                index=path if path.is_file() else None,
            )
        )
    return Grid(grid, tuple(result), path, path.is_file())


def _index_entries(path: Path) -> list[dict]:
    """The entries of a grid index (``pipeline.cluster.index.read_index``), each checked for what the report reads."""
    from pipeline.cluster.index import read_index

    entries = read_index(path)
    for position, entry in enumerate(entries):
        if not (
            isinstance(entry.get("cell"), str)
            and isinstance(entry.get("seed"), int)
            and isinstance(entry.get("state"), str)
        ):
            raise DataError(f"{path}: cells[{position}]: expected cell (text), seed (integer) and state (text)")
    return entries


def _resolve(runs: Path, path: str | None) -> Path | None:
    """A path of the index: as written (relative to the working folder), else relative to ``runs``."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists() or not (runs / candidate.name).exists():
        return candidate
    return runs / candidate.name


def _run(runs: Path, grid: str, cell: str, seed: int, entry: dict | None) -> Run:
    if entry is None:
        return Run(grid, cell, seed, NOT_RUN, None, None)
    run_dir = _resolve(runs, entry.get("run_dir"))
    metrics = entry.get("metrics")
    if metrics is None and run_dir is not None and (run_dir / "metrics.json").is_file():
        metrics = read_json(run_dir / "metrics.json")  # metrics.json is written last: its presence = done
    state = "done" if metrics is not None else entry["state"]
    if state == "done" and metrics is None:
        state = "failed"  # the index says done, yet there are no scores
    error = run_dir / "error.txt" if run_dir is not None and (run_dir / "error.txt").is_file() else None
    log = _resolve(runs, entry.get("log"))
    if log is not None and error is not None and log.resolve() == error.resolve():
        log = None  # an in-process run's log is its error.txt
    job_id = entry.get("job_id")
    return Run(
        grid,
        cell,
        seed,
        state,
        run_dir,
        metrics,
        error,
        log if log is not None and log.is_file() else None,
        None if job_id is None else str(job_id),
    )


def unique_runs(runs: Iterable[Run]) -> list[Run]:
    """Finished runs without repeats: a run folder shared by cells of several grids counts once."""
    seen: dict[str, Run] = {}
    for run in runs:
        if run.finished:
            seen.setdefault(str(run.run_dir) if run.run_dir is not None else run.key, run)
    return list(seen.values())


def percent(value: float | None) -> str:
    """A fraction as ``12.34`` (percent), ``n/a`` for ``None`` or NaN."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
