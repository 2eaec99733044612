"""Grids without a cluster: expansion and run folders, the index, states, the local and debug executors,
`grar grid`, and the evaluate stage's files. The trainer is a stand-in (``FakeTrainer``) that writes what
``pipeline.train.run_cell`` writes; ``test_grid_slurm.py`` reuses it on the local SLURM cluster.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import grid
from pipeline.cli import main
from pipeline.collect import collect_grids
from pipeline.config import Params, load_params, with_overrides
from pipeline.errors import ClusterError, ConfigError, DataError
from pipeline.io import write_text_atomic
from pipeline.per_image import ImageConfusions, write_image_confusions
from pipeline.rundir import config_hash

ROOT = Path(__file__).resolve().parents[2]
# One val image, two classes: mIoU 100 (fcn), 58.33 and 0 (ppm seeds 0 and 1), 100 (grar).
PER_IMAGE = {"fcn": [[[2, 0], [0, 2]]] * 2, "ppm": [[[1, 1], [0, 2]], [[0, 2], [2, 0]]], "grar": [[[2, 0], [0, 2]]] * 2}
HEAD_MIOU = {"fcn": 0.5, "ppm": 0.25, "grar": 0.75, "danet": 0.125}
GRIDS = {
    "g": [{"name": "fcn", "set": {"model.head": "fcn"}}, {"name": "ppm", "set": {"model.head": "ppm"}},
          {"name": "grar", "set": {"model.head": "grar", "train.loss.sr": 0.5}}],
    "h": [{"name": "fcn-again", "set": {"model.head": "fcn"}}, {"name": "danet", "set": {"model.head": "danet"}}],
}


@dataclass(frozen=True)
class FakeTrainer:
    """Stand-in for ``run_cell``: records the call in ``run_dir/calls.txt``, raises for the heads in ``fail``,
    else writes ``train_log.csv`` and, last, ``metrics.json`` (mIoU from the head, + seed/100)."""

    fail: frozenset[str] = frozenset()
    per_image: bool = False  # also write confusion_images.npz: one val image, PER_IMAGE[head][seed]

    def __call__(self, params: Params, run_dir: Path) -> dict:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "calls.txt", "a", encoding="utf-8") as calls:
            calls.write(f"{params.model.head} {params.seed}\n")
        if params.model.head in self.fail:
            raise RuntimeError(f"{params.model.head} exploded")
        seed = params.seed
        miou = HEAD_MIOU[params.model.head] + seed / 100
        metrics = {
            "miou": miou, "pixel_accuracy": 0.5 + seed / 4, "mean_accuracy": 0.5, "per_class_iou": {},
            "ms": {"miou": miou + 0.125, "pixel_accuracy": 0.5, "mean_accuracy": 0.5, "per_class_iou": {}}
            if params.eval.multi_scale else None,
            "iterations": 2, "train_seconds": 1.0, "eval_seconds": 1.0,
            "provenance": {"config_hash": config_hash(params), "seed": seed, "run_dir": str(run_dir)},
        }
        (run_dir / "train_log.csv").write_text(
            f"iteration,lr,loss,ce,seconds\n1,0.03,{3 + seed},1,0.1\n2,0.01,{1 + seed},1,0.1\n", encoding="utf-8")
        if self.per_image:
            matrix = np.array(PER_IMAGE[params.model.head][seed])  # (2, 2)
            gt, pred = np.nonzero(matrix)
            entries = np.stack([np.zeros_like(gt), gt, pred, matrix[gt, pred]], axis=1)
            write_image_confusions(run_dir / "confusion_images.npz", ImageConfusions.from_entries([entries], 2, 1))
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics))
        return metrics


def calls(state: grid.CellState) -> int:
    """How often the trainer was called for a run."""
    path = state.run.run_dir / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def grid_params(tmp_path: Path, **overrides) -> Params:
    """The project's params with the test grids, every output under ``tmp_path``."""
    return with_overrides(load_params(ROOT / "params.yaml"), {
        "grid.runs": str(tmp_path / "runs"), "grid.metrics": str(tmp_path / "metrics"),
        "grid.details": str(tmp_path / "scores"), "grid.plots": str(tmp_path / "plots"), "grid.seeds": [0, 1], "grid.grids": GRIDS,
        "executor.kind": "local", "executor.log_dir": str(tmp_path / "logs"), **overrides,
    })


@pytest.fixture
def params(tmp_path) -> Params:
    return grid_params(tmp_path)


def states_of(states: list[grid.CellState]) -> list[tuple[str, int, str]]:
    return [(s.run.cell, s.run.seed, s.state) for s in states]


