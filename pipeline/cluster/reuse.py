"""Finished runs of another runs folder, reused instead of trained again: a run is its config hash.

A run folder is named and judged done by the hash of its resolved config
(``pipeline.rundir``), so a finished run of the same hash in another runs
folder is the same run. Before training or submitting, ``adopt_finished``
looks in the roots of ``reuse_roots`` for one and links its files into the
run's own folder (``metrics.json`` last, under the folder's lock), so the run
is done without training. The roots:

* ``GRAR_REUSE_RUNS``: runs folders of your own (``os.pathsep``-separated), e.g.
  a colleague's or an older checkout's ``runs/``;
* the workspace a DVC experiment came from: ``dvc exp run --temp`` and queued
  experiments (``dvc exp run --queue``, ``dvc queue start``) run in a copy of
  the project under ``.dvc/tmp/exps/``, which holds no ``runs/`` (not tracked by
  git, not cached by DVC); DVC names the original project in ``DVC_ROOT``, and
  its ``grid.runs`` (when relative) is a root.

Files are hard-linked (copied across file systems); a source is never written.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from pipeline.cluster.grids import ERROR_FILE, HASH_CHARS, Run
from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.io import clean_leftovers, fsync_path, temp_prefix
from pipeline.lock import RUN_LOCK, Locked, run_lock
from pipeline.rundir import METRICS_FILE, finished_metrics

REUSE_ENV = "GRAR_REUSE_RUNS"


def reuse_roots(params: Params) -> list[Path]:
    """The runs folders whose finished runs are reused (module docstring), existing ones, never ``grid.runs``."""
    own = Path(params.grid.runs).resolve()
    roots = [Path(part) for part in os.environ.get(REUSE_ENV, "").split(os.pathsep) if part]
    origin = os.environ.get("DVC_ROOT")
    if origin and not Path(params.grid.runs).is_absolute():
        roots.append(Path(origin) / params.grid.runs)
    found = []
    for root in roots:
        if root.is_dir() and root.resolve() != own and root.resolve() not in found:
            found.append(root.resolve())
    return found


def finished_in(root: Path, digest: str) -> Path | None:
    """A run folder of ``root`` that finished the config ``digest`` (its ``metrics.json`` has the hash)."""
    for folder in sorted(root.glob(f"*-{digest[:HASH_CHARS]}")):
        try:
            if folder.is_dir() and finished_metrics(folder, digest) is not None:
                return folder
        except DataError:
            continue  # a folder of another config under the same short hash, or unreadable: not this run
    return None


def adopt_finished(params: Params, runs: list[Run]) -> list[Run]:
    """Link the finished runs of ``reuse_roots`` into the folders of ``runs``; return the runs now done."""
    roots = reuse_roots(params)
    adopted = []
    for run in runs if roots else []:
        source = next((found for root in roots if (found := finished_in(root, run.config_hash))), None)
        if source is not None and adopt(run, source):
            print(f"{run.label}: finished in {source}: reused, not trained", file=sys.stderr, flush=True)
            adopted.append(run)
    return adopted


def adopt(run: Run, source: Path) -> bool:
    """Link ``source``'s files into ``run.run_dir`` under its lock, ``metrics.json`` last; ``False`` when another
    process holds the lock (it trains the run)."""
    try:
        with run_lock(run.run_dir):
            if finished_metrics(run.run_dir, run.config_hash) is None:
                files = [
                    path
                    for path in source.iterdir()
                    if path.is_file() and not path.name.startswith(RUN_LOCK) and path.name != ERROR_FILE
                ]
                for path in sorted(files, key=lambda path: (path.name == METRICS_FILE, path.name)):
                    link_file(path, run.run_dir / path.name)
            (run.run_dir / ERROR_FILE).unlink(missing_ok=True)  # of an earlier failed attempt
    except Locked:
        return False
    return True


def link_file(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content, atomically: a hard link (the source untouched, its mode included),
    or a durable copy across file systems."""
    clean_leftovers(target)
    tmp = target.with_name(f"{temp_prefix(target)}{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
            fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
