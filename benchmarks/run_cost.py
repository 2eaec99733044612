"""Per-run cost of the embedded profile, before and after, side by side in one invocation.

"Before" is the code at a git ref (``--before``, default ``f818e77``, the commit
the per-run cost work started from), extracted with ``git archive`` into a
temporary folder; "after" is this working tree. Each side trains and
evaluates real runs (``pipeline.training.run.run_cell``, the profile's iterations and
batches, seeds 0, 1, ...) through ``benchmarks/run_cost_worker.py`` with that
side's own ``params.yaml`` and code, and the way that side's local executor
would: one run after another, or ``executor.parallel`` runs side by side
(after: 2 single-thread runs). The two sides alternate (before, after, before,
...) so that a loaded machine weighs on both alike.

Printed: per phase (data, forward, loss, backward, optimizer, the rest of the
training loop, evaluation single scale, evaluation multi-scale + flip, the
rest of the evaluation, fixed per-run cost), seconds per run for each side
and after / before; then the wall time per run (from the first start to the
last end of ``run_cell`` in each group of runs side by side, over its runs:
what the train stage pays per run; process start and imports, which it pays
once per process, apart), the process start + imports, and the single-scale and MS mIoU of every seed on each side. With
runs side by side the phase seconds are each run's own (two runs share the
CPU, so they add up to more than the wall time per run).

Needs the prepared embedded dataset and its statistics (``dvc repro``, or
``grar prepare embedded && grar stats embedded``) under ``data.root`` and
``stats.root`` of this tree's ``params.yaml``; works on a fresh clone with its
history (``--before`` names any commit, tag or branch).

    .venv/bin/python benchmarks/run_cost.py [--before REF] [--iterations N] [--runs 2] [--repeats 1]
        [--set KEY=VALUE ...] [--after-set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("run_cost_worker.py")
PHASES = {
    "data": "data (batches)",
    "forward": "forward",
    "loss": "loss",
    "backward": "backward",
    "optimizer": "optimizer",
    "trainer": "rest of the training loop",
    "eval_single": "evaluation, single scale",
    "eval_ms": "evaluation, MS + flip",
    "eval_other": "rest of the evaluation",
    "fixed": "fixed (build, files)",
}
DEFAULT_BEFORE = "f818e77"


def extract(ref: str, into: Path) -> Path:
    """The tree of git ``ref`` of this repository, written into ``into`` (``git archive``)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True)
    tar_path = into.with_suffix(".tar")
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into


def side_parallel(tree: Path) -> int:
    """How many runs that tree's local executor trains side by side (``executor.parallel``, 1 before it existed)."""
    params = yaml.safe_load((tree / "params.yaml").read_text())
    return int(params.get("executor", {}).get("parallel", 1))


def batch(
    tree: Path, seeds: list[int], parallel: int, args: argparse.Namespace, data: str, stats: str, after: bool
) -> tuple[float, list[dict]]:
    """Train and evaluate one run per seed with ``tree``'s code, ``parallel`` at a time: (wall s, results).

    The wall time runs from the first ``run_cell`` start to the last end of each group of side-by-side runs:
    process start and imports are left out (the train stage pays them once per process, not per run).
    """

    def command(seed: int) -> list[str]:
        sets = [f"seed={seed}", *args.set, *(args.after_set if after else [])]
        extra = [f"--iterations={args.iterations}"] if args.iterations else []
        return [
            sys.executable,
            str(WORKER),
            "--params",
            str(tree / "params.yaml"),
            "--data",
            data,
            "--stats",
            stats,
            *extra,
            *(item for s in sets for item in ("--set", s)),
        ]

    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    results: list[dict] = []
    wall = 0.0
    for first in range(0, len(seeds), parallel):
        group = seeds[first : first + parallel]
        processes = [
            subprocess.Popen(
                command(seed), cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for seed in group
        ]
        for seed, process in zip(group, processes):
            out, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"run_cost: the {tree.name} run of seed {seed} failed:\n{err[-3000:]}")
            results.append({"seed": seed, **json.loads(out.strip().splitlines()[-1])})
        runs = results[-len(group) :]
        wall += max(run["ended"] for run in runs) - min(run["began"] for run in runs)
    return wall, results