# --- expansion and run folders ---------------------------------------------------------------------


def test_cells_times_seeds_resolve_into_runs_named_by_cell_seed_and_hash(params, tmp_path):
    runs = grid.expand(params, "g")
    assert [(run.cell, run.seed) for run in runs] == [
        ("fcn", 0), ("fcn", 1), ("ppm", 0), ("ppm", 1), ("grar", 0), ("grar", 1)]
    assert [run.params.model.head for run in runs] == ["fcn", "fcn", "ppm", "ppm", "grar", "grar"]
    assert [run.params.seed for run in runs] == [0, 1] * 3
    assert runs[4].params.train.loss.sr == 0.5 and runs[0].params.train.loss.sr == params.train.loss.sr
    for run in runs:
        assert run.config_hash == config_hash(run.params)
        assert run.run_dir == tmp_path / "runs" / f"{run.cell}-s{run.seed}-{run.config_hash[:10]}"
    assert len({run.config_hash for run in runs}) == 6  # seeds differ, cells differ


def test_identical_configs_share_one_run_folder_across_grids_and_cell_names(params, tmp_path):
    claimed: dict[str, Path] = {}
    g, h = grid.expand(params, "g", claimed), grid.expand(params, "h", claimed)
    assert [run.run_dir for run in h[:2]] == [run.run_dir for run in g[:2]]  # fcn-again is fcn
    assert h[0].run_dir.name.startswith("fcn-s0-")
    # In another process (nothing claimed), the finished folder of the same config is found on disk.
    FakeTrainer()(g[0].params, g[0].run_dir)
    assert grid.expand(params, "h")[0].run_dir == g[0].run_dir
    assert grid.expand(params, "h")[1].run_dir.name.startswith("fcn-again-s1-")  # seed 1 of fcn: not on disk


def test_executor_and_grid_settings_leave_the_run_folders_alone(params, tmp_path):
    moved = with_overrides(params, {"executor.kind": "slurm", "grid.seeds": [1, 0], "executor.slurm.mem_gb": 3})
    assert {run.run_dir for run in grid.expand(moved, "g")} == {run.run_dir for run in grid.expand(params, "g")}


def test_an_unknown_grid_lists_the_grids(params):
    with pytest.raises(ConfigError, match=r"grid 'table9' not in grid.grids; grids: g, h"):
        grid.expand(params, "table9")


# --- the local executor, states and the index ------------------------------------------------------


def test_a_failing_cell_does_not_stop_the_others_and_resubmission_runs_only_it(params, tmp_path):
    first = grid.submit(params, "g", FakeTrainer(fail=frozenset({"ppm"})))
    assert first.ran == 6 and first.job_ids == []
    assert states_of(first.states) == [
        ("fcn", 0, "done"), ("fcn", 1, "done"), ("ppm", 0, "failed"), ("ppm", 1, "failed"),
        ("grar", 0, "done"), ("grar", 1, "done")]
    failed = first.states[2]
    assert failed.log == str(failed.run.run_dir / "error.txt")
    assert "RuntimeError: ppm exploded" in Path(failed.log).read_text()
    assert [calls(s) for s in first.states] == [1] * 6

    second = grid.submit(params, "g", FakeTrainer())
    assert second.ran == 2
    assert [calls(s) for s in second.states] == [1, 1, 2, 2, 1, 1]  # only the failed cell ran again
    assert states_of(second.states) == [(c, s, "done") for c, s, _ in states_of(first.states)]
    assert not (failed.run.run_dir / "error.txt").exists()  # removed once the run succeeds
    assert grid.submit(params, "g", FakeTrainer()).ran == 0


def test_the_index_records_every_run_as_the_contract_says(params, tmp_path):
    states = grid.submit(params, "g", FakeTrainer(fail=frozenset({"grar"}))).states
    index = json.loads((tmp_path / "runs" / "grids" / "g.json").read_text())
    assert index["grid"] == "g"
    assert [entry["cell"] for entry in index["cells"]] == ["fcn", "fcn", "ppm", "ppm", "grar", "grar"]
    first, last = index["cells"][0], index["cells"][-1]
    assert set(first) == {"cell", "seed", "config_hash", "run_dir", "state", "job_id", "log", "metrics"}
    assert first["run_dir"] == str(states[0].run.run_dir) and first["config_hash"] == states[0].run.config_hash
    assert (first["state"], first["job_id"], first["log"], first["metrics"]["miou"]) == ("done", None, None, 0.5)
    assert (last["state"], last["metrics"], last["seed"]) == ("failed", None, 1)
    assert last["log"] == str(states[-1].run.run_dir / "error.txt")


