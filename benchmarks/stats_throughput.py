"""Throughput of the statistics stage beside plain PIL decoding, on the same label files.

Decoding PNGs is the floor of ``grar stats``: this prints, for 1 process and for
``--workers`` processes, the images/s of decode-only (``Image.open(...).load()``
per file, same chunks and pool as the stage) and of the stage's counting
(``pipeline.stats.counting.count_labels``: read, hash, decode, check, histogram,
``t = P^T P``), and their ratio (target: >= 0.8 on 2 processes). Writing the
Parquet files and figures is a fixed cost per dataset, printed separately.

By default it generates ADE20K-like label maps in a temporary folder: 512 x 683,
150 classes, 20-60 warped Voronoi regions per image drawn from one of 8 scene
types, some regions 255 (ignore), like ADE20K's "other". ``--labels DIR``
measures an existing folder instead (e.g. the real ADE20K annotations).

    .venv/bin/python benchmarks/stats_throughput.py [--images 400] [--workers 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

from pipeline.stats.build import StatsJob, build_stats
from pipeline.stats.counting import IGNORE_INDEX, LabelSet, count_labels, find_labels, split_chunks

SCENES = 8


def generate(task: tuple[Path, int, int, int, int]) -> None:
    """One label map: warped Voronoi cells (computed at half resolution) labelled from a scene's classes."""
    path, seed, height, width, classes = task
    rng = np.random.default_rng(seed)
    scene = np.random.default_rng(rng.integers(SCENES)).permutation(classes)[:40]  # the scene type's classes
    cells = int(rng.integers(20, 60))
    present = rng.choice(scene, size=int(rng.integers(4, 16)), replace=False)
    values = np.append(present, IGNORE_INDEX)[rng.integers(0, len(present) + 1, size=cells)]
    h, w = height // 2 + 1, width // 2 + 1
    seeds = rng.uniform((0, 0), (h, w), size=(cells, 2)).astype(np.float32)
    jitter = zoom(rng.normal(size=(2, h // 16 + 2, w // 16 + 2)).astype(np.float32) * 9, (1, 16, 16), order=1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy + jitter[0, :h, :w], xx + jitter[1, :h, :w]
    nearest = ((y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2).argmin(-1)  # (h, w)
    label = values[nearest].astype(np.uint8).repeat(2, 0).repeat(2, 1)[:height, :width]
    Image.fromarray(label, "L").save(path)


def decode_chunk(labels: LabelSet) -> int:
    """Decode-only baseline: open and decode every file of the chunk, nothing else."""
    for name in labels.files:
        with Image.open(labels.root / name, formats=["PNG"]) as image:
            image.load()
    return len(labels.files)


def decode_only(labels: LabelSet, workers: int) -> None:
    chunks = list(split_chunks(labels, workers))
    if workers <= 1:
        list(map(decode_chunk, chunks))
        return
    with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
        list(pool.imap(decode_chunk, chunks))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers are reaped on exit)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(fns: dict[str, Callable[[], object]], images: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Best images/s of each function over ``repeats`` interleaved runs: (wall clock, CPU time)."""
    best = {name: (0.0, 0.0) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            fn()
            rates = images / (time.perf_counter() - wall), images / (cpu_seconds() - cpu)
            best[name] = (max(best[name][0], rates[0]), max(best[name][1], rates[1]))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, help="existing label folder (default: generate one)")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=683)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grar-bench-") as tmp:
        folder = args.labels
        if folder is None:
            folder = Path(tmp) / "labels"
            folder.mkdir()
            tasks = [(folder / f"{n:05d}.png", args.seed * 1_000_003 + n, args.height, args.width, args.num_classes)
                     for n in range(args.images)]
            start = time.perf_counter()
            with multiprocessing.get_context().Pool(args.workers) as pool:
                pool.map(generate, tasks, chunksize=8)
            seconds = time.perf_counter() - start
            print(f"generated {args.images} label maps {args.height}x{args.width} in {seconds:.1f} s")
        labels = find_labels(folder, args.num_classes)
        n = len(labels.files)
        sizes = [(folder / name).stat().st_size for name in labels.files]
        print(f"{n} files in {folder}, mean {np.mean(sizes) / 1e3:.1f} kB; "
              f"best of {args.repeats} runs (page cache warm)")
        decode_only(labels, 1)  # warm the page cache
        print("images/s, best of interleaved runs; wall clock, and per CPU-second (robust to other load)")
        print(f"{'processes':>9}  {'decode-only':>11}  {'stage':>7}  {'ratio':>5}    "
              f"{'decode-only/cpu-s':>17}  {'stage/cpu-s':>11}  {'ratio':>5}")
        for workers in sorted({1, args.workers}):
            best = measure({
                "decode": lambda: decode_only(labels, workers),
                "stage": lambda: count_labels(labels, workers),
            }, n, args.repeats)
            (base_wall, base_cpu), (stage_wall, stage_cpu) = best["decode"], best["stage"]
            print(f"{workers:>9}  {base_wall:>11.1f}  {stage_wall:>7.1f}  {stage_wall / base_wall:>5.2f}    "
                  f"{base_cpu:>17.1f}  {stage_cpu:>11.1f}  {stage_cpu / base_cpu:>5.2f}")
        job = StatsJob(labels=folder, out=Path(tmp) / "stats", num_classes=args.num_classes, workers=args.workers)
        start = time.perf_counter()
        build_stats(job)
        total = time.perf_counter() - start
        print(f"whole `grar stats` run ({args.workers} processes, with Parquet files and figures for "
              f"{args.num_classes} classes): {total:.1f} s")


if __name__ == "__main__":
    main()
