"""Wall time of `grar grid plan` and `grar grid status` beside ``--folders`` run folders under ``grid.runs``.

``plan`` reads the seconds per iteration of every run folder under
``grid.runs`` (each run's ``config.yaml`` for its backbone, crop and device,
its ``train_log.csv`` for the times), so its cost grows with the folders a
long project accumulates. Builds ``--folders`` run folders as training leaves
them (``config.yaml`` the resolved params, ``train_log.csv`` of ``--rows``
iterations, ``metrics.json``) of the embedded profile's grid cells under
several seeds, in a temporary ``grid.runs``, then prints the best wall time of
``grid_plan`` (with the states ``status`` read, as the command does) and of
``status`` alone for grid ``table1``, in this process (run it on two commits to
compare them).

    .venv/bin/python benchmarks/grid_plan.py [--folders 3000] [--rows 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from pipeline.cluster import grids, plan
from pipeline.config import load_params, with_overrides
from pipeline.rundir import config_hash

ROOT = Path(__file__).resolve().parents[1]


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build(runs: Path, params, folders: int, rows: int) -> None:
    """``folders`` run folders: every cell of every grid under seeds 0, 1, 2..., as training leaves them."""
    cells = [
        (grid, cell, overrides) for grid in params.grid.grids for cell, overrides in params.grid.cells(grid).items()
    ]
    log = "iteration,lr,loss,ce,aux,coarse,sr,danet,seconds,lambda_pos,lambda_neg\n" + "".join(
        f"{i},0.01,1.5,1.2,0.3,,,,{0.05 + i % 7 / 1000:.4f},,\n" for i in range(1, rows + 1)
    )
    for index in range(folders):
        grid, cell, overrides = cells[index % len(cells)]
        seed = index // len(cells)
        resolved = with_overrides(params, {**overrides, "seed": seed})
        digest = config_hash(resolved)
        folder = runs / f"{cell}-s{seed}-{digest[:10]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
        (folder / "train_log.csv").write_text(log)
        metrics = {"miou": 0.5, "provenance": {"config_hash": digest}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / ".grar-run").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folders", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=300, help="iterations logged per run (the embedded runs: 300)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = with_overrides(load_params(ROOT / "params.yaml"), {"grid.runs": str(Path(tmp) / "runs")})
        build(Path(tmp) / "runs", params, args.folders, args.rows)

        def plan_command() -> object:
            states = {(s.run.cell, s.run.seed): s.state for s in grids.status(params, "table1")}
            return plan.plan_text(plan.grid_plan(params, "table1", states))

        figures = {
            "grar grid status table1": best(lambda: grids.status(params, "table1"), args.repeats),
            "grar grid plan table1": best(plan_command, args.repeats),
        }
    print(f"{args.folders} run folders under grid.runs ({args.rows} logged iterations each), best of {args.repeats}:")
    for name, seconds in figures.items():
        print(f"  {name:<26} {seconds:8.2f} s")


if __name__ == "__main__":
    main()
