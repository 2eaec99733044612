"""Where artifacts live, derived from params (the single source of every path).

dvc.yaml refers to the same params keys with ``${...}``, so a path is written
once, in params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params

DATASET_MARKER = ".grar-dataset"  # in a prepared dataset: JSON {dataset, files, sha256} (pipeline.datasets.prepare)


def dataset_dir(params: Params, name: str) -> Path:
    """Prepared dataset ``name``: ``{train,val}/{images,labels}/`` and ``classes.csv``."""
    return Path(params.data.root) / name


def downloads_dir(params: Params) -> Path:
    """Downloaded archives, verified by checksum."""
    return Path(params.data.downloads)


def download_dir(params: Params, name: str) -> Path:
    """Archives of real dataset ``name`` and their extracted folders (``downloads/<name>/``)."""
    return downloads_dir(params) / name


def stats_dir(params: Params, name: str) -> Path:
    """Co-occurrence statistics and heatmaps of dataset ``name``."""
    return Path(params.stats.root) / name


def runs_dir(params: Params) -> Path:
    """Run folders of the ablation grids (``<cell>-s<seed>-<hash10>/``, shared by grids) and their indexes."""
    return Path(params.grid.runs)


def grid_indexes_dir(params: Params) -> Path:
    """The grid indexes ``<grid>.json`` (``pipeline.cluster.index``)."""
    return runs_dir(params) / "grids"


def grid_index(params: Params, grid: str) -> Path:
    """The index of grid ``grid``: its cells, seeds, run folders, states and job ids (``pipeline.cluster.index``)."""
    return grid_indexes_dir(params) / f"{grid}.json"


def portable(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the index then survives moving the project)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def grid_logs_dir(params: Params, grid: str) -> Path:
    """submitit's folder for the jobs of grid ``grid``: sbatch scripts, pickles, ``<job id>_<task>_log.{out,err}``."""
    return Path(params.executor.log_dir) / grid
