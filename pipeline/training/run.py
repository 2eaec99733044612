"""A run's life cycle: train into its folder, evaluate on the val split, write ``metrics.json`` last; load it back.

``run_cell(params, run_dir)`` is what a grid cell, ``grar train`` and a
submitit job call: train the resolved config (resuming from
``run_dir/checkpoint.pt``, ``pipeline.training.loop``), evaluate on the val
split (``pipeline.training.inference``), write the scores. The files of a run
folder: the run-folder contract, ``pipeline.rundir``. ``load_run`` rebuilds
a finished run's model from its checkpoint alone (``grar predict``, the report).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from model.segmentor import Segmentor
from pipeline.config import Params, validate
from pipeline.errors import DataError
from pipeline.io import atomic_path, check_new_output, write_text_atomic
from pipeline.lock import check_run_lock, locked_run
from pipeline.paths import dataset_dir
from pipeline.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CONFUSION_FILE,
    CONFUSION_IMAGES_FILE,
    CONFUSION_IMAGES_MS_FILE,
    CONFUSION_MS_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_MARKER,
    config_hash,
    finished_metrics,
    is_run_folder,
    read_log,
    source_commit,
)
from pipeline.scores.per_image import write_image_confusions
from pipeline.training.build import build_segmentor
from pipeline.training.checkpoint import check_checkpoint_config, load_checkpoint, with_later_keys
from pipeline.training.data import SegmentationDataset
from pipeline.training.distributed import distributed, resolve_device
from pipeline.training.inference import evaluate_model, scores
from pipeline.training.loop import cpu_threads, current_device, train


def run_cell(params: Params, run_dir: Path) -> dict[str, Any]:
    """Train ``params`` into ``run_dir`` (resuming), evaluate on the val split, write ``metrics.json`` last.

    Returns the metrics: ``miou``, ``pixel_accuracy``, ``mean_accuracy``,
    ``per_class_iou`` {class name: IoU or None} (single scale; fractions in
    [0, 1]), ``ms`` (the same four, multi-scale + flip) or ``None``,
    ``iterations``, ``train_seconds`` (sum of the log's per-iteration times,
    over every resume), ``eval_seconds``, ``provenance`` {profile, dataset,
    backbone, head, seed, commit, config_hash, run_dir, device, threads, torch}. Also
    writes ``confusion.npy`` (and ``confusion_ms.npy``), the (K, K) int64
    dataset-level confusion matrices, rows = ground truth, and
    ``confusion_images.npz`` (and ``confusion_images_ms.npz``), the same
    counts per val image, sparse (schema: ``pipeline.scores.per_image``; their sum
    is the dataset-level matrix).

    A ``run_dir`` whose ``metrics.json`` has this config's hash is returned as
    is. In a multi-task SLURM job every task calls this: the tasks train one
    model data-parallel and rank 0 writes the files.
    """
    run_dir = Path(run_dir)
    digest = config_hash(params)
    done = finished_metrics(run_dir, digest)
    if done is not None:
        return done
    check_new_output(run_dir, folder=True, ours=is_run_folder, what="run folder")  # before the lock writes there
    return train_and_evaluate(params, run_dir, digest)


@locked_run  # one trainer per run folder (pipeline.lock): pipeline.lock.Locked when another process trains it
def train_and_evaluate(params: Params, run_dir: Path, digest: str) -> dict[str, Any]:
    """``run_cell``'s work on config ``digest``, under the run folder's lock (see ``run_cell``)."""
    done = finished_metrics(run_dir, digest)  # finished by the process whose lock we waited for
    if done is not None:
        return done
    check_checkpoint_config(run_dir / CHECKPOINT_FILE, digest)
    with cpu_threads(params), distributed(resolve_device(params.train.device)) as ranks:
        if ranks.main:
            check_run_lock(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / RUN_MARKER).touch()
            write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        model = train(params, run_dir, ranks)
        device = current_device(params)
        val = SegmentationDataset(dataset_dir(params, params.train.dataset), "val")
        evaluation = evaluate_model(
            model, val, params.eval, device, params.train.precision, ranks, desc=f"eval {params.model.head}"
        )
        metrics = {
            **scores(evaluation.single, val.class_names),
            "ms": scores(evaluation.multi, val.class_names) if evaluation.multi is not None else None,
            "iterations": params.train.schedule.iterations,
            "train_seconds": sum(float(row["seconds"]) for row in read_log(run_dir / LOG_FILE)) if ranks.main else None,
            "eval_seconds": evaluation.seconds,
            "provenance": {
                "profile": params.profile,
                "dataset": params.train.dataset,
                "backbone": params.model.backbone,
                "head": params.model.head,
                "danet": params.model.danet,
                "seed": params.seed,
                "commit": source_commit(),
                "config_hash": digest,
                "run_dir": str(run_dir),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
        }
        if ranks.main:
            check_run_lock(run_dir)  # the evaluation took a while: is the run still ours?
            write_matrix(run_dir / CONFUSION_FILE, evaluation.single)
            write_image_confusions(run_dir / CONFUSION_IMAGES_FILE, evaluation.single_images)
            if evaluation.multi is not None:
                write_matrix(run_dir / CONFUSION_MS_FILE, evaluation.multi)
                write_image_confusions(run_dir / CONFUSION_IMAGES_MS_FILE, evaluation.multi_images)
            check_run_lock(run_dir)
            write_text_atomic(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    """Save a confusion matrix as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, matrix.astype(np.int64))


# Params keys added after checkpoints were first written, with the value that reproduces the older behaviour:
# a checkpoint without them still loads.


@dataclass(frozen=True)
class RunModel:
    """A trained run as ``load_run`` rebuilds it: the model (CPU, eval mode), its params and class names."""

    model: Segmentor
    params: Params
    class_names: tuple[str, ...]


def load_run(run_dir: str | os.PathLike) -> RunModel:
    """The model of ``run_dir/checkpoint.pt`` (on the CPU, in eval mode), the params and class names it was trained on.

    Needs nothing but the checkpoint: the architecture comes from its params,
    the number of classes, their names and GRAr's affinity from the checkpoint
    itself, so neither the dataset, the statistics nor the pretrained weight
    file must still exist. Inputs are normalised images, ``pipeline.training.data.image_tensor``.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise DataError(f"{path}: no checkpoint; train the run first (`grar train --out {run_dir}`)")
    state = load_checkpoint(path)
    try:
        params = validate(with_later_keys(state["params"]), source=f"{path} (params)")
        num_classes = int(state["num_classes"])
        names = tuple(str(name) for name in state["class_names"])
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        placeholder = torch.zeros(num_classes, num_classes)  # the real affinity is a buffer of the state dict
        model_config = params.model.model_copy(update={"pretrained": None})
        model = build_segmentor(model_config, num_classes, placeholder)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise DataError(f"{path}: checkpoint does not rebuild its model ({type(err).__name__}: {err})") from None
    return RunModel(model.eval(), params, names)


def load_run_model(run_dir: str | os.PathLike) -> tuple[Segmentor, Params]:
    """The model of ``run_dir/checkpoint.pt`` and its params (``load_run`` without the class names)."""
    run = load_run(run_dir)
    return run.model, run.params
