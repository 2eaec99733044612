"""Finished runs of another runs folder are linked in, not trained again (``GRAR_REUSE_RUNS``, a DVC experiment's
workspace through ``DVC_ROOT``); a run another process trains, or of another config, is left alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest
from test_grids import GRIDS, FakeTrainer, calls, grid_params

from pipeline import lock
from pipeline.cluster import grids, reuse, submit


def params_in(tmp_path, folder, **overrides):
    """Grid ``g`` (3 cells x 2 seeds) with outputs under ``folder``; every folder's runs share one data root."""
    return grid_params(folder, **{"grid.grids": {"g": GRIDS["g"]}, "data.root": str(tmp_path / "data"), **overrides})


@pytest.fixture
def finished(tmp_path):
    """Grid ``g`` trained by ``FakeTrainer`` into ``tmp_path/a/runs``."""
    params = params_in(tmp_path, tmp_path / "a")
    submit.submit(params, "g", FakeTrainer())
    return params


def test_a_grid_reuses_the_finished_runs_of_grar_reuse_runs(finished, tmp_path, monkeypatch):
    params = params_in(tmp_path, tmp_path / "b")
    monkeypatch.setenv(reuse.REUSE_ENV, str(tmp_path / "a" / "runs"))
    before = {s.run.run_dir.name: (s.run.run_dir / "metrics.json").read_bytes() for s in grids.status(finished, "g")}
    result = submit.submit(params, "g", FakeTrainer(fail=frozenset({"fcn", "ppm", "grar"})))  # training would fail
    assert result.ran == 0
    assert [s.state for s in result.states] == ["done"] * 6
    for state in result.states:
        source = tmp_path / "a" / "runs" / state.run.run_dir.name
        assert state.run.run_dir.parent == tmp_path / "b" / "runs"
        assert (state.run.run_dir / "metrics.json").read_bytes() == before[state.run.run_dir.name]
        assert (state.run.run_dir / "metrics.json").stat().st_ino == (source / "metrics.json").stat().st_ino
        assert calls(state) == 1  # the one call of the first training, linked along
    after = {s.run.run_dir.name: (s.run.run_dir / "metrics.json").read_bytes() for s in grids.status(finished, "g")}
    assert after == before  # the source is untouched
    index = json.loads((tmp_path / "b" / "runs" / "grids" / "g.json").read_text())
    assert [entry["state"] for entry in index["cells"]] == ["done"] * 6


def test_a_dvc_experiment_in_a_temporary_copy_reuses_the_runs_of_its_workspace(finished, tmp_path, monkeypatch):
    """``dvc exp run --temp`` / ``--queue`` run in ``<project>/.dvc/tmp/exps/...`` with ``DVC_ROOT=<project>``:
    the cells the experiment did not change are the workspace's runs; the changed one trains."""
    workspace = tmp_path / "a"
    copy = workspace / ".dvc" / "tmp" / "exps" / "standalone" / "tmp1234"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    cells = [
        {**cell, "set": {**cell["set"], "train.loss.sr": 0.25}} if cell["name"] == "grar" else cell
        for cell in GRIDS["g"]
    ]
    params = params_in(tmp_path, copy, **{"grid.grids": {"g": cells}, "grid.runs": "runs"})
    result = submit.submit(params, "g", FakeTrainer())
    assert [(s.run.cell, s.state) for s in result.states] == [
        (cell, "done") for cell in ("fcn", "ppm", "grar") for _ in (0, 1)
    ]
    assert result.ran == 2  # only the changed cell's two seeds trained
    for state in result.states:
        assert (copy / state.run.run_dir).parent == copy / "runs"
        linked = (workspace / "runs" / state.run.run_dir.name / "metrics.json").exists()
        assert linked == (state.run.cell != "grar")
        if linked:
            assert (state.run.run_dir / "metrics.json").stat().st_ino == (
                workspace / "runs" / state.run.run_dir.name / "metrics.json"
            ).stat().st_ino


def test_a_run_another_process_trains_is_not_adopted(finished, tmp_path, monkeypatch):
    params = params_in(tmp_path, tmp_path / "b")
    monkeypatch.setenv(reuse.REUSE_ENV, str(tmp_path / "a" / "runs"))
    runs = grids.expand(params, "g")
    sleeper = subprocess.Popen(["sleep", "60"])  # a live trainer of fcn seed 0
    try:
        lock_file = runs[0].run_dir / f"{lock.RUN_LOCK}.1"
        lock_file.parent.mkdir(parents=True)
        holder = dataclasses.replace(lock.Holder.me(), pid=sleeper.pid, job="", token="t0")
        lock_file.write_text(json.dumps(dataclasses.asdict(holder)))
        assert reuse.adopt_finished(params, runs) == runs[1:]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(path.name for path in runs[0].run_dir.iterdir()) == [lock_file.name]


def test_only_a_finished_run_of_the_same_config_is_reused(finished, tmp_path, monkeypatch):
    source = grids.status(finished, "g")[0].run.run_dir
    (source / "metrics.json").unlink()  # fcn seed 0 unfinished there
    other = params_in(tmp_path, tmp_path / "b", **{"train.loss.aux": 0.3})
    monkeypatch.setenv(reuse.REUSE_ENV, str(tmp_path / "a" / "runs"))
    assert reuse.adopt_finished(other, grids.expand(other, "g")) == []  # another config: nothing of a's
    same = params_in(tmp_path, tmp_path / "c")
    assert [run.label for run in reuse.adopt_finished(same, grids.expand(same, "g"))] == [
        "g/fcn seed 1",
        "g/ppm seed 0",
        "g/ppm seed 1",
        "g/grar seed 0",
        "g/grar seed 1",
    ]


def test_no_root_without_the_environment_and_never_the_own_runs_folder(finished, monkeypatch):
    monkeypatch.delenv(reuse.REUSE_ENV, raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert reuse.reuse_roots(finished) == []
    monkeypatch.setenv(reuse.REUSE_ENV, finished.grid.runs)
    assert reuse.reuse_roots(finished) == []
