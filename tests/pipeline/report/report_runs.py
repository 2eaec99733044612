"""Fabricated run folders and grid indexes, exactly as the run-folder contract lays them out (pipeline.cluster.grids).

``Runs(root)`` writes ``<root>/<cell>-s<seed>-<hash10>/`` folders (metrics.json,
train_log.csv, confusion.npy, error.txt) and ``<root>/grids/<grid>.json``
indexes, so report tests need no trainer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.scores.per_image import ImageConfusions, write_image_confusions

REPO = Path(__file__).resolve().parents[3]
NAMES = ("wall", "floor", "sky", "tree", "car")  # five classes: confusion matrices stay readable by hand
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run_name(cell: str, seed: int, dataset: str = "embedded") -> str:
    digest = hashlib.sha256(f"{cell}/{seed}/{dataset}".encode()).hexdigest()
    return f"{cell}-s{seed}-{digest[:10]}"


class Runs:
    """Writes run folders under ``root`` (paths in the index relative to the working folder, as the grid writes)."""

    def __init__(self, root: Path, names: tuple[str, ...] = NAMES) -> None:
        self.root = root
        self.names = names
        self.indexes: dict[str, list[dict]] = {}

    def folder(self, cell: str, seed: int, dataset: str = "embedded") -> Path:
        path = self.root / run_name(cell, seed, dataset)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(
        self,
        grid: str,
        cell: str,
        seed: int,
        miou: float,
        ms: float | None = None,
        *,
        dataset: str = "embedded",
        profile: str = "embedded",
        backbone: str = "tiny_resnet",
        head: str = "grar",
        iterations: int = 7,
        confusion: bool = True,
        matrix: np.ndarray | None = None,
        danet: str | None = None,
        images: list[np.ndarray] | None = None,
    ) -> Path:
        """A finished run: metrics.json (fractions), train_log.csv, confusion.npy (and confusion_ms.npy with ms).

        ``matrix``: the confusion matrix to write (default: a fixed readable one). ``images``: per-image
        (K, K) matrices, written as confusion_images.npz (and _ms with ``ms``); ``matrix`` is then their sum.
        """
        path = self.folder(cell, seed, dataset)
        k = len(self.names)
        scores = {
            "miou": miou,
            "pixel_accuracy": min(1.0, miou + 0.1),
            "mean_accuracy": miou,
            "per_class_iou": {name: (miou if c else None) for c, name in enumerate(self.names)},
        }
        metrics = {
            **scores,
            "ms": None if ms is None else {**scores, "miou": ms},
            "iterations": iterations,
            "train_seconds": 12.5,
            "eval_seconds": 1.5,
            "provenance": {
                "profile": profile,
                "dataset": dataset,
                "backbone": backbone,
                "head": head,
                "seed": seed,
                "commit": COMMIT,
                "config_hash": run_name(cell, seed, dataset)[-10:] * 6,
                "run_dir": str(path),
                "device": "cpu",
                "torch": "2.14.1",
            }
            | ({"danet": danet} if danet is not None else {}),
        }
        rows = ["iteration,lr,loss,ce,aux,coarse,sr,seconds"]
        rows += [
            f"{i},{0.01 * (1 - i / iterations) ** 0.9:.6f},{2.0 / i:.4f},{1.5 / i:.4f},{0.3 / i:.4f},"
            f"{0.2 / i:.4f},0.0,{0.1 * i:.2f}"
            for i in range(1, iterations + 1)
        ]
        (path / "train_log.csv").write_text("\n".join(rows) + "\n")
        if images is not None:
            blocks = []
            for index, image in enumerate(images):
                gt, pred = np.nonzero(image)
                blocks.append(np.stack([np.full(gt.shape, index), gt, pred, image[gt, pred]], axis=1))
            per_image = ImageConfusions.from_entries(blocks, k, len(images))
            for suffix in ("", "_ms") if ms is not None else ("",):
                write_image_confusions(path / f"confusion_images{suffix}.npz", per_image)
            matrix = per_image.dense_total()
        if confusion:
            if matrix is None:
                matrix = np.arange(k * k, dtype=np.int64).reshape(k, k) + 10 * np.eye(k, dtype=np.int64)  # (K, K)
            np.save(path / "confusion.npy", matrix)
            if ms is not None:
                np.save(path / "confusion_ms.npy", matrix)
        (path / "metrics.json").write_text(json.dumps(metrics))
        self._index(grid, cell, seed, path, "done", metrics)
        return path

    def failed(
        self,
        grid: str,
        cell: str,
        seed: int,
        error: str = "Traceback: RuntimeError: boom\n",
        log: str | None = "job log line\n",
    ) -> Path:
        """A failed run: error.txt in the run folder, and the job's log beside the runs."""
        path = self.folder(cell, seed)
        (path / "error.txt").write_text(error)
        log_path = None
        if log is not None:
            log_path = self.root / "logs" / f"{run_name(cell, seed)}.out"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log)
        self._index(grid, cell, seed, path, "failed", None, log_path)
        return path

    def record(self, grid: str, cell: str, seed: int, run_dir: Path, metrics: dict) -> None:
        """A run trained for real (``pipeline.training.run.run_cell``) into ``run_dir``."""
        self._index(grid, cell, seed, run_dir, "done", metrics)

    def state(self, grid: str, cell: str, seed: int, state: str) -> None:
        """A pending or running run (no files yet)."""
        self._index(grid, cell, seed, self.root / run_name(cell, seed), state, None)

    def _index(
        self, grid: str, cell: str, seed: int, path: Path, state: str, metrics: dict | None, log: Path | None = None
    ) -> None:
        entries = [e for e in self.indexes.setdefault(grid, []) if (e["cell"], e["seed"]) != (cell, seed)]
        entries.append(
            {
                "cell": cell,
                "seed": seed,
                "config_hash": path.name[-10:] * 6,
                "run_dir": str(path),
                "state": state,
                "job_id": "4242_1",
                "log": None if log is None else str(log),
                "metrics": metrics,
            }
        )
        self.indexes[grid] = entries
        index = self.root / "grids" / f"{grid}.json"
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({"grid": grid, "cells": entries}, indent=1))


