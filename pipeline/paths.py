"""Where artifacts live, derived from params (the single source of every path).

dvc.yaml refers to the same params keys with ``${...}``, so a path is written
once, in params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params


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