def mean_phase(results: list[list[dict]], key: str) -> float:
    return statistics.mean(run["phases"][key] for repeat in results for run in repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--before", default=DEFAULT_BEFORE, help=f"git ref of the 'before' code (default {DEFAULT_BEFORE})"
    )
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default: the profile's)")
    parser.add_argument("--runs", type=int, default=2, help="runs (seeds 0..runs-1) per side and repeat")
    parser.add_argument("--repeats", type=int, default=1, help="before/after alternations")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for both sides' runs, e.g. model.head=fcn (JSON values)",
    )
    parser.add_argument(
        "--after-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for the after side only, e.g. train.loss.resolution=feature",
    )
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = str((ROOT / params["data"]["root"]).resolve())
    stats = str((ROOT / params["stats"]["root"]).resolve())
    if not (Path(data) / "embedded").is_dir() or not (Path(stats) / "embedded").is_dir():
        raise SystemExit(
            f"run_cost: {data}/embedded or {stats}/embedded missing: "
            "run `grar prepare embedded && grar stats embedded` first"
        )
    seeds = list(range(args.runs))
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"before": extract(args.before, Path(tmp) / "before"), "after": ROOT}
        parallel = {name: side_parallel(tree) for name, tree in sides.items()}
        walls: dict[str, list[float]] = {name: [] for name in sides}
        results: dict[str, list[list[dict]]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, tree in sides.items():
                wall, runs = batch(tree, seeds, parallel[name], args, data, stats, after=name == "after")
                walls[name].append(wall / len(seeds))
                results[name].append(runs)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    threads = {name: results[name][0][0]["threads"] for name in sides}
    iterations = args.iterations or "the profile's"
    sets = ", ".join([*args.set, *(f"{item} (after)" for item in args.after_set)])
    print(
        f"per-run cost, embedded profile{' with ' + sets if sets else ''}: "
        f"{iterations} iterations, {len(seeds)} runs x {args.repeats} repeat(s) per side; "
        f"before = {args.before} ({threads['before']} thread(s), {parallel['before']} run(s) at a time), "
        f"after = this tree ({threads['after']} thread(s), {parallel['after']} run(s) at a time); "
        f"load average at the end {' '.join(load)}"
    )
    print(f"  {'phase (s per run)':34s} {'before':>8s} {'after':>8s} {'after/before':>13s}")
    for key, label in PHASES.items():
        before, after = mean_phase(results["before"], key), mean_phase(results["after"], key)
        print(f"  {label:34s} {before:8.2f} {after:8.2f} {after / before if before > 0 else float('nan'):13.2f}")
    before, after = mean_phase(results["before"], "run"), mean_phase(results["after"], "run")
    print(f"  {'run_cell, each run':34s} {before:8.2f} {after:8.2f} {after / before:13.2f}")
    before, after = statistics.mean(walls["before"]), statistics.mean(walls["after"])
    print(f"  {'wall time per run (group / runs)':34s} {before:8.2f} {after:8.2f} {after / before:13.2f}")
    before, after = mean_phase(results["before"], "imports"), mean_phase(results["after"], "imports")
    print(f"  {'imports, once per process':34s} {before:8.2f} {after:8.2f} {after / before:13.2f}")
    print("  mIoU / MS mIoU by seed (first repeat):")
    for index, seed in enumerate(seeds):
        b, a = results["before"][0][index], results["after"][0][index]
        print(
            f"    seed {seed}: before {100 * b['miou']:.2f} / {100 * (b['ms_miou'] or 0):.2f}   "
            f"after {100 * a['miou']:.2f} / {100 * (a['ms_miou'] or 0):.2f}"
        )


if __name__ == "__main__":
    main()
