"""The grid indexes ``<grid.runs>/grids/<grid>.json``: what a grid's runs became, for any later process.

One JSON file per grid, ``{"grid": NAME, "cells": [ENTRY, ...]}``, one entry
per run (cell, seed) in params order: ``cell``, ``seed``, ``config_hash``,
``run_dir``, ``state`` (``pipeline.cluster.grids``), ``job_id``, ``log``,
``reason``, ``submission`` (``{"name": token, "task": i, "log_dir"}`` of the
SLURM array submitted for it, written before ``sbatch``) and ``metrics``.
Written atomically by ``submit`` and ``wait`` under the indexes' lock
``<grid.runs>/grids/grar.lock``, so that concurrent writers lose nothing;
``status``, the evaluate stage and the report only read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.io import write_text_atomic
from pipeline.lock import acquire
from pipeline.paths import grid_index, grid_indexes_dir

INDEX_LOCK_S = 300.0  # waiting longer than this for the indexes' lock is an error naming its holder


def grid_index_paths(params: Params) -> list[Path]:
    """Every grid index under ``grid.runs`` (any grid, also of other params), sorted."""
    folder = grid_indexes_dir(params)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def read_index(path: Path) -> list[dict[str, Any]]:
    """The cell entries of a grid index; ``DataError`` naming the file when it is not one."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the grid index ({err})") from None
    cells = index.get("cells") if isinstance(index, dict) else None
    if not isinstance(cells, list) or not all(isinstance(entry, dict) for entry in cells):
        raise DataError(f'{path}: not a grid index (expected {{"grid": ..., "cells": [{{...}}, ...]}})')
    return cells


def write_index(params: Params, grid: str, entries: list[dict[str, Any]]) -> Path:
    """Write ``<grid.runs>/grids/<grid>.json`` atomically (hold ``index_lock`` around reading and writing)."""
    path = grid_index(params, grid)
    write_text_atomic(path, json.dumps({"grid": grid, "cells": entries}, indent=2) + "\n")
    return path


def index_lock(params: Params):
    """The lock of the grid indexes (``<grid.runs>/grids/grar.lock``): one writer at a time, waited for at
    most ``INDEX_LOCK_S`` seconds (then ``Locked`` naming its holder)."""
    return acquire(
        grid_indexes_dir(params) / "grar.lock",
        f"grid indexes in {grid_indexes_dir(params)}",
        wait=True,
        poll_s=0.2,
        timeout_s=INDEX_LOCK_S,
    )
