"""Throughput of `grar prepare` (the ADE20K converter) on 1 process and on ``--workers`` processes.

Generates ``--images`` ADE20K-sized samples (683 x 512 JPEG, 8-bit label PNG
with 151 values in blocks) in the archive's layout in a temporary folder, then
converts them with ``pipeline.datasets.ade20k.convert`` (decode and check the
image, decode and map the label, copy the JPEG, write the label PNG) and prints
images/s per process count, side by side with the decode-only floor (PIL
``load()`` of the same image and label), and the speed-up.

    .venv/bin/python benchmarks/prepare_throughput.py [--images 200] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets import ade20k
from pipeline.datasets.common import run_tasks

HEIGHT, WIDTH = 512, 683


def make_source(root: Path, images: int, seed: int = 0) -> Path:
    """An ``ADEChallengeData2016`` tree with ``images`` samples in each split, plus its class table."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    table = "Idx\tRatio\tTrain\tVal\tName\n" + "".join(f"{k}\t0\t0\t0\t{n}\n" for k, n in enumerate(ade20k.NAMES, 1))
    base.mkdir(parents=True)
    (base / "objectInfo150.txt").write_text(table)
    for folder in ade20k.SPLIT_FOLDERS.values():
        (base / "images" / folder).mkdir(parents=True)
        (base / "annotations" / folder).mkdir(parents=True)
        for i in range(images):
            blocks = rng.integers(0, 151, (HEIGHT // 32 + 1, WIDTH // 32 + 1), dtype=np.uint8)
            label = np.kron(blocks, np.ones((32, 32), dtype=np.uint8))[:HEIGHT, :WIDTH]  # (H, W)
            noise = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(noise).resize((WIDTH, HEIGHT), Image.BILINEAR)
            image.save(base / "images" / folder / f"ADE_{folder}_{i:08d}.jpg", quality=90)
            Image.fromarray(label).save(base / "annotations" / folder / f"ADE_{folder}_{i:08d}.png")
    return root


def decode_only(pair: tuple[Path, Path]) -> None:
    for path in pair:
        with Image.open(path) as image:
            image.load()


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="samples per split (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="processes to compare with 1 (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = make_source(Path(tmp) / "src", args.images)
        base = source / "ADEChallengeData2016"
        pairs = [
            (base / "images" / f / f"ADE_{f}_{i:08d}.jpg", base / "annotations" / f / f"ADE_{f}_{i:08d}.png")
            for f in ade20k.SPLIT_FOLDERS.values()
            for i in range(args.images)
        ]
        total = len(pairs)
        print(f"{total} samples of {WIDTH}x{HEIGHT} (JPEG + label PNG); best of {args.repeats}")
        print(f"{'processes':>9}  {'decode-only img/s':>17}  {'prepare img/s':>13}  {'prepare/decode':>14}")
        rates = {}
        for workers in (1, args.workers):
            out = Path(tmp) / "out"

            def convert(out: Path = out, workers: int = workers) -> None:
                shutil.rmtree(out, ignore_errors=True)
                ade20k.convert(source, out, workers)

            decode = total / timed(functools.partial(run_tasks, decode_only, pairs, workers, "decode"), args.repeats)
            rates[workers] = total / timed(convert, args.repeats)
            print(f"{workers:>9}  {decode:>17.1f}  {rates[workers]:>13.1f}  {rates[workers] / decode:>14.2f}")
        print(f"speed-up of prepare on {args.workers} processes: {rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
