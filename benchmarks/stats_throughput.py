"""`grar stats` before and after a change, side by side: counting beside plain PIL decoding, and the fixed cost.

Decoding PNGs is the floor of ``grar stats``. For 1 process and for
``--workers`` processes this prints the images/s of decode-only
(``Image.open(...).load()`` per file, in the stage's chunks and pool) and of
the stage's counting (``pipeline.stats.counting.count_labels``: read, hash,
decode, check, histogram, ``t = P^T P``) for the code at ``--before REF``
(default ``f818e77``, before the statistics speed-ups) and for this working
tree, each with its ratio to decode-only (target: >= 0.8). Then the fixed cost
of a run, the whole ``build_stats`` (Parquet files and figures) minus its
counting, at 150 and 171 classes (target: <= 5 s).

The two versions run in two long-lived child processes (``PYTHONPATH`` = a
``git archive`` of REF, and this tree), so both count the same files with the
same process counts, and the measurements alternate between them (before,
after, then after, before, ...) so that load on the machine hits both alike.
Images/s are the best of ``--repeats`` runs, by wall clock and per CPU second
(the process and its pool workers; robust to other load).

By default it generates ADE20K-like label maps in a temporary folder: 512 x 683,
150 classes, 20-60 warped Voronoi regions per image drawn from one of 8 scene
types, some regions 255 (ignore), like ADE20K's "other". ``--labels DIR``
measures an existing folder instead (e.g. the real ADE20K annotations). The
fixed cost uses ``--images`` smaller maps (128 x 171) per class count.

    .venv/bin/python benchmarks/stats_throughput.py [--before f818e77] [--images 400] [--workers 2] [--repeats 5]
        [--fixed-repeats 1]

Needs git (a clone holding REF); ``--before ''`` measures this tree only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import zoom

REPO = Path(__file__).resolve().parent.parent
SCENES = 8
IGNORE = 255
FIGURE_CLASSES = (150, 171)


def generate(task: tuple[Path, int, int, int, int]) -> None:
    """One label map: warped Voronoi cells (computed at half resolution) labelled from a scene's classes."""
    path, seed, height, width, classes = task
    rng = np.random.default_rng(seed)
    scene = np.random.default_rng(rng.integers(SCENES)).permutation(classes)[:40]  # the scene type's classes
    cells = int(rng.integers(20, 60))
    present = rng.choice(scene, size=int(rng.integers(4, 16)), replace=False)
    values = np.append(present, IGNORE)[rng.integers(0, len(present) + 1, size=cells)]
    h, w = height // 2 + 1, width // 2 + 1
    seeds = rng.uniform((0, 0), (h, w), size=(cells, 2)).astype(np.float32)
    jitter = zoom(rng.normal(size=(2, h // 16 + 2, w // 16 + 2)).astype(np.float32) * 9, (1, 16, 16), order=1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy + jitter[0, :h, :w], xx + jitter[1, :h, :w]
    nearest = ((y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2).argmin(-1)  # (h, w)
    label = values[nearest].astype(np.uint8).repeat(2, 0).repeat(2, 1)[:height, :width]
    Image.fromarray(label, "L").save(path)


def make_labels(folder: Path, images: int, height: int, width: int, classes: int, seed: int, workers: int) -> None:
    """``images`` generated label maps in ``folder``, plus ``folder.csv``, a class table of longish names."""
    folder.mkdir(parents=True)
    tasks = [(folder / f"{n:05d}.png", seed * 1_000_003 + n, height, width, classes) for n in range(images)]
    with multiprocessing.get_context().Pool(workers) as pool:
        pool.map(generate, tasks, chunksize=8)
    names = "".join(f"{k},scene thing {k:03d} / stuff\n" for k in range(classes))
    folder.with_suffix(".csv").write_text("id,name\n" + names, encoding="utf-8")


# ---- the child: runs with PYTHONPATH = one version of the code, answers one JSON line per command ----


def decode_chunk(labels: object) -> int:
    """Decode-only baseline: open and decode every file of the chunk, nothing else."""
    for name in labels.files:
        with Image.open(labels.root / name, formats=["PNG"]) as image:
            image.load()
    return len(labels.files)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers are reaped on exit)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def serve() -> None:
    """Answer commands from stdin: ``decode W DIR K``, ``stage W DIR K``, ``fixed DIR K OUT``, ``where``."""
    import pipeline
    from pipeline.stats.compute import StatsJob, build_stats
    from pipeline.stats.counting import count_labels, find_labels, split_chunks

    for line in sys.stdin:
        command, *args = line.rstrip("\n").split("\t")
        args = [arg.strip() for arg in args]
        if command == "where":
            answer: dict[str, object] = {"pipeline": str(Path(pipeline.__file__).resolve().parent)}
        elif command in ("decode", "stage"):
            workers, labels = int(args[0]), find_labels(Path(args[1]), int(args[2]))
            wall, cpu = time.perf_counter(), cpu_seconds()
            if command == "stage":
                count_labels(labels, workers)
            elif workers <= 1:
                list(map(decode_chunk, split_chunks(labels, workers)))
            else:
                chunks = list(split_chunks(labels, workers))
                with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
                    list(pool.imap(decode_chunk, chunks))
            n = len(labels.files)
            answer = {"wall": n / (time.perf_counter() - wall), "cpu": n / (cpu_seconds() - cpu)}
        elif command == "fixed":
            folder, k, out = Path(args[0]), int(args[1]), Path(args[2])
            start = time.perf_counter()
            count_labels(find_labels(folder, k), 1)
            counting = time.perf_counter() - start
            start = time.perf_counter()
            build_stats(StatsJob(labels=folder, out=out, classes=folder.with_suffix(".csv"), workers=1))
            answer = {"seconds": time.perf_counter() - start - counting, "counting": counting}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


class Child:
    """A ``serve`` process running the code under ``tree``."""

    def __init__(self, tree: Path) -> None:
        environment = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=tree,
        )
        where = Path(self.ask("where")["pipeline"])
        if where != (tree / "pipeline").resolve():
            raise SystemExit(f"the child for {tree} imported pipeline from {where}")

    def ask(self, *words: object) -> dict:
        self.process.stdin.write("\t".join(map(str, words)) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline() or '{"error": "child died"}')
        if "error" in answer:
            raise SystemExit(f"benchmark child: {answer['error']}")
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def archive(ref: str, target: Path) -> Path:
    """The tree of commit ``ref`` of this repository, extracted into ``target``."""
    target.mkdir()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=False)
    if tar.returncode:
        raise SystemExit(f"git archive {ref}: {tar.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=tar.stdout, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--before",
        default="f818e77",
        metavar="REF",
        help="git commit to compare with (default f818e77; '' for this tree only)",
    )
    parser.add_argument("--labels", type=Path, help="existing label folder (default: generate one)")
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=683)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fixed-repeats",
        type=int,
        default=1,
        help="runs of the fixed cost per version and class count (default 1: before takes ~20 s each)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    with tempfile.TemporaryDirectory(prefix="grar-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        folder = args.labels
        if folder is None:
            folder = root / "labels"
            make_labels(folder, args.images, args.height, args.width, args.num_classes, args.seed, args.workers)
        small = {k: root / f"small{k}" for k in FIGURE_CLASSES}
        for k, path in small.items():
            make_labels(path, args.images, 128, 171, k, args.seed + k, args.workers)
        print(f"generated label maps in {time.perf_counter() - start:.1f} s")
        trees = {"after": REPO}
        if args.before:
            trees = {"before": archive(args.before, root / "before"), **trees}
        children = {name: Child(tree) for name, tree in trees.items()}
        n = len([p for p in folder.iterdir() if p.suffix.lower() == ".png"])
        sizes = [p.stat().st_size for p in folder.iterdir() if p.suffix.lower() == ".png"]
        print(
            f"{n} files in {folder}, mean {np.mean(sizes) / 1e3:.1f} kB; versions: "
            + ", ".join(
                f"{name} = {args.before or 'this tree'}" if name == "before" else f"{name} = this tree"
                for name in trees
            )
        )
        children["after"].ask("decode", 1, folder, args.num_classes)  # warm the page cache
        process_counts = sorted({1, args.workers})
        best: dict[tuple[str, int], dict[str, float]] = {}
        fixed: dict[tuple[str, int], float] = {}
        for repeat in range(args.repeats):
            order = list(children) if repeat % 2 == 0 else list(reversed(children))
            for workers in process_counts:
                runs = [("decode", children["after"], "decode")] + [(name, children[name], "stage") for name in order]
                for name, child, command in runs:
                    rates = child.ask(command, workers, folder, args.num_classes)
                    old = best.get((name, workers), {"wall": 0.0, "cpu": 0.0})
                    best[name, workers] = {key: max(old[key], rates[key]) for key in ("wall", "cpu")}
        for repeat in range(args.fixed_repeats):
            order = list(children) if repeat % 2 == 0 else list(reversed(children))
            for k in FIGURE_CLASSES:
                for name in order:
                    seconds = children[name].ask("fixed", small[k], k, root / f"out-{name}-{k}-{repeat}")["seconds"]
                    fixed[name, k] = min(fixed.get((name, k), float("inf")), seconds)
        for child in children.values():
            child.close()
    print(
        f"\ncounting: images/s, best of {args.repeats} alternating runs (page cache warm); "
        "ratio = stage / decode-only (target >= 0.8)"
    )
    header = f"{'':>9}  {'decode-only':>11}" + "".join(f"  {name + ' stage':>13}  {'ratio':>5}" for name in trees)
    for measure, label in (("wall", "wall clock"), ("cpu", "per CPU-second")):
        print(f"{label}:\n{'processes':>9}{header[9:]}")
        for workers in process_counts:
            base = best["decode", workers][measure]
            cells = "".join(
                f"  {best[name, workers][measure]:>13.1f}  {best[name, workers][measure] / base:>5.2f}"
                for name in trees
            )
            print(f"{workers:>9}  {base:>11.1f}{cells}")
    print(
        f"\nfixed cost of a run (build_stats minus its counting: Parquet files and figures), best of "
        f"{args.fixed_repeats}, seconds (target <= 5 s at 171 classes)"
    )
    print(f"{'classes':>9}" + "".join(f"  {name:>8}" for name in trees) + ("  speed-up" if "before" in trees else ""))
    for k in FIGURE_CLASSES:
        cells = "".join(f"  {fixed[name, k]:>8.2f}" for name in trees)
        ratio = f"  {fixed['before', k] / fixed['after', k]:>7.1f}x" if "before" in trees else ""
        print(f"{k:>9}{cells}{ratio}")


if __name__ == "__main__":
    main()
