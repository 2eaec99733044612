"""What a run reads besides its params, and the model built from it: the class names of its dataset, GRAr's
affinity (Eq. 1, from the statistics' counts) and the SR-Loss class weights (Eq. 6, from the class counts)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from model.segmentor import Segmentor
from pipeline.config import Params
from pipeline.datasets.layout import CLASSES_FILE, read_classes
from pipeline.errors import DataError
from pipeline.paths import dataset_dir, stats_dir
from pipeline.stats.affinity import frequency
from pipeline.stats.files import CLASSES_PARQUET, COOCCURRENCE_PARQUET, load_counts
from pipeline.training.build import build_segmentor


def class_names(params: Params) -> list[str]:
    """The class names of ``train.dataset`` (its ``classes.csv``)."""
    return read_classes(dataset_dir(params, params.train.dataset) / CLASSES_FILE)


def affinity_matrix(params: Params, num_classes: int) -> Tensor | None:
    """GRAr's f (K, K) for ``edges: graph``: the t counts of the statistics under ``stats.normalisation`` (Eq. 1).

    f is recomputed from t, not read from the file's f column, so a run whose
    ``stats.normalisation`` differs from the one the statistics were written
    with gets its own. ``None`` for other heads and for ``edges: conv``.
    """
    if params.model.head != "grar" or params.model.grar.edges != "graph":
        return None
    path = stats_dir(params, params.train.dataset) / COOCCURRENCE_PARQUET
    t = load_counts(path, num_classes)  # (K, K)
    return torch.from_numpy(frequency(t, params.stats.normalisation)).float()


def frequency_class_weights(images: np.ndarray) -> np.ndarray:
    """The SR-Loss weights w_k of Eq. 6 for ``sr_class_weights: frequency``, from images holding each class.

    The paper leaves w_k open. Each image contributes one SR-Loss term per
    class it holds, so a class's share of the terms is its image count n_k
    (``classes.parquet``'s ``images``); median frequency balancing (Eigen and
    Fergus, ICCV 2015) over these counts gives

        w_k = median_j(n_j) / n_k        over the classes with n_k > 0,

    so a class as frequent as the median class weighs 1, rarer ones more. A
    class that never occurs forms no region, and gets 1.
    """
    images = np.asarray(images, np.float64)  # (K,)
    present = images > 0
    weights = np.ones_like(images)
    if present.any():
        weights[present] = np.median(images[present]) / images[present]
    return weights


def sr_class_weights(params: Params, num_classes: int) -> Tensor | None:
    """w_k for the SR-Loss: ``None`` (uniform) unless ``train.loss.sr_class_weights`` is ``frequency``."""
    if params.train.loss.sr_class_weights != "frequency" or params.train.loss.sr == 0:
        return None
    path = stats_dir(params, params.train.dataset) / CLASSES_PARQUET
    try:
        table = pq.read_table(path, columns=["id", "images"])
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `grar stats {params.train.dataset}` (or `dvc repro`) first") from None
    except Exception as err:  # pyarrow raises several types for a foreign file
        raise DataError(f"{path}: not a classes.parquet with columns id, images ({err})") from None
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(num_classes)):
        raise DataError(f"{path}: ids are not 0..{num_classes - 1} in order: the statistics of another dataset?")
    return torch.from_numpy(frequency_class_weights(table.column("images").to_numpy())).float()


def build_model(params: Params, num_classes: int) -> Segmentor:
    """The segmentor of ``params.model`` initialised from ``seed`` (GRAr's affinity from the statistics)."""
    affinity = affinity_matrix(params, num_classes)
    torch.manual_seed(params.seed)
    source = str(stats_dir(params, params.train.dataset) / COOCCURRENCE_PARQUET)
    return build_segmentor(params.model, num_classes, affinity, affinity_source=source, weights=params.weights)
