"""Seconds per image of `grar predict` (single scale, and MS + flip) for the embedded and the ResNet-101 model.

    python benchmarks/predict_throughput.py [--images 4] [--size 512] [--threads 2] [--ms]

Builds, in a temporary folder, a folder dataset of random ``size`` x ``size``
images, a run of each model whose checkpoint holds its initial weights (the
cost of inference does not depend on the values), and times
``pipeline.training.predict.predict_images`` over the images after one warm-up image.
Prints one line per model: seconds per image, images per second. Figures are
absolute CPU times of this machine: compare them in one run, not across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_params, with_overrides  # noqa: E402
from pipeline.datasets.prepare import prepare_dataset  # noqa: E402
from pipeline.stats.compute import StatsJob, build_stats  # noqa: E402
from pipeline.training.build import TrainingStep, build_criterion  # noqa: E402
from pipeline.training.checkpoint import save_checkpoint  # noqa: E402
from pipeline.training.distributed import Ranks  # noqa: E402
from pipeline.training.inputs import build_model  # noqa: E402
from pipeline.training.predict import PredictOptions, predict_images  # noqa: E402

MODELS = {
    "embedded (tiny_resnet + GRAr, width 64)": {"model.backbone": "tiny_resnet", "model.width": 64},
    "ResNet-101 + GRAr (width 512)": {"model.backbone": "resnet101", "model.width": 512},
}
CLASSES = 24


def folder_dataset(root: Path, count: int, size: int) -> Path:
    """``count`` random images per split with random labels of ``CLASSES`` classes, split-folder layout."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(
                root / split / "images" / f"{split}{i}.jpg"
            )
            blocks = rng.integers(0, CLASSES, (size // 64 + 1, size // 64 + 1), np.uint8)
            label = np.kron(blocks, np.ones((64, 64), np.uint8))[:size, :size]
            Image.fromarray(label, mode="L").save(root / split / "labels" / f"{split}{i}.png")
    (root / "classes.csv").write_text("id,name\n" + "".join(f"{k},class{k}\n" for k in range(CLASSES)))
    return root


def make_run(params, run_dir: Path) -> None:
    """A run folder whose checkpoint holds the model's initial weights."""
    model = build_model(params, CLASSES)
    criterion = build_criterion(params.train.loss, CLASSES, model.head.feature_channels)
    step = TrainingStep(model, criterion)
    optimizer = torch.optim.SGD(step.parameters(), lr=0.01)
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir / "checkpoint.pt", step, optimizer, 0, params, Ranks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ms", action="store_true", help="also time multi-scale + flip (the run's eval settings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = folder_dataset(root / "source", args.images + 1, args.size)
        base = with_overrides(
            load_params(REPO / "profiles" / "embedded.yaml"),
            {
                "data.root": str(root / "data"),
                "stats.root": str(root / "stats"),
                "data.workers": 1,
                "stats.workers": 1,
                "data.folders.bench": str(source),
                "train.dataset": "bench",
                "train.schedules.bench": {"lr": 0.01, "iterations": 1},
                "train.device": "cpu",
            },
        )
        prepare_dataset(base, "bench")
        build_stats(StatsJob.for_dataset(base, "bench"))
        images = sorted((root / "data" / "bench" / "val" / "images").iterdir())
        print(
            f"{args.images} images of {args.size} x {args.size}, {args.threads} threads, CPU, torch {torch.__version__}"
        )
        for name, overrides in MODELS.items():
            params = with_overrides(base, overrides)
            run_dir = root / "runs" / name.split()[0]
            make_run(params, run_dir)
            modes = [("single scale", False)] + ([("MS + flip", True)] if args.ms else [])
            for mode, ms in modes:
                predict_images(run_dir, images[:1], root / "warm", PredictOptions(multi_scale=ms), progress=False)
                start = time.perf_counter()
                predict_images(
                    run_dir, images[1:], root / f"out-{mode}", PredictOptions(multi_scale=ms), progress=False
                )
                seconds = (time.perf_counter() - start) / args.images
                print(f"{name:42s} {mode:13s} {seconds:8.3f} s/image  {1 / seconds:7.2f} images/s")
                for path in (root / "warm").iterdir():
                    path.unlink()


if __name__ == "__main__":
    main()
