"""The grid indexes ``<grid.runs>/grids/<grid>.json``: what a grid's runs became, for any later process.

One JSON file per grid, ``{"grid": NAME, "cells": [ENTRY, ...]}``, one entry
per run (cell, seed) in params order: ``cell``, ``seed``, ``config_hash``,
``run_dir``, ``state`` (``pipeline.cluster.grids``), ``job_id``, ``log``,
``reason``, ``submission`` (``{"name": token, "task": i, "log_dir"}`` of the
SLURM array submitted for it, written before ``sbatch``) and ``metrics``.
Written atomically by ``submit`` and ``wait`` under the indexes' lock
``<grid.runs>/grids/grar.lock``, so that concurrent writers lose nothing;
``status``, the evaluate stage and the report only read.

An index is rebuilt from the run folders at every write (states, metrics,
reasons are read afresh; only the job ids and submission tokens come from the
indexes). So an unreadable index (truncated, edited by hand) is skipped by
``status`` with a warning (the SLURM jobs it recorded are then not followed),
named with the way out by the evaluate stage and the report, and replaced by
the next ``wait`` or ``submit`` of its grid, which keeps the unreadable file
beside it as ``<grid>.json.corrupt-<UTC time>``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.errors import DataError, one_line
from pipeline.io import write_text_atomic
from pipeline.lock import acquire
from pipeline.paths import grid_index, grid_indexes_dir

INDEX_LOCK_S = 300.0  # waiting longer than this for the indexes' lock is an error naming its holder


def grid_index_paths(params: Params) -> list[Path]:
    """Every grid index under ``grid.runs`` (any grid, also of other params), sorted."""
    folder = grid_indexes_dir(params)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


class IndexUnreadable(DataError):
    """A grid index that is not one (truncated, edited); the message names it and how to rebuild it."""

    def __init__(self, path: Path, problem: str) -> None:
        grid = path.name.removesuffix(".json")
        super().__init__(
            f"{path}: {problem}; `grar grid wait {grid}` (or submit) rebuilds it from the run folders, keeping "
            "this file beside it"
        )
        self.path = path


def read_index(path: Path) -> list[dict[str, Any]]:
    """The cell entries of a grid index; ``IndexUnreadable`` naming the file (and the way out) when it is not one."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexUnreadable(path, f"cannot read the grid index ({err})") from None
    cells = index.get("cells") if isinstance(index, dict) else None
    if not isinstance(cells, list) or not all(isinstance(entry, dict) for entry in cells):
        raise IndexUnreadable(path, 'not a grid index (expected {"grid": ..., "cells": [{...}, ...]})')
    return cells


def readable_entries(path: Path) -> list[dict[str, Any]]:
    """``read_index`` for a reader that can go on without it: an unreadable index is said once on stderr (its
    jobs are then not followed) and read as empty."""
    try:
        return read_index(path)
    except IndexUnreadable as err:
        if path not in _warned:
            _warned.add(path)
            print(f"grar: warning: {one_line(str(err))}; the SLURM jobs it records are not followed", file=sys.stderr)
        return []


_warned: set[Path] = set()


def write_index(params: Params, grid: str, entries: list[dict[str, Any]]) -> Path:
    """Write ``<grid.runs>/grids/<grid>.json`` atomically (hold ``index_lock`` around reading and writing); an
    unreadable index there is kept beside it as ``<grid>.json.corrupt-<UTC time>``, never overwritten."""
    path = grid_index(params, grid)
    if path.exists():
        try:
            read_index(path)
        except IndexUnreadable:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            kept = path.with_name(f"{path.name}.corrupt-{stamp}")
            os.replace(path, kept)
            print(
                f"grar: note: {path}: unreadable, rebuilt from the run folders; the old file is {kept}", file=sys.stderr
            )
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
