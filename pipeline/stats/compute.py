"""One statistics run: count a label set, compute Eq. 1, write the Parquet files and figures atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.config import Params
from pipeline.datasets.layout import IGNORE_INDEX, read_classes
from pipeline.errors import ConfigError, DataError
from pipeline.io import atomic_dir, check_new_output
from pipeline.paths import dataset_dir, stats_dir
from pipeline.stats.affinity import DESCRIPTIONS, cluster_order, frequency, normaliser
from pipeline.stats.counting import Counts, count_labels, find_labels
from pipeline.stats.files import (
    CLASSES_PARQUET,
    CLASSES_SCHEMA,
    COOCCURRENCE_PARQUET,
    COOCCURRENCE_SCHEMA,
    SUPPORTERS_PARQUET,
    SUPPORTERS_SCHEMA,
    read_metadata,
    write_parquet,
)
from pipeline.stats.heatmaps import write_figures
from pipeline.stats.supporters import supporters_frame

MARKER = ".grar-stats"  # in every statistics folder: what grar wrote, and may replace
MAX_CLASSES = 255  # 8-bit labels, one value left for the ignore index


@dataclass(frozen=True)
class StatsJob:
    """Everything one run needs. ``num_classes=None`` takes K from the class table ``classes``.

    ``images``: the folder of images beside the labels (prepared layout); when it
    exists every label must have an image of the same size. ``dataset`` and
    ``split`` only label the outputs (Parquet metadata, figure titles).
    """

    labels: Path
    out: Path
    num_classes: int | None = None
    classes: Path | None = None
    images: Path | None = None
    ignore_index: int = IGNORE_INDEX
    normalisation: str = "printed"
    top_k: int = 5
    workers: int = 1
    dataset: str = ""
    split: str = ""

    @classmethod
    def for_dataset(cls, params: Params, name: str, split: str = "train") -> StatsJob:
        """The run over split ``split`` of the prepared dataset ``name``, into ``stats_dir(params, name)``."""
        if name not in params.data.names:
            raise ConfigError(f"dataset {name!r} unknown; {params.data.names_text}")
        root = dataset_dir(params, name)
        return cls(
            labels=root / split / "labels",
            out=stats_dir(params, name),
            classes=root / "classes.csv",
            images=root / split / "images",
            normalisation=params.stats.normalisation,
            top_k=params.stats.top_k,
            workers=params.stats.workers,
            dataset=name,
            split=split,
        )


@dataclass
class StatsResult:
    """What a run computed and wrote."""

    counts: Counts
    f: np.ndarray  # (K, K) float64, f[i, j]
    names: list[str]
    files: list[Path]


def build_stats(job: StatsJob, what: str = "statistics folder") -> StatsResult:
    """Count ``job.labels``, compute ``f`` (Eq. 1) and write every output into ``job.out``, atomically.

    Nothing is written unless every label is valid; an existing ``job.out`` is
    replaced only once the new folder is complete, and only when grar wrote
    it (``MARKER``, or statistics of an older grar): an ``out`` that overlaps
    the inputs, or a folder of someone else's, is refused before any work
    (``what`` names it in the error, e.g. ``--out``).
    """
    check_new_output(job.out, (job.labels, job.images, job.classes), folder=True, ours=is_stats_folder, what=what)
    names, table_bytes = class_names(job)
    k = len(names)
    check_job(job, k)
    labels = find_labels(job.labels, k, job.ignore_index, job.images)
    counts = count_labels(labels, job.workers, desc=f"stats {job.dataset or job.labels}", extra=table_bytes)
    t = counts.t
    f = frequency(t, job.normalisation)
    order, clusters = cluster_order(t)
    metadata = {
        "dataset": job.dataset,
        "split": job.split,
        "images": counts.images,
        "num_classes": k,
        "ignore_index": job.ignore_index,
        "normalisation": job.normalisation,
        "f_definition": DESCRIPTIONS[job.normalisation],
        "inputs_sha256": counts.sha256,
        "grar_version": __version__,
    }
    i, j = np.divmod(np.arange(k * k), k)
    cooccurrence = pd.DataFrame({"i": i, "j": j, "t": t[i, j], "f": f[i, j]})
    classes = pd.DataFrame({"id": np.arange(k), "name": names, "images": np.diag(t), "pixels": counts.pixels})
    supporters = supporters_frame(t, f, names, job.top_k)
    source = " ".join(part for part in (job.dataset or str(job.labels), job.split) if part)
    title = f"{source}: {counts.images} images, {DESCRIPTIONS[job.normalisation]}"
    with atomic_dir(job.out) as tmp:
        write_parquet(tmp / COOCCURRENCE_PARQUET, cooccurrence, COOCCURRENCE_SCHEMA, metadata)
        write_parquet(tmp / CLASSES_PARQUET, classes, CLASSES_SCHEMA, metadata)
        write_parquet(tmp / SUPPORTERS_PARQUET, supporters, SUPPORTERS_SCHEMA, {**metadata, "top_k": job.top_k})
        figures = write_figures(tmp, f, t, names, supporters, order, clusters, title)
        (tmp / MARKER).write_text(f"grar {__version__} statistics\n", encoding="utf-8")
    written = [COOCCURRENCE_PARQUET, CLASSES_PARQUET, SUPPORTERS_PARQUET]
    written += [str(path.relative_to(tmp)) for path in figures]
    return StatsResult(counts, f, names, [job.out / name for name in written])


def is_stats_folder(folder: Path) -> bool:
    """Whether grar wrote ``folder``: its ``MARKER``, or (older grar) a ``cooccurrence.parquet`` of grar's metadata."""
    if (folder / MARKER).is_file():
        return True
    try:
        return "grar_version" in read_metadata(folder / COOCCURRENCE_PARQUET)
    except Exception:
        return False


def build_dataset_stats(params: Params, name: str) -> None:
    """The DVC stage ``stats@NAME``: the train split of prepared dataset ``name`` (``StatsJob.for_dataset``)."""
    build_stats(StatsJob.for_dataset(params, name))


def class_names(job: StatsJob) -> tuple[list[str], bytes]:
    """Names from the class table (and its bytes, part of the input checksum), or ``class_<id>`` without one."""
    if job.classes is None:
        if job.num_classes is None:
            raise ConfigError("the number of classes is needed when there is no class table (--num-classes K)")
        return [f"class_{c}" for c in range(job.num_classes)], b""
    if not job.classes.is_file():
        hint = f"; prepare the dataset first (grar prepare {job.dataset})" if job.split else ""
        raise DataError(f"{job.classes}: class table not found{hint}")
    return read_classes(job.classes, job.num_classes), job.classes.read_bytes()


def check_job(job: StatsJob, num_classes: int) -> None:
    """``ConfigError`` for settings no label set can satisfy."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"number of classes {num_classes}: must be 1..{MAX_CLASSES} for 8-bit labels")
    if not num_classes <= job.ignore_index <= 255:
        raise ConfigError(
            f"ignore index {job.ignore_index}: must be an 8-bit value that is not a class id ({num_classes}..255)"
        )
    normaliser(job.normalisation)
    if job.top_k < 1 or job.workers < 1:
        raise ConfigError(f"top_k ({job.top_k}) and workers ({job.workers}) must be >= 1")