def test_status_reads_recorded_slurm_jobs_and_never_writes(params, tmp_path, monkeypatch):
    runs = grid.expand(params, "g")
    FakeTrainer()(runs[0].params, runs[0].run_dir)  # fcn seed 0: done, whatever its job says
    jobs = ["7_0", "7_1", "7_2", "7_3", "7_4", None]
    slurm = {"7_0": "COMPLETED", "7_1": "RUNNING", "7_2": "PENDING", "7_3": "FAILED", "7_4": "PURGED"}
    states = [grid.CellState(run, "pending", job, f"logs/{job}.err" if job else None) for run, job in zip(runs, jobs)]
    index = grid.write_index(params, "g", states)
    before = index.read_text()
    asked = []
    monkeypatch.setattr(grid, "slurm_states", lambda ids: asked.append(sorted(ids)) or {i: slurm[i] for i in ids})
    found = grid.status(params, "g")
    assert [(s.state, s.job_id, s.log, s.active) for s in found] == [
        ("done", "7_0", "logs/7_0.err", False), ("running", "7_1", "logs/7_1.err", True),
        ("pending", "7_2", "logs/7_2.err", True), ("failed", "7_3", "logs/7_3.err", False),
        ("failed", "7_4", "logs/7_4.err", False), ("pending", None, None, False)]
    assert asked == [["7_1", "7_2", "7_3", "7_4"]]  # one query; the finished run's job is not asked about
    assert index.read_text() == before


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``squeue`` and ``scontrol`` on PATH as scripts: a cluster without accounting whose squeue prints
    ``tmp_path/squeue.txt`` (or fails with its message when ``tmp_path/squeue.fail`` exists)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "scontrol": "echo 'AccountingStorageType   = accounting_storage/none'",
        "squeue": f"if [ -e {tmp_path}/squeue.fail ]; then cat {tmp_path}/squeue.fail >&2; exit 1; fi\n"
                  f"cat {tmp_path}/squeue.txt",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_slurm_states_come_from_one_squeue_call(fake_slurm):
    (fake_slurm / "squeue.txt").write_text("5_0|RUNNING|vm\n5_1|COMPLETED|vm\n5_[2-3]|PENDING|\n")
    assert grid.slurm_states(["5_1", "5_0", "5_2", "5_3", "9"]) == {
        "5_0": "RUNNING", "5_1": "COMPLETED", "5_2": "PENDING", "5_3": "PENDING", "9": "PURGED"}
    assert grid.slurm_states([]) == {}


def test_a_failing_squeue_is_an_error_and_wait_gives_up_after_some_attempts(params, fake_slurm, monkeypatch):
    (fake_slurm / "squeue.fail").write_text("slurm_load_jobs error: Unable to contact slurm controller\n")
    with pytest.raises(ClusterError, match=r"SLURM jobs 5_0: squeue failed \(slurm_load_jobs error: Unable to "
                                           r"contact slurm controller\); is the cluster up\?"):
        grid.slurm_states(["5_0"])
    run = grid.expand(params, "g")[0]
    run.run_dir.mkdir(parents=True)
    grid.write_index(params, "g", [grid.CellState(run, "pending", "5_0", None)])
    monkeypatch.setattr(grid, "QUERY_ATTEMPTS", 3)
    with pytest.raises(ClusterError, match="squeue failed"):
        grid.wait(params, ["g"], poll_s=0.01)


def test_the_last_job_of_a_run_wins_and_a_queued_one_before_all(params, monkeypatch):
    run = grid.expand(params, "g")[0]
    records = [("7_0", "a"), ("12_3", "b"), ("9", "c")]
    assert grid.latest_job(records, {}) == ("12_3", "b")
    assert grid.latest_job(records, {"7_0": "PENDING", "12_3": "FAILED", "9": "COMPLETED"}) == ("7_0", "a")
    assert grid.cell_state(run, None, ("12_3", "b"), {"12_3": "CANCELLED"}).state == "failed"


def test_runs_queued_in_slurm_are_not_submitted_again(params, tmp_path, monkeypatch):
    runs = grid.expand(params, "h")
    for run in runs[0], runs[2]:
        run.run_dir.mkdir(parents=True)  # as submit does: the folder is claimed at submission
    grid.write_index(params, "h", [grid.CellState(runs[0], "pending", "7_0", "l0"),
                                   grid.CellState(runs[2], "pending", "7_2", "l2")])
    monkeypatch.setattr(grid, "slurm_states", lambda ids: {"7_0": "RUNNING", "7_2": "FAILED"})
    # Grid g shares fcn seed 0 with h: its job (recorded in h's index) runs it; failed danet of h is not in g.
    submission = grid.submit(params, "g", FakeTrainer())
    assert submission.ran == 5
    assert [(s.state, s.job_id) for s in submission.states][:2] == [("running", "7_0"), ("done", None)]


