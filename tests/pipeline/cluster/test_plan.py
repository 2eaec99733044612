"""`grar grid plan`: per-run cost from measured seconds per iteration, GPU-hours, wall time, time-limit warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_grids import GRIDS, grid_params

from pipeline.cli.main import main
from pipeline.cluster import grids
from pipeline.cluster.plan import duration, eta_text, grid_plan, plan_rows, progress_text
from pipeline.config import load_params, with_overrides

ROOT = Path(__file__).resolve().parents[3]
SLURM = {
    "executor.kind": "slurm",
    "executor.slurm.array_parallelism": 2,
    "executor.slurm.gpus_per_node": 2,
    "executor.slurm.timeout_min": 2,
    "grid.grids": {"g": GRIDS["g"]},
    "train.schedules.embedded.iterations": 300,  # the figures below are worked out by hand for 300
}


def write_run(run: grids.Run, seconds: list[float], finished: bool = False) -> None:
    """A run folder as the trainer leaves it: config.yaml, train_log.csv (and metrics.json when finished)."""
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(run.params.model_dump(mode="json")))
    rows = ["iteration,lr,loss,ce,aux,coarse,sr,seconds"]  # an older log, without the λ columns
    rows += [f"{i},0.01,1.0,1.0,,,,{s}" for i, s in enumerate(seconds, start=1)]
    (run.run_dir / "train_log.csv").write_text("\n".join(rows) + "\n")
    if finished:
        (run.run_dir / "metrics.json").write_text(
            json.dumps({"miou": 0.5, "provenance": {"config_hash": run.config_hash}})
        )


@pytest.fixture
def planned(tmp_path):
    """Grid g (fcn, ppm, grar x seeds 0, 1; 300 iterations each): fcn seed 0 finished, ppm seed 0 at 100,
    and a finished run of another crop (9 s per iteration) that must not count."""
    params = grid_params(tmp_path, **SLURM)
    runs = {(run.cell, run.seed): run for run in grids.expand(params, "g")}
    write_run(runs["fcn", 0], [0.5] * 299 + [2.0], finished=True)
    write_run(runs["ppm", 0], [0.25] + [0.5] * 99)
    other = with_overrides(params, {"train.crop_size": 64})
    write_run(grids.Run("x", "other", 0, other, "0" * 64, tmp_path / "runs" / "other-s0-0000000000"), [9.0] * 50)
    return params


def test_costs_from_measured_seconds_per_iteration(planned):
    plan = grid_plan(planned, "g")
    assert [(r.cell, r.seed, r.state, r.done) for r in plan.runs] == [
        ("fcn", 0, "done", 300),
        ("fcn", 1, "pending", 0),
        ("ppm", 0, "started", 100),
        ("ppm", 1, "pending", 0),
        ("grar", 0, "pending", 0),
        ("grar", 1, "pending", 0),
    ]
    assert {r.seconds_per_iteration for r in plan.runs} == {0.5}  # median of the 400 logged iterations
    assert [r.remaining_s for r in plan.runs] == [0, 150, 100, 150, 150, 150]
    assert plan.remaining_s == 700 and plan.gpu_hours == pytest.approx(700 / 3600 * 2)
    # two slots in grid order: fcn1 150 | ppm0 100, ppm1 -> 250, grar0 -> 300, grar1 -> 400
    assert plan.wall_s == 400 and duration(plan.wall_s) == "0:06:40"
    assert [r.over_limit for r in plan.runs] == [False, True, False, True, True, True]  # 150 s > 2 min
    assert plan.warnings[0] == (
        "g/fcn seed 1: needs 0:02:30 more, over executor.slurm.timeout_min 2 min: it "
        "cannot finish without requeues (raise the time limit, or make sure the partition "
        "requeues preempted jobs)"
    )
    assert plan_rows(plan)[3] == ("ppm", "0", "started", "100/300", "0.500", "0:01:40", "0.06", "fits")
    running = grid_plan(planned, "g", {("grar", 1): "running"})  # a running run takes its slot first
    assert running.wall_s == 400 and running.runs[5].state == "running"
    local = grid_plan(with_overrides(planned, {"executor.kind": "local", "executor.parallel": 1}), "g")
    assert local.slots == 1 and local.wall_s == 700
    side_by_side = grid_plan(with_overrides(planned, {"executor.kind": "local", "executor.parallel": 2}), "g")
    assert side_by_side.slots == 2 and side_by_side.wall_s == 400  # the SLURM schedule above, on 2 local slots


def test_unknown_without_a_run_of_the_same_backbone_crop_and_device(planned):
    plan = grid_plan(with_overrides(planned, {"train.device": "cpu"}), "g")
    assert {r.seconds_per_iteration for r in plan.runs} == {None}
    assert plan.remaining_s is None and plan.wall_s is None and plan.warnings == []
    assert plan_rows(plan)[2][4:] == ("unknown", "unknown", "unknown", "unknown")


def test_grid_plan_command(planned, tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(planned.model_dump(mode="json"), sort_keys=False))
    assert main(["grid", "plan", "g", "--params", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "grid g: 6 runs (1 done, 5 pending); executor slurm: 2 run(s) at a time, 2 GPU(s) per job, time limit 2 min"
    )
    assert out[1] == "to go: 0:11:40 of run time, 0.39 GPU-hours, wall time 0:06:40 at 2 in parallel"
    assert out[2].endswith("tiny_resnet 32x192 auto bf16: 2 log(s); tiny_resnet 64x64 auto bf16: 1 log(s)")
    assert out[3].split() == ["cell", "seed", "state", "iterations", "s/it", "remaining", "GPU-h", "time", "limit"]
    assert out[4].split() == ["fcn", "0", "done", "300/300", "0.500", "0:00:00", "0.00", "fits"]
    assert sum(line.startswith("warning: ") for line in out) == 4


def test_plan_does_not_import_torch():
    code = "import sys, pipeline.cluster.plan, pipeline.cli.grid; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_paper_profile_plans_tables_1_to_6_with_table4_sharing_table1s_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    paper = str(ROOT / "profiles" / "paper.yaml")
    params = load_params(ROOT / "profiles" / "paper.yaml")
    r101 = next(run for run in grids.expand(params, "table1") if run.cell == "r101-grar-sr")
    write_run(r101, [2.0] * 10, finished=True)
    counts = {}
    for grid in [f"table{number}" for number in range(1, 7)] + ["sr-weight"]:
        plan = grid_plan(params, grid)
        counts[grid] = (
            len(plan.runs),
            sorted({run.iterations for run in plan.runs}),
            sum(run.state == "done" for run in plan.runs),
        )
    assert counts == {
        "table1": (5, [50000], 1),
        "table2": (9, [50000], 0),
        "table3": (7, [50000], 0),
        "table4": (2, [50000], 1),
        "table5": (3, [200000], 0),  # + ADE20K's lr without the head multiplier
        "table6": (2, [100000], 0),
        "sr-weight": (3, [50000], 0),
    }
    assert grid_plan(params, "sr-weight").shared == {("w-sr-0.2", 0): ("table1/r50-grar-sr",)}
    assert grid_plan(params, "table4").shared == {
        ("r101-grar-sr", 0): ("table1/r101-grar-sr",),
        ("resnest101-grar-sr", 0): ("table1/resnest101-grar-sr",),
    }
    assert grid_plan(params, "table3").shared == {
        ("fcn", 0): ("table1/r50-fcn", "table2/fcn"),
        ("grar", 0): ("table1/r50-grar", "table2/posneg-graph"),
    }
    assert grid_plan(params, "table5").shared == {}
    assert main(["grid", "plan", "table4", "--params", paper]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "2 of these runs are also runs of other grids (the same config, trained once; counted in each grid's "
        "plan): r101-grar-sr seed 0 = table1/r101-grar-sr; resnest101-grar-sr seed 0 = table1/resnest101-grar-sr"
    )
    assert main(["grid", "plan", "table5", "--params", paper, "--set", "executor.slurm.partition=other"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "grid table5: 3 runs (3 pending); executor slurm: 8 run(s) at a time, 4 GPU(s) per job, time limit 1440 min"
    )
    assert [line.split()[:5] for line in out[4:7]] == [
        ["r101-grar-sr", "0", "pending", "0/200000", "2.000"],
        ["resnest101-grar-sr", "0", "pending", "0/200000", "unknown"],
        ["r101-grar-sr-head-x1", "0", "pending", "0/200000", "2.000"],  # the same backbone, crop, device, precision
    ]
    # the measured run is fp32 (the paper profile's train.precision): a bf16 run does not borrow its rate
    bf16 = grid_plan(with_overrides(params, {"train.precision": "bf16"}), "table5")
    assert [run.seconds_per_iteration for run in bf16.runs] == [None, None, None]


def test_progress_of_a_running_run_from_its_log(planned, tmp_path):
    runs = {(run.cell, run.seed): run for run in grids.expand(planned, "g")}
    # ppm seed 0: 100 of 300 iterations, the last 50 at 0.5 s: 200 x 0.5 s = 100 s left
    assert progress_text(runs["ppm", 0].run_dir, 300) == "100/300 it, ETA 2 min"
    assert progress_text(runs["grar", 0].run_dir, 300) == "0/300 it"  # no log yet
    long = tmp_path / "long"
    long.mkdir()
    rows = ["iteration,lr,loss,ce,aux,coarse,sr,seconds"] + [
        f"{i},0.01,1.0,1.0,,,,{9.0 if i <= 1150 else 0.25}" for i in range(1, 1201)
    ]
    (long / "train_log.csv").write_text("\n".join(rows) + "\n")
    # the median of the last 50 iterations (0.25 s) x 48800 left = 12200 s; the slow start does not count
    assert progress_text(long, 50000) == "1200/50000 it, ETA 3 h 23 min"
    assert [eta_text(s) for s in (29, 31, 3599, 3600 * 25 + 60)] == ["< 1 min", "1 min", "1 h 0 min", "25 h 1 min"]


def test_grid_status_shows_progress_and_eta_of_running_runs(planned):
    from pipeline.cli.grid import status_text

    runs = {(run.cell, run.seed): run for run in grids.expand(planned, "g")}
    states = [
        grids.CellState(runs["ppm", 0], "running", "7_1", "logs/7_1_0_log.err", active=True),
        grids.CellState(runs["grar", 0], "pending", "7_2", "logs/7_2_0_log.err", active=True),
    ]
    lines = status_text(planned, "g", states).splitlines()
    assert lines[1].split() == [
        "cell",
        "seed",
        "state",
        "progress",
        "mIoU",
        "%",
        "job",
        "log",
        "/",
        "run",
        "folder",
        "reason",
    ]
    assert lines[2] == "ppm   0     running  100/300 it, ETA 2 min  -       7_1  logs/7_1_0_log.err"
    assert lines[3] == "grar  0     pending  -                      -       7_2  logs/7_2_0_log.err"


def test_the_plan_reads_each_config_only_as_far_as_its_rate_key(planned, monkeypatch):
    """Thousands of run folders (benchmarks/grid_plan.py): no YAML document is built for the configs grar
    dumped; a config of another shape (hand-edited, with an alias) is still read, by the bounded parser."""
    from pipeline.cluster import plan as plan_module

    runs = Path(planned.grid.runs)
    edited = runs / "edited-s0-1111111111"
    edited.mkdir()
    (edited / "config.yaml").write_text(
        "crop: &crop [32, 192]\nmodel: {backbone: tiny_resnet}\ntrain: {crop_size: *crop, device: auto}\n"
    )
    (edited / "train_log.csv").write_text("iteration,seconds\n1,0.5\n")
    built = []
    real = getattr(plan_module, "parse_generated_yaml", None)
    monkeypatch.setattr(
        plan_module,
        "parse_generated_yaml",
        lambda text, source: built.append(source) or real(text, source),
        raising=False,  # before: the plan parsed every config.yaml whole with yaml.safe_load
    )
    monkeypatch.setattr(yaml, "safe_load", lambda *args: pytest.fail("a whole config.yaml was parsed"))
    seconds = plan_module.measured_seconds(runs)
    assert built == [str(edited / "config.yaml")]
    assert sorted((key, len(logs)) for key, logs in seconds.items()) == [
        (("tiny_resnet", (32, 192), "auto", "bf16"), 3),
        (("tiny_resnet", (64, 64), "auto", "bf16"), 1),
    ]
