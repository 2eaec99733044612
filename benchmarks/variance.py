"""Where the spread of the embedded profile's results comes from: seeds (initialisation vs data order), the
evaluation split, the schedule and the model's width, and how wide the report's intervals against FCN are.

Trains real runs (``pipeline.training.run.run_cell``, through the local executor,
``--parallel`` side by side) of the named grid cells into a cache folder
(``--work``; a run is its config hash, so a rerun trains only what is missing;
run it in a project after ``make repro`` and the main job's runs are linked in,
not trained again),
for every protocol variant (``--variant NAME:KEY=VALUE,KEY=VALUE``; ``base`` is
params.yaml as it is), then prints per variant and cell:

- ``mean``, ``sd seeds``: the cell's mIoU (single scale, percent) over the seeds;
- ``sd images``: how much the same trained weights' mIoU moves on another val
  set of the same size (paired image bootstrap of each run, root mean square
  over the seeds): the evaluation split's share;
- ``sd training``: sqrt(sd seeds^2 - sd images^2): what training adds;
- against the grid's FCN, per seed paired: ``diff`` (mean difference), ``sd diff``
  (over seeds), ``half-width``: half the width of the report's 95 % interval
  (``pipeline.scores.bootstrap.paired_difference``: seeds and images resampled);
- the variant's training cost: CPU seconds per run (``train_seconds`` of the
  runs' metrics, one thread each).

``--decouple CELL`` also trains CELL with initialisation seeds x data-order seeds
(``--init``, ``--data``: the model's initialisation and dropout from one, the
batches' order and flips from the other) and splits its seed variance into the
two (two-way analysis of variance without replication: each factor's mean square
less the residual's, over the other factor's count).

    .venv/bin/python benchmarks/variance.py --cells fcn,grar,grar-sr,posneg-conv --seeds 4 \\
        --variant base: --variant 600it:train.schedules.embedded.iterations=600 --decouple grar
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cluster.grids import HASH_CHARS, Run  # noqa: E402
from pipeline.cluster.reuse import adopt, finished_in  # noqa: E402
from pipeline.cluster.submit import CellJob, run_locally  # noqa: E402
from pipeline.config import Params, load_params, with_overrides  # noqa: E402
from pipeline.rundir import config_hash, finished_metrics  # noqa: E402
from pipeline.scores.bootstrap import class_sums, miou_of_sums, paired_difference  # noqa: E402
from pipeline.scores.per_image import read_image_confusions  # noqa: E402

REPLICATES = 1000


def parse_value(text: str):
    """A ``--set``-style value: JSON where it parses (numbers, lists, null, booleans), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    return name, overrides


def cell_overrides(params: Params, cell: str) -> dict:
    """The effective overrides of the first grid cell named ``cell``."""
    for grid in params.grid.grids:
        cells = params.grid.cells(grid)
        if cell in cells:
            return cells[cell]
    raise SystemExit(
        f"no grid cell named {cell!r}; cells: {sorted({c for g in params.grid.grids for c in params.grid.cells(g)})}"
    )