def test_shared_runs_of_several_grids_train_once(params):
    grid.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    states = grid.status_all(params, ["g", "h"])
    assert all(s.state == "done" for grid_states in states.values() for s in grid_states)
    assert [calls(s) for s in states["h"]] == [1, 1, 1, 1]
    assert states["h"][0].run.run_dir == states["g"][0].run.run_dir


def test_wait_names_every_failed_run_with_its_log(params, tmp_path):
    grid.submit(params, "g", FakeTrainer(fail=frozenset({"grar"})))
    with pytest.raises(grid.GridFailed) as caught:
        grid.wait(params, ["g", "h"], poll_s=0.01)
    lines = str(caught.value).splitlines()
    assert lines[0] == "4 run(s) not done:"
    for seed, line in enumerate(lines[1:3]):
        assert line.startswith(f"  g/grar seed {seed}: failed, log ") and line.endswith("error.txt")
    assert lines[3:] == [f"  h/danet seed {seed}: not submitted (grar grid submit h)" for seed in (0, 1)]
    assert json.loads((tmp_path / "runs" / "grids" / "h.json").read_text())["cells"][0]["state"] == "done"


def test_cell_job_checkpoint_is_the_same_call_and_pickles(params, tmp_path):
    job = grid.CellJob(FakeTrainer())
    delayed = job.checkpoint(params, tmp_path / "run")
    assert delayed.function is job and delayed.args == (params, tmp_path / "run") and delayed.kwargs == {}
    again = pickle.loads(pickle.dumps(delayed))
    assert again.function.fn == FakeTrainer() and again.args[0] == params
    assert again.result()["miou"] == HEAD_MIOU[params.model.head] and (tmp_path / "run" / "metrics.json").exists()


def test_the_debug_executor_runs_every_cell_here(tmp_path):
    params = grid_params(tmp_path, **{"executor.kind": "debug"})
    submission = grid.submit(params, "h", FakeTrainer())
    assert submission.job_ids == [] and submission.ran == 4
    assert [s.state for s in submission.states] == ["done"] * 4
    assert (tmp_path / "logs" / "h").is_dir()  # submitit's folder of the grid's jobs


# --- the evaluate stage ----------------------------------------------------------------------------


def test_collect_writes_mean_and_per_seed_scores_and_curves(tmp_path):
    params = grid_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:2]}})
    grid.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    collect_grids(params)
    table = json.loads((tmp_path / "scores" / "g.json").read_text())
    assert list(table) == ["fcn", "ppm"]
    fcn = table["fcn"]
    assert (fcn["miou"], fcn["miou_ms"], fcn["pixel_accuracy"]) == (0.505, 0.63, 0.625)  # (0.50 + 0.51) / 2, ...
    assert fcn["seeds"]["1"] == {"miou": 0.51, "miou_ms": 0.635, "pixel_accuracy": 0.75,
                                 "run_dir": str(grid.expand(params, "g")[1].run_dir)}
    assert "vs_fcn" not in fcn and table["ppm"]["vs_fcn"]["baseline"] == "fcn"
    assert table["ppm"]["vs_fcn"]["miou"]["none"].startswith("no interval: 4 run(s) without confusion_images.npz, e.g. ")
    assert (tmp_path / "plots" / "g" / "ppm.csv").read_text() == "iteration,loss,lr\n1,3.5,0.03\n2,1.5,0.01\n"
    assert sorted(p.relative_to(tmp_path / "metrics").as_posix() for p in (tmp_path / "metrics").rglob("*.json")) \
        == ["g/fcn.json", "g/ppm.json"]
    assert json.loads((tmp_path / "metrics" / "g" / "fcn.json").read_text()) == {"miou": 50.5, "miou_ms": 63.0}
    assert json.loads((tmp_path / "metrics" / "g" / "ppm.json").read_text()) == {
        "miou": 25.5, "miou_ms": 38.0, "vs_fcn": None, "vs_fcn_low": None, "vs_fcn_high": None}


