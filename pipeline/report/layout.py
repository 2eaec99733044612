"""Where every file of the report site goes, relative to the report root (``reports/``): the one place that knows.

Every link in the site is relative (``href_from``), so the folder opens from the
file system and from any static server. The generated outputs are ``OUTPUTS``;
everything else under ``reports/`` (``paper_tables.yaml``, the source of the
paper's numbers) is left alone.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from pipeline.report.runs import Run

REPORTS = Path("reports")
OUTPUTS = ("index.html", "tables", "figures", "datasets", "grids")  # dvc.yaml outs of the report stage
TABLES = (1, 2, 3, 4, 5, 6)


def table_page(number: int, suffix: str = "html") -> str:
    return f"tables/table{number}.{suffix}"


def dataset_page(name: str) -> str:
    return f"datasets/{name}.html"


def explorer_page(name: str) -> str:
    """The self-contained affinity explorer of a dataset (``pipeline.report.explorer``)."""
    return f"datasets/{name}-explorer.html"


def grid_page(name: str) -> str:
    return f"grids/{name}.html"


def folder_index(folder: str) -> str:
    return f"{folder}/index.html"


QUALITATIVE_PAGE = "figures/qualitative.html"


def stats_figure(dataset: str, name: str) -> str:
    """A figure of ``artifacts/stats/<dataset>/<name>``, copied into the site."""
    return f"figures/stats/{dataset}/{name}"


def curves_figure(grid: str, cell: str) -> str:
    return f"figures/curves/{grid}/{cell}.png"


def lambda_figure(grid: str, cell: str) -> str:
    """GRAr's λ and λ̂ over training, every seed of a cell."""
    return f"figures/lambdas/{grid}/{cell}.png"


def edges_figure(run: Run) -> str:
    """f beside the learnt e^p and e^n of a conv run."""
    return f"figures/edges/{run.key}.png"


def confusion_figure(run: Run, suffix: str = "") -> str:
    """The row-normalised confusion matrix of ``run`` (``suffix`` ``_ms``: multi-scale)."""
    return f"figures/confusion/{run.key}{suffix}.svg"


def qualitative_figure(dataset: str) -> str:
    return f"figures/qualitative/{dataset}.png"


def run_file(run: Run, name: str) -> str:
    """A copy of a run's ``error.txt`` or its job log, beside the grid pages."""
    return f"grids/logs/{run.key}/{name}"


def failure_href(run: Run | None) -> str | None:
    """The page explaining why ``run`` failed: its ``error.txt``, else its job log, else nothing."""
    if run is None:
        return None
    if run.error is not None:
        return run_file(run, "error.txt")
    if run.log is not None:
        return run_file(run, "log.txt")
    return None


def href_from(page: str, target: str) -> str:
    """``target`` (relative to the report root) as a relative link from ``page`` (also relative to the root)."""
    path, hash_, fragment = target.partition("#")
    relative = posixpath.relpath(path, posixpath.dirname(page) or ".") if path else ""
    return relative + hash_ + fragment