def prepared(params: Params, work: Path) -> Params:
    """``params`` with their dataset prepared and counted: the project's own (``data.root``, ``stats.root``, as
    ``dvc repro`` leaves them) when there, else under ``work`` (one folder per data definition)."""
    from pipeline.datasets.prepare import prepare_dataset
    from pipeline.stats.compute import build_dataset_stats

    name = params.train.dataset
    if (Path(params.data.root) / name / ".grar-dataset").is_file() and (Path(params.stats.root) / name).is_dir():
        return params
    key = hashlib.sha256(json.dumps(params.data.embedded.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    root = work / f"data-{key[:8]}"
    params = with_overrides(params, {"data.root": str(root / "data"), "stats.root": str(root / "stats")})
    if not (root / "data" / name / ".grar-dataset").is_file():
        prepare_dataset(params, name)
    if not (root / "stats" / name / "cooccurrence.parquet").is_file():
        build_dataset_stats(params, name)
    return params


ORIGINAL: dict[str, object] = {}  # the loop's sampler and dataset classes, before DecoupledTrainer replaced them


@dataclasses.dataclass(frozen=True)
class DecoupledTrainer:
    """``run_cell`` with the batches' order and flips drawn from ``data_seed`` instead of ``params.seed``."""

    data_seed: int

    def __call__(self, params: Params, run_dir: Path) -> dict:
        from pipeline.training import loop
        from pipeline.training.run import run_cell

        if not ORIGINAL:
            ORIGINAL.update(sampler=loop.EpochBatchSampler, dataset=loop.SegmentationDataset)
        sampler, dataset, seed = ORIGINAL["sampler"], ORIGINAL["dataset"], self.data_seed
        loop.EpochBatchSampler = lambda size, batch, _seed, *args: sampler(size, batch, seed, *args)
        loop.SegmentationDataset = lambda root, split, transform, _seed: dataset(root, split, transform, seed)
        return run_cell(params, run_dir)


def train(params: Params, runs: list[Run], parallel: int, fn=None) -> None:
    """Train the runs not finished yet, ``parallel`` side by side (a run the project's ``grid.runs`` finished is
    linked in: ``pipeline.cluster.reuse``); stop naming a run that failed."""
    todo = [run for run in runs if finished_metrics(run.run_dir, run.config_hash) is None]
    for run in todo:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    if fn is None and Path(params.grid.runs).is_dir():
        for run in todo:
            source = finished_in(Path(params.grid.runs), run.config_hash)
            if source is not None:
                adopt(run, source)
        todo = [run for run in todo if finished_metrics(run.run_dir, run.config_hash) is None]
    for run, outcome, detail in run_locally(CellJob(fn), todo, parallel):
        if outcome != "done":
            raise SystemExit(f"{run.label}: {outcome} ({detail})")


def runs_of(params: Params, cell: str, seeds: range, folder: Path) -> list[Run]:
    runs = []
    for seed in seeds:
        resolved = with_overrides(params, {**cell_overrides(params, cell), "seed": seed})
        digest = config_hash(resolved)
        runs.append(Run("variance", cell, seed, resolved, digest, folder / f"{cell}-s{seed}-{digest[:HASH_CHARS]}"))
    return runs


def image_sd(run_dir: Path, rng: np.random.Generator) -> float:
    """The sd of a run's mIoU (percent) over paired image bootstrap replicates: the val split's share."""
    confusions = read_image_confusions(run_dir / "confusion_images.npz")
    sums = class_sums(confusions)  # (N, 3K)
    weights = rng.multinomial(
        confusions.num_images, np.full(confusions.num_images, 1 / confusions.num_images), size=REPLICATES
    ).astype(np.float64)
    return float(np.std(miou_of_sums(weights @ sums, confusions.num_classes), ddof=1))


def miou(run: Run) -> float:
    return 100 * finished_metrics(run.run_dir, run.config_hash)["miou"]


def report_variant(name: str, cells: dict[str, list[Run]], baseline: str) -> None:
    rng = np.random.default_rng(0)
    seconds = [finished_metrics(r.run_dir, r.config_hash)["train_seconds"] for runs in cells.values() for r in runs]
    print(
        f"\n== variant {name}: {len(next(iter(cells.values())))} seeds, "
        f"{statistics.fmean(seconds):.1f} CPU s of training per run"
    )
    header = (
        f"{'cell':<26} {'mean':>6} {'seeds (mIoU %)':<30} {'sd seeds':>8} {'sd images':>9} {'sd training':>11}"
        f" {'diff':>7} {'sd diff':>7} {'half-width':>10}"
    )
    print(header)
    base = cells[baseline]
    for cell, runs in cells.items():
        values = [miou(run) for run in runs]
        sd_seeds = statistics.stdev(values) if len(values) > 1 else 0.0
        sd_images = math.sqrt(statistics.fmean(image_sd(run.run_dir, rng) ** 2 for run in runs))
        sd_training = math.sqrt(max(sd_seeds**2 - sd_images**2, 0.0))
        line = (
            f"{cell:<26} {statistics.fmean(values):6.2f} {' '.join(f'{v:5.1f}' for v in values):<30} "
            f"{sd_seeds:8.2f} {sd_images:9.2f} {sd_training:11.2f}"
        )
        if cell != baseline:
            diffs = [a - b for a, b in zip(values, (miou(run) for run in base), strict=True)]
            confusions = {
                side: {run.seed: read_image_confusions(run.run_dir / "confusion_images.npz") for run in rs}
                for side, rs in (("a", runs), ("b", base))
            }
            interval = paired_difference(confusions["a"], confusions["b"], REPLICATES)
            sd_diff = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            line += f" {interval.diff:+7.2f} {sd_diff:7.2f} {(interval.high - interval.low) / 2:10.2f}"
        print(line)


def report_decoupled(cell: str, table: dict[tuple[int, int], float]) -> None:
    inits = sorted({i for i, _ in table})
    datas = sorted({d for _, d in table})
    grid = np.array([[table[i, d] for d in datas] for i in inits])  # (I, D)
    grand = grid.mean()
    ms_init = len(datas) * np.sum((grid.mean(axis=1) - grand) ** 2) / (len(inits) - 1)
    ms_data = len(inits) * np.sum((grid.mean(axis=0) - grand) ** 2) / (len(datas) - 1)
    residual = grid - grid.mean(axis=1, keepdims=True) - grid.mean(axis=0, keepdims=True) + grand
    ms_res = np.sum(residual**2) / ((len(inits) - 1) * (len(datas) - 1))
    var_init = max((ms_init - ms_res) / len(datas), 0.0)
    var_data = max((ms_data - ms_res) / len(inits), 0.0)
    print(f"\n== {cell}: initialisation seed x data-order seed (mIoU %), rows = initialisation")
    for i, row in zip(inits, grid, strict=True):
        print(f"init {i}: " + " ".join(f"{v:6.2f}" for v in row))
    print(
        f"variance: initialisation {var_init:.2f} (sd {math.sqrt(var_init):.2f}), data order {var_data:.2f} "
        f"(sd {math.sqrt(var_data):.2f}), interaction + rest {ms_res:.2f} (sd {math.sqrt(ms_res):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--cells",
        default="fcn,grar,grar-sr",
        help="grid cells (comma-separated; the first is the baseline the differences are taken against)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a protocol (repeatable); default: base (params.yaml as it is)",
    )
    parser.add_argument(
        "--decouple", metavar="CELL", help="split CELL's seed variance into initialisation and data order"
    )
    parser.add_argument("--init", type=int, default=3)
    parser.add_argument("--data", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "variance", help="data, statistics, runs")
    args = parser.parse_args()
    base = load_params(args.params)
    cells = args.cells.split(",")
    for name, overrides in [variant(text) for text in args.variant] or [("base", {})]:
        params = prepared(with_overrides(base, overrides), args.work)
        folder = args.work / "runs"
        grid = {cell: runs_of(params, cell, range(args.seeds), folder) for cell in cells}
        train(params, [run for runs in grid.values() for run in runs], args.parallel)
        report_variant(name, grid, cells[0])
        if args.decouple:
            table = {}
            for data_seed in range(args.data):
                runs = runs_of(params, args.decouple, range(args.init), args.work / "decoupled" / f"data{data_seed}")
                train(params, runs, args.parallel, DecoupledTrainer(data_seed))
                table.update({(run.seed, data_seed): miou(run) for run in runs})
            report_decoupled(args.decouple, table)


if __name__ == "__main__":
    main()