def test_collect_states_each_cells_interval_against_the_fcn(tmp_path):
    params = grid_params(tmp_path, **{"grid.bootstrap": 1000, "grid.grids": {"g": GRIDS["g"]}})
    grid.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer(per_image=True))
    collect_grids(params)
    metrics = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "metrics" / "g").iterdir()}
    assert set(metrics) == {"fcn", "ppm", "grar"} and set(metrics["fcn"]) == {"miou", "miou_ms"}
    # ppm − fcn per seed: 58.33 − 100 and 0 − 100; the seeds resampled: the interval spans both
    d0, d1 = round(175 / 3 - 100, 4), -100.0
    assert (metrics["ppm"]["vs_fcn"], metrics["ppm"]["vs_fcn_low"], metrics["ppm"]["vs_fcn_high"]) == (
        round((175 / 3 - 200) / 2, 4), d1, d0)
    assert (metrics["grar"]["vs_fcn"], metrics["grar"]["vs_fcn_low"], metrics["grar"]["vs_fcn_high"]) == (0, 0, 0)
    details = json.loads((tmp_path / "scores" / "g.json").read_text())
    grar0 = next(run.run_dir for run in grid.expand(params, "g") if (run.cell, run.seed) == ("grar", 0))
    assert details["grar"]["vs_fcn"]["ms"] == {"none": f"no interval: 4 run(s) without confusion_images_ms.npz, e.g. "
                                                       f"{grar0} (evaluated before per-image confusions, or without "
                                                       "multi-scale)"}


def test_collect_without_multi_scale_and_with_a_missing_run(tmp_path):
    params = grid_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:1]}, "eval.multi_scale": False})
    with pytest.raises(DataError, match=r"g\.json: no grid index; train the grid first"):
        collect_grids(params)
    grid.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    collect_grids(params)
    assert json.loads((tmp_path / "scores" / "g.json").read_text())["fcn"]["miou_ms"] is None
    assert json.loads((tmp_path / "metrics" / "g" / "fcn.json").read_text()) == {"miou": 50.5, "miou_ms": None}
    more = with_overrides(params, {"grid.seeds": [0, 1, 2]})
    with pytest.raises(DataError, match=r"no run of cell 'fcn' seed 2"):
        collect_grids(more)


# --- grar grid -------------------------------------------------------------------------------------


@pytest.fixture
def params_file(params, tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def test_grid_list_and_status(params_file, capsys):
    assert main(["grid", "list", "--params", str(params_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["g: 3 cells x 2 seed(s) [0, 1]", "  fcn   model.head=fcn", "  ppm   model.head=ppm",
                       "  grar  model.head=grar train.loss.sr=0.5"]
    assert main(["grid", "status", "g", "--params", str(params_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("grid g: 6 runs: 6 pending, 0 running, 0 done, 0 failed (index ")
    assert out[1].split() == ["cell", "seed", "state", "mIoU", "%", "job", "log", "/", "run", "folder"]
    assert out[2].split() == ["fcn", "0", "pending", "-", "-", "-"]


def test_grid_submit_and_wait_exit_codes(params_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grid, "run_cell", FakeTrainer(fail=frozenset({"fcn"})))
    assert main(["grid", "submit", "h", "--params", str(params_file)]) == 1
    captured = capsys.readouterr()
    error = captured.err.split("grar: error: ")[1]
    assert error.startswith("2 run(s) not done:\n  h/fcn-again seed 0: failed, log ") and "danet" not in error
    rows = [line.split() for line in captured.out.splitlines()[2:]]
    assert [row[:4] for row in rows] == [["fcn-again", "0", "failed", "-"], ["fcn-again", "1", "failed", "-"],
                                         ["danet", "0", "done", "12.50"], ["danet", "1", "done", "13.50"]]
    assert main(["grid", "wait", "h", "--params", str(params_file), "--poll", "0.01"]) == 1
    assert "h/fcn-again seed 1: failed" in capsys.readouterr().err
    monkeypatch.setattr(grid, "run_cell", FakeTrainer())
    assert main(["grid", "submit", "h", "--params", str(params_file)]) == 0
    assert main(["grid", "wait", "h", "--params", str(params_file)]) == 0
    assert "4 done, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["grid", "status", "nope"], "grid 'nope' not in grid.grids; grids: g, h"),
    (["grid", "wait"], "grar grid wait needs a grid NAME; grids: g, h"),
    (["grid", "wait", "g", "--poll", "0"], "--poll 0.0: must be > 0 seconds"),
])
def test_grid_argument_errors_exit_2_with_one_line(params_file, capsys, argv, message):
    assert main([*argv, "--params", str(params_file)]) == 2
    assert capsys.readouterr().err == f"grar: error: {message}\n"


def test_grid_status_does_not_import_torch():
    """``grar grid status`` answers in a fraction of a second: finding and naming runs needs no torch."""
    code = "import sys, pipeline.grid, pipeline.collect, pipeline.commands.grid; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"