def bench_report() -> dict:
    """A module-benchmark JSON with the keys the report reads (pipeline.bench.modules.benchmark_modules)."""
    modules = [
        {
            "name": name,
            "params": params,
            "params_total": params + 1000,
            "flops": flops,
            "peak_memory_bytes": memory,
            "latency_ms_median": latency,
            "latency_ms": [latency],
            "paper": None,
        }
        for name, params, flops, memory, latency in (
            ("fcn", 9438208, 87_345_000_000, 85098496, 403.9),
            ("grar", 2360000, 21_834_000_000, 51590348, 60.04),
        )
    ]
    return {
        "device": "cpu",
        "device_name": "x86_64",
        "threads": 2,
        "torch": "2.14.1",
        "dtype": "float32",
        "compile": False,
        "input": [1, 2048, 68, 68],
        "head_width": 512,
        "num_classes": 59,
        "warmup": 1,
        "repeats": 3,
        "params_method": "module without classifiers",
        "memory_method": "profiler peak",
        "flops_method": "FlopCounterMode",
        "latency_method": "median",
        "modules": modules,
    }


def write_dataset(root: Path, names: tuple[str, ...] = NAMES, images: int = 3, size: tuple[int, int] = (5, 7)) -> Path:
    """A prepared dataset (layout of pipeline.datasets) with tiny (H, W) = ``size`` train and val images, labels."""
    from PIL import Image

    (root / "classes.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.csv").write_text("id,name\n" + "".join(f"{c},{name}\n" for c, name in enumerate(names)))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for n in range(images):
            label = rng.integers(0, len(names), size).astype(np.uint8)  # (H, W)
            label[0, 0] = 255
            Image.fromarray(label, mode="L").save(root / split / "labels" / f"{split}_{n:03d}.png")
            Image.fromarray(rng.integers(0, 256, (*size, 3)).astype(np.uint8)).save(
                root / split / "images" / f"{split}_{n:03d}.png"
            )
    return root
