"""Grids without a cluster: expansion and run folders, the index, states, the local and debug executors,
`grar grid`, and the evaluate stage's files. The trainer is a stand-in (``FakeTrainer``) that writes what
``pipeline.training.run.run_cell`` writes; ``test_grids_slurm.py`` reuses it on the local SLURM cluster.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import lock
from pipeline.cli.main import main
from pipeline.cluster import grids, slurm_jobs, submit
from pipeline.config import Params, load_params, with_overrides
from pipeline.errors import ClusterError, ConfigError, DataError
from pipeline.io import write_text_atomic
from pipeline.rundir import config_hash
from pipeline.scores.grid_scores import collect_grids
from pipeline.scores.per_image import ImageConfusions, write_image_confusions

ROOT = Path(__file__).resolve().parents[3]
# One val image, two classes: mIoU 100 (fcn), 58.33 and 0 (ppm seeds 0 and 1), 100 (grar).
PER_IMAGE = {"fcn": [[[2, 0], [0, 2]]] * 2, "ppm": [[[1, 1], [0, 2]], [[0, 2], [2, 0]]], "grar": [[[2, 0], [0, 2]]] * 2}
HEAD_MIOU = {"fcn": 0.5, "ppm": 0.25, "grar": 0.75, "danet": 0.125}
GRIDS = {
    "g": [
        {"name": "fcn", "set": {"model.head": "fcn"}},
        {"name": "ppm", "set": {"model.head": "ppm"}},
        {"name": "grar", "set": {"model.head": "grar", "train.loss.sr": 0.5}},
    ],
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
            "miou": miou,
            "pixel_accuracy": 0.5 + seed / 4,
            "mean_accuracy": 0.5,
            "per_class_iou": {},
            "ms": {"miou": miou + 0.125, "pixel_accuracy": 0.5, "mean_accuracy": 0.5, "per_class_iou": {}}
            if params.eval.multi_scale
            else None,
            "iterations": 2,
            "train_seconds": 1.0,
            "eval_seconds": 1.0,
            "provenance": {"config_hash": config_hash(params), "seed": seed, "run_dir": str(run_dir)},
        }
        (run_dir / "train_log.csv").write_text(
            f"iteration,lr,loss,ce,seconds\n1,0.03,{3 + seed},1,0.1\n2,0.01,{1 + seed},1,0.1\n", encoding="utf-8"
        )
        if self.per_image:
            matrix = np.array(PER_IMAGE[params.model.head][seed])  # (2, 2)
            gt, pred = np.nonzero(matrix)
            entries = np.stack([np.zeros_like(gt), gt, pred, matrix[gt, pred]], axis=1)
            write_image_confusions(run_dir / "confusion_images.npz", ImageConfusions.from_entries([entries], 2, 1))
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics))
        return metrics


@dataclass(frozen=True)
class BlockedTrainer(FakeTrainer):
    """``FakeTrainer`` that first writes ``run_dir/started`` and waits (at most 5 minutes) for file ``gate``."""

    gate: str = ""

    def __call__(self, params: Params, run_dir: Path) -> dict:
        (run_dir / "started").touch()
        deadline = time.monotonic() + 300
        while not Path(self.gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().__call__(params, run_dir)


def calls(state: grids.CellState) -> int:
    """How often the trainer was called for a run."""
    path = state.run.run_dir / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def grid_params(tmp_path: Path, **overrides) -> Params:
    """The project's params with the test grids, every output under ``tmp_path``; runs in-process (the tests
    stand in for ``run_cell`` by monkeypatching; ``test_grids_parallel`` covers worker processes)."""
    return with_overrides(
        load_params(ROOT / "params.yaml"),
        {
            "grid.runs": str(tmp_path / "runs"),
            "grid.metrics": str(tmp_path / "metrics"),
            "grid.details": str(tmp_path / "scores"),
            "grid.plots": str(tmp_path / "plots"),
            "grid.seeds": [0, 1],
            "grid.grids": GRIDS,
            "executor.kind": "local",
            "executor.parallel": 1,
            "executor.log_dir": str(tmp_path / "logs"),
            **overrides,
        },
    )


@pytest.fixture
def params(tmp_path) -> Params:
    return grid_params(tmp_path)


def states_of(states: list[grids.CellState]) -> list[tuple[str, int, str]]:
    return [(s.run.cell, s.run.seed, s.state) for s in states]


# --- expansion and run folders ---------------------------------------------------------------------


def test_cells_times_seeds_resolve_into_runs_named_by_cell_seed_and_hash(params, tmp_path):
    runs = grids.expand(params, "g")
    assert [(run.cell, run.seed) for run in runs] == [
        ("fcn", 0),
        ("fcn", 1),
        ("ppm", 0),
        ("ppm", 1),
        ("grar", 0),
        ("grar", 1),
    ]
    assert [run.params.model.head for run in runs] == ["fcn", "fcn", "ppm", "ppm", "grar", "grar"]
    assert [run.params.seed for run in runs] == [0, 1] * 3
    assert runs[4].params.train.loss.sr == 0.5 and runs[0].params.train.loss.sr == params.train.loss.sr
    for run in runs:
        assert run.config_hash == config_hash(run.params)
        assert run.run_dir == tmp_path / "runs" / f"{run.cell}-s{run.seed}-{run.config_hash[:10]}"
    assert len({run.config_hash for run in runs}) == 6  # seeds differ, cells differ


def test_identical_configs_share_one_run_folder_across_grids_and_cell_names(params, tmp_path):
    claimed: dict[str, Path] = {}
    g, h = grids.expand(params, "g", claimed), grids.expand(params, "h", claimed)
    assert [run.run_dir for run in h[:2]] == [run.run_dir for run in g[:2]]  # fcn-again is fcn
    assert h[0].run_dir.name.startswith("fcn-s0-")
    # In another process (nothing claimed), the finished folder of the same config is found on disk.
    FakeTrainer()(g[0].params, g[0].run_dir)
    assert grids.expand(params, "h")[0].run_dir == g[0].run_dir
    assert grids.expand(params, "h")[1].run_dir.name.startswith("fcn-again-s1-")  # seed 1 of fcn: not on disk


def test_a_config_two_processes_name_differently_settles_in_the_folder_submitted_first(params, tmp_path):
    g, h = grids.expand(params, "g"), grids.expand(params, "h")  # two processes: nothing claimed, nothing on disk
    assert h[0].run_dir.name.startswith("fcn-again-s0-") and g[0].run_dir.name.startswith("fcn-s0-")
    pending = [grids.CellState(run, "pending") for run in h[:1]]
    assert grids.runs_to_submit(pending) == [h[0]]
    (run,) = grids.runs_to_submit([grids.CellState(g[0], "pending")])
    assert run.run_dir == h[0].run_dir and run.cell == "fcn"  # fcn trains in the folder fcn-again named
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [".folders", h[0].run_dir.name]
    (tmp_path / "runs" / ".folders" / g[1].config_hash).write_text("../elsewhere\n")
    with pytest.raises(
        DataError,
        match=r"\.folders/[0-9a-f]{64}: not the name of a run folder of config "
        rf"{g[1].config_hash[:10]} \('\.\./elsewhere'\); delete it",
    ):
        grids.runs_to_submit([grids.CellState(g[1], "pending")])


def test_executor_and_grid_settings_leave_the_run_folders_alone(params, tmp_path):
    moved = with_overrides(params, {"executor.kind": "slurm", "grid.seeds": [1, 0], "executor.slurm.mem_gb": 3})
    assert {run.run_dir for run in grids.expand(moved, "g")} == {run.run_dir for run in grids.expand(params, "g")}


def test_an_unknown_grid_lists_the_grids(params):
    with pytest.raises(ConfigError, match=r"grid 'table9' not in grid.grids; grids: g, h"):
        grids.expand(params, "table9")


# --- the local executor, states and the index ------------------------------------------------------


def test_a_failing_cell_does_not_stop_the_others_and_resubmission_runs_only_it(params, tmp_path):
    first = submit.submit(params, "g", FakeTrainer(fail=frozenset({"ppm"})))
    assert first.ran == 6 and first.job_ids == []
    assert states_of(first.states) == [
        ("fcn", 0, "done"),
        ("fcn", 1, "done"),
        ("ppm", 0, "failed"),
        ("ppm", 1, "failed"),
        ("grar", 0, "done"),
        ("grar", 1, "done"),
    ]
    failed = first.states[2]
    assert failed.log == str(failed.run.run_dir / "error.txt")
    assert "RuntimeError: ppm exploded" in Path(failed.log).read_text()
    assert [calls(s) for s in first.states] == [1] * 6

    second = submit.submit(params, "g", FakeTrainer())
    assert second.ran == 2
    assert [calls(s) for s in second.states] == [1, 1, 2, 2, 1, 1]  # only the failed cell ran again
    assert states_of(second.states) == [(c, s, "done") for c, s, _ in states_of(first.states)]
    assert not (failed.run.run_dir / "error.txt").exists()  # removed once the run succeeds
    assert submit.submit(params, "g", FakeTrainer()).ran == 0


def test_the_index_records_every_run_as_the_contract_says(params, tmp_path):
    states = submit.submit(params, "g", FakeTrainer(fail=frozenset({"grar"}))).states
    index = json.loads((tmp_path / "runs" / "grids" / "g.json").read_text())
    assert index["grid"] == "g"
    assert [entry["cell"] for entry in index["cells"]] == ["fcn", "fcn", "ppm", "ppm", "grar", "grar"]
    first, last = index["cells"][0], index["cells"][-1]
    assert set(first) == {
        "cell",
        "seed",
        "config_hash",
        "run_dir",
        "state",
        "job_id",
        "log",
        "reason",
        "submission",
        "metrics",
    }
    assert first["run_dir"] == str(states[0].run.run_dir) and first["config_hash"] == states[0].run.config_hash
    assert (first["state"], first["job_id"], first["log"], first["metrics"]["miou"]) == ("done", None, None, 0.5)
    assert (first["reason"], first["submission"]) == (None, None)
    assert (last["state"], last["metrics"], last["seed"]) == ("failed", None, 1)
    assert last["reason"] == "RuntimeError: grar exploded"  # the last line of error.txt
    assert last["log"] == str(states[-1].run.run_dir / "error.txt")


def test_status_reads_recorded_slurm_jobs_and_never_writes(params, tmp_path, monkeypatch):
    runs = grids.expand(params, "g")
    FakeTrainer()(runs[0].params, runs[0].run_dir)  # fcn seed 0: done, whatever its job says
    jobs = ["7_0", "7_1", "7_2", "7_3", "7_4", None]
    slurm = {"7_0": "COMPLETED", "7_1": "RUNNING", "7_2": "PENDING", "7_3": "FAILED", "7_4": "PURGED"}
    states = [grids.CellState(run, "pending", job, f"logs/{job}.err" if job else None) for run, job in zip(runs, jobs)]
    written = grids.write_states(params, "g", states)
    before = written.read_text()
    asked = []
    monkeypatch.setattr(grids, "slurm_states", lambda ids: asked.append(sorted(ids)) or {i: slurm[i] for i in ids})
    found = grids.status(params, "g")
    assert [(s.state, s.job_id, s.log, s.active) for s in found] == [
        ("done", "7_0", "logs/7_0.err", False),
        ("running", "7_1", "logs/7_1.err", True),
        ("pending", "7_2", "logs/7_2.err", True),
        ("failed", "7_3", "logs/7_3.err", False),
        ("failed", "7_4", "logs/7_4.err", False),
        ("pending", None, None, False),
    ]
    assert asked == [["7_1", "7_2", "7_3", "7_4"]]  # one query; the finished run's job is not asked about
    assert written.read_text() == before


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``squeue`` and ``scontrol`` on PATH as scripts: a cluster without accounting whose squeue appends its
    arguments to ``tmp_path/squeue.args`` and prints ``tmp_path/squeue.txt`` (``squeue-names.txt`` when asked
    by job name, ``squeue-reasons.txt`` when asked for reasons), or fails with the message of
    ``tmp_path/squeue.fail`` when that exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "scontrol": "echo 'AccountingStorageType   = accounting_storage/none'",
        "squeue": f'echo "$*" >> {tmp_path}/squeue.args\n'
        f"if [ -e {tmp_path}/squeue.fail ]; then cat {tmp_path}/squeue.fail >&2; exit 1; fi\n"
        f'case "$*" in *--name=*) cat {tmp_path}/squeue-names.txt;; *%r*) cat {tmp_path}/squeue-reasons.txt;; '
        f"*) cat {tmp_path}/squeue.txt;; esac",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_slurm_states_come_from_one_squeue_call_naming_the_jobs(fake_slurm):
    (fake_slurm / "squeue.txt").write_text("5_0|RUNNING|vm\n5_1|COMPLETED|vm\n5_[2-3]|PENDING|\n")
    assert slurm_jobs.slurm_states(["5_1", "5_0", "5_2", "5_3", "9"]) == {
        "5_0": "RUNNING",
        "5_1": "COMPLETED",
        "5_2": "PENDING",
        "5_3": "PENDING",
        "9": "PURGED",
    }
    assert slurm_jobs.slurm_states([]) == {}
    # The jobs by id, any user's (not --me): the arrays of the asked tasks.
    assert (fake_slurm / "squeue.args").read_text() == "--array --noheader --states=all --format=%i|%T|%N --jobs=5,9\n"


def test_a_suspended_job_runs_without_an_eta_and_a_queued_one_shows_why_it_waits(params_file, fake_slurm, capsys):
    params = load_params(params_file)
    runs = grids.expand(params, "g")[:2]
    grids.write_states(params, "g", [grids.CellState(run, "pending", f"7_{i}") for i, run in enumerate(runs)])
    runs[0].run_dir.mkdir(parents=True)
    (runs[0].run_dir / "train_log.csv").write_text("iteration,lr,loss,seconds\n1,0.1,2,30.0\n2,0.1,2,30.0\n")
    (fake_slurm / "squeue.txt").write_text("7_0|SUSPENDED|vm\n7_1|PENDING|\n")
    (fake_slurm / "squeue-reasons.txt").write_text("7_0|None\n7_1|ReqNodeNotAvail, UnavailableNodes:vm\n")
    assert main(["grid", "status", "g", "--params", str(params_file)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("grid g: 6 runs: 5 pending, 1 running, 0 done, 0 failed")
    assert rows[2].split("  ")[0:1] == ["fcn"] and " running " in rows[2]
    assert "2/600 it, suspended " in rows[2] and "ETA" not in rows[2]
    assert rows[2].endswith("suspended by SLURM: no progress until it is resumed")
    assert " pending " in rows[3] and rows[3].endswith("queued: ReqNodeNotAvail, UnavailableNodes:vm")
    assert "--format=%i|%r --jobs=7_1" in (fake_slurm / "squeue.args").read_text()  # only the waiting job


def test_jobs_squeue_no_longer_knows_at_all_are_purged(fake_slurm):
    (fake_slurm / "squeue.fail").write_text("slurm_load_jobs error: Invalid job id specified\n")
    assert slurm_jobs.slurm_states(["5_0", "9"]) == {"5_0": "PURGED", "9": "PURGED"}


@pytest.mark.parametrize(
    ("slurm_state", "reason"),
    [
        ("CANCELLED", "CANCELLED"),
        ("TIMEOUT", "TIMEOUT"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("NODE_FAIL", "NODE_FAIL"),
        ("PREEMPTED", "PREEMPTED"),
        ("BOOT_FAIL", "BOOT_FAIL"),
        ("PURGED", "lost (SLURM does not know the job)"),
        ("UNKNOWN", "lost (SLURM does not know the job)"),
        ("FAILED", "RuntimeError: boom"),
        ("COMPLETED", "COMPLETED without metrics.json"),
    ],
)
def test_a_job_that_ended_without_metrics_fails_with_the_slurm_state_as_reason(params, slurm_state, reason):
    run = grids.expand(params, "g")[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "error.txt").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n\n")
    state = grids.cell_state(run, None, ("7_0", "l", None), {"7_0": slurm_state}, expired=frozenset({"7_0"}))
    assert (state.state, state.reason, state.active, state.log) == ("failed", reason, False, "l")


def test_wait_fails_jobs_unknown_or_preempted_for_lost_polls_polls_and_waits_on_the_others(params, monkeypatch):
    runs = grids.expand(params, "g")[:3]
    for run in runs:
        run.run_dir.mkdir(parents=True)
    grids.write_states(params, "g", [grids.CellState(run, "pending", f"7_{i}", None) for i, run in enumerate(runs)])
    # 7_0 never listed; 7_1 PREEMPTED and not requeued; 7_2 preempted twice, then requeued (PENDING) and run.
    polls = [
        {"7_0": "UNKNOWN", "7_1": "PREEMPTED", "7_2": "PREEMPTED"},
        {"7_0": "UNKNOWN", "7_1": "PREEMPTED", "7_2": "PREEMPTED"},
        {"7_0": "UNKNOWN", "7_1": "PREEMPTED", "7_2": "PENDING"},
        {"7_0": "UNKNOWN", "7_1": "PREEMPTED"},
    ]
    asked = []

    def answers(job_ids):
        asked.append(sorted(job_ids))
        if len(asked) == 3:
            FakeTrainer()(runs[2].params, runs[2].run_dir)  # 7_2 runs and finishes before the 4th poll
        return polls[min(len(asked), len(polls)) - 1]

    monkeypatch.setattr(grids, "slurm_states", answers)
    monkeypatch.setattr(slurm_jobs, "LOST_POLLS", 4)
    monkeypatch.setattr(slurm_jobs.Patience.__init__, "__defaults__", (4,))
    assert [(s.state, s.reason, s.active) for s in grids.status(params, "g")[:3]] == [
        ("pending", "SLURM state UNKNOWN", True),
        ("pending", "SLURM state PREEMPTED", True),
        ("pending", "SLURM state PREEMPTED", True),
    ]  # one look cannot tell: pending, with the state
    asked.clear()
    with pytest.raises(submit.GridFailed) as caught:
        submit.wait(params, ["g"], poll_s=0.001)
    assert asked == [["7_0", "7_1", "7_2"]] * 3 + [["7_0", "7_1"]]  # the 4th poll fails 7_0 and 7_1
    lines = str(caught.value).splitlines()
    assert lines[1:3] == [
        "  g/fcn seed 0: failed (lost (SLURM does not know the job)), log (none)",
        "  g/fcn seed 1: failed (PREEMPTED), log (none)",
    ]
    entries = json.loads((params_runs(params) / "grids" / "g.json").read_text())["cells"]
    assert [(e["state"], e["reason"]) for e in entries[:3]] == [
        ("failed", "lost (SLURM does not know the job)"),
        ("failed", "PREEMPTED"),
        ("done", None),
    ]


def params_runs(params: Params) -> Path:
    return Path(params.grid.runs)


def test_wait_with_a_timeout_names_what_still_runs(params, params_file, monkeypatch, capsys):
    runs = grids.expand(params, "g")[:2]
    for run in runs:
        run.run_dir.mkdir(parents=True)
    grids.write_states(
        params,
        "g",
        [grids.CellState(runs[0], "pending", "7_0", None), grids.CellState(runs[1], "pending", "7_1", None)],
    )
    monkeypatch.setattr(grids, "slurm_states", lambda ids: {"7_0": "RUNNING", "7_1": "PENDING"})
    with pytest.raises(submit.WaitTimeout) as caught:
        submit.wait(params, ["g"], poll_s=0.01, timeout_s=0.02)
    assert str(caught.value) == (
        "grid g: timed out after 0.02 s with 2 run(s) not finished: "
        "g/fcn seed 0 (running, job 7_0), g/fcn seed 1 (pending, job 7_1)"
    )
    assert main(["grid", "wait", "g", "--params", str(params_file), "--poll", "0.01", "--timeout", "0.02"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"grar: error: {caught.value}"
    assert main(["grid", "wait", "g", "--params", str(params_file), "--timeout", "-1"]) == 2
    assert capsys.readouterr().err == "grar: error: --timeout -1.0: must be > 0 seconds\n"


def test_jobs_of_a_submit_killed_after_sbatch_are_found_by_their_name(params, fake_slurm):
    runs = grids.expand(params, "g")[:3]
    for run in runs:
        run.run_dir.mkdir(parents=True)
    token = {"name": "grar-g-0123abcd", "log_dir": "logs/g"}
    # What submit wrote before sbatch: tokens, no job ids (it was killed before writing them).
    grids.write_states(
        params,
        "g",
        [grids.CellState(run, "pending", submission={**token, "task": i}) for i, run in enumerate(runs[:2])],
    )
    (fake_slurm / "squeue-names.txt").write_text("12|0|grar-g-0123abcd\n12|1|grar-g-0123abcd\n13|0|other\n")
    (fake_slurm / "squeue.txt").write_text("12_0|RUNNING|vm\n12_1|PENDING|\n")
    states = grids.status(params, "g")[:3]
    assert [(s.state, s.job_id, s.log, s.active) for s in states] == [
        ("running", "12_0", "logs/g/12_0_0_log.err", True),
        ("pending", "12_1", "logs/g/12_1_0_log.err", True),
        ("pending", None, None, False),
    ]
    assert grids.runs_to_submit(states) == [runs[2]]  # the found jobs are not submitted again
    (fake_slurm / "squeue-names.txt").write_text("")  # never submitted (killed before sbatch), or long gone
    assert [(s.state, s.job_id, s.active) for s in grids.status(params, "g")[:2]] == [("pending", None, False)] * 2


def test_a_failing_squeue_is_an_error_and_wait_gives_up_after_some_attempts(params, fake_slurm, monkeypatch):
    (fake_slurm / "squeue.fail").write_text("slurm_load_jobs error: Unable to contact slurm controller\n")
    with pytest.raises(
        ClusterError,
        match=r"SLURM jobs 5_0: squeue failed \(slurm_load_jobs error: Unable to "
        r"contact slurm controller\); is the cluster up\?",
    ):
        slurm_jobs.slurm_states(["5_0"])
    run = grids.expand(params, "g")[0]
    run.run_dir.mkdir(parents=True)
    grids.write_states(params, "g", [grids.CellState(run, "pending", "5_0", None)])
    monkeypatch.setattr(slurm_jobs, "QUERY_ATTEMPTS", 3)
    with pytest.raises(ClusterError, match="squeue failed"):
        submit.wait(params, ["g"], poll_s=0.01)


def test_the_last_job_of_a_run_wins_and_a_queued_one_before_all(params, monkeypatch):
    run = grids.expand(params, "g")[0]
    records = [("7_0", "a", None), ("12_3", "b", None), ("9", "c", None)]
    assert grids.latest_job(records, {}) == ("12_3", "b", None)
    assert grids.latest_job(records, {"7_0": "PENDING", "12_3": "FAILED", "9": "COMPLETED"}) == ("7_0", "a", None)
    assert grids.cell_state(run, None, ("12_3", "b", None), {"12_3": "CANCELLED"}).state == "failed"


def test_runs_queued_in_slurm_are_not_submitted_again(params, tmp_path, monkeypatch):
    runs = grids.expand(params, "h")
    for run in runs[0], runs[2]:
        run.run_dir.mkdir(parents=True)  # as submit does: the folder is claimed at submission
    grids.write_states(
        params,
        "h",
        [grids.CellState(runs[0], "pending", "7_0", "l0"), grids.CellState(runs[2], "pending", "7_2", "l2")],
    )
    monkeypatch.setattr(grids, "slurm_states", lambda ids: {"7_0": "RUNNING", "7_2": "FAILED"})
    # Grid g shares fcn seed 0 with h: its job (recorded in h's index) runs it; failed danet of h is not in g.
    submission = submit.submit(params, "g", FakeTrainer())
    assert submission.ran == 5
    assert [(s.state, s.job_id) for s in submission.states][:2] == [("running", "7_0"), ("done", None)]


def test_shared_runs_of_several_grids_train_once(params):
    submit.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    states = grids.status_all(params, ["g", "h"])
    assert all(s.state == "done" for grid_states in states.values() for s in grid_states)
    assert [calls(s) for s in states["h"]] == [1, 1, 1, 1]
    assert states["h"][0].run.run_dir == states["g"][0].run.run_dir


def test_a_grid_with_shared_overrides_trains_the_configs_other_grids_train_once(tmp_path):
    shared = {
        "set": {"model.head": "grar", "train.loss.sr": 0.5},
        "cells": [
            {"name": "base", "set": {"model.head": "fcn", "train.loss.sr": 0.2}},  # = g's fcn
            {"name": "sr", "set": {}},  # = g's grar
            {"name": "sr-conv", "set": {"model.grar.edges": "conv"}},
        ],
    }
    params = grid_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"], "t": shared}})
    assert params.train.loss.sr == 0.2
    t = grids.expand(params, "t")
    assert [(run.params.model.head, run.params.train.loss.sr, run.params.model.grar.edges) for run in t[::2]] == [
        ("fcn", 0.2, "graph"),
        ("grar", 0.5, "graph"),
        ("grar", 0.5, "conv"),
    ]
    submit.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    states = grids.status_all(params, ["g", "t"])
    assert [s.run.run_dir for s in states["t"][:4]] == [s.run.run_dir for s in states["g"][0:2] + states["g"][4:6]]
    assert [calls(s) for s in states["t"]] == [1] * 6
    assert len({s.run.run_dir for grid_states in states.values() for s in grid_states}) == 8  # 6 of g + sr-conv x 2


def test_paper_table4_is_table1s_r101_and_resnest101_runs(tmp_path):
    paper = with_overrides(
        load_params(ROOT / "profiles" / "paper.yaml"),
        {"grid.runs": str(tmp_path / "runs"), "data.root": str(tmp_path / "data")},
    )
    claimed: dict[str, Path] = {}
    table1 = {run.cell: run for run in grids.expand(paper, "table1", claimed)}
    table4 = grids.expand(paper, "table4", claimed)
    assert [(run.cell, run.config_hash, run.run_dir) for run in table4] == [
        (cell, table1[cell].config_hash, table1[cell].run_dir) for cell in ("r101-grar-sr", "resnest101-grar-sr")
    ]
    assert table1["r101-grar-sr"].params == table4[0].params
    others = {run.config_hash for name in ("table5", "table6") for run in grids.expand(paper, name, claimed)}
    assert len(others) == 5 and not others & {run.config_hash for run in table1.values()}  # table5: + head x1
    sweep = {run.cell: run for run in grids.expand(paper, "sr-weight", claimed)}
    assert sweep["w-sr-0.2"].run_dir == table1["r50-grar-sr"].run_dir  # the sweep's 0.2 is Table 1's run


GATED_TRAINER = """
import sys, time, yaml
from pathlib import Path
from test_grids import FakeTrainer
from pipeline.cluster import grids, index, slurm_jobs, submit
from pipeline.config import validate

params, gate = validate(yaml.safe_load(Path(sys.argv[1]).read_text())), Path(sys.argv[2])

class Gated(FakeTrainer):
    # Training fcn waits for the test's go-ahead, so the two processes overlap on the shared runs.
    def __call__(self, params, run_dir):
        if params.model.head == "fcn":
            (gate / f"started-{params.seed}").touch()
            deadline = time.monotonic() + 120
            while not (gate / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().__call__(params, run_dir)

submit.train_grids(params, poll_s=0.05, cell_fn=Gated())
print(*(f"{s.run.cell}/{s.run.seed}:{s.state}" for states in grids.status_all(params, list(params.grid.grids)).values()
        for s in states))
"""


def test_two_processes_training_overlapping_grids_train_each_shared_run_once(tmp_path):
    """Two ``train_grids`` (local executor) at once, grids sharing fcn: each run trains once, both end done."""
    # b names the shared config fcn-again: the two processes expand it to two folders, one is settled on.
    grids = {"a": {"a": [GRIDS["g"][0], GRIDS["g"][1]]}, "b": {"b": GRIDS["h"]}}
    processes = {}
    for name, grid_set in grids.items():
        params_file = tmp_path / f"{name}.yaml"
        params = grid_params(tmp_path, **{"grid.grids": grid_set})
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
        with open(tmp_path / f"{name}.err", "w") as err:
            processes[name] = subprocess.Popen(
                [sys.executable, "-c", GATED_TRAINER, str(params_file), str(tmp_path)],
                cwd=Path(__file__).parent,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
    try:
        deadline = time.monotonic() + 120
        # fcn seed 0 and seed 1 started: one in each process (a process blocks in its first fcn), and the
        # process that started the second one skipped the first, which the other one trains.
        while not ((tmp_path / "started-0").exists() and (tmp_path / "started-1").exists()):
            assert time.monotonic() < deadline, "the two processes did not both start training"
            assert all(process.poll() is None for process in processes.values())
            time.sleep(0.01)
    finally:
        (tmp_path / "release").touch()
    outputs = {name: process.communicate(timeout=120)[0].split() for name, process in processes.items()}
    assert [process.returncode for process in processes.values()] == [0, 0], [
        (tmp_path / f"{name}.err").read_text() for name in processes
    ]
    assert outputs == {
        "a": ["fcn/0:done", "fcn/1:done", "ppm/0:done", "ppm/1:done"],
        "b": ["fcn-again/0:done", "fcn-again/1:done", "danet/0:done", "danet/1:done"],
    }
    runs = sorted((tmp_path / "runs").glob("*-s*"))
    assert [run.name.split("-")[0] for run in runs] == ["danet", "danet", "fcn", "fcn", "ppm", "ppm"]
    assert [(run / "calls.txt").read_text().count("\n") for run in runs] == [1] * 6
    assert sorted(path.name[:10] for path in (tmp_path / "runs" / ".folders").iterdir()) == sorted(
        run.name[-10:] for run in runs
    )  # every config's folder, named once
    skips = "".join((tmp_path / f"{name}.err").read_text() for name in processes).count("running elsewhere (")
    assert skips in (1, 2)


def test_a_run_another_process_trains_is_running_skipped_by_submit_and_pending_once_its_holder_died(params, capsys):
    run = grids.expand(params, "h")[0]
    holder = subprocess.Popen(["sleep", "60"])
    me = lock.Holder.me()
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "grar.lock.0").write_text(
        json.dumps({"host": me.host, "pidns": me.pidns, "pid": holder.pid, "job": "", "since": 0.0, "token": "t"})
    )
    (run.run_dir / "error.txt").write_text("RuntimeError: an earlier attempt\n")  # failed before, training again
    try:
        elsewhere = f"running elsewhere ({me.host}, pid {holder.pid}, since 1970-01-01 00:00:00 UTC)"
        (state, *_) = grids.status(params, "h")
        assert (state.state, state.active, state.reason) == ("running", True, elsewhere)
        submission = submit.submit(params, "h", FakeTrainer())
        assert submission.ran == 3 and calls(submission.states[0]) == 0
        assert [s.state for s in submission.states] == ["running", "done", "done", "done"]
        assert f"h/fcn-again seed 0: skipped, {elsewhere}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    (state, *_) = grids.status(params, "h")  # its holder died: failed as before, and submitted again
    assert (state.state, state.active, state.reason) == ("failed", False, "RuntimeError: an earlier attempt")
    assert submit.submit(params, "h", FakeTrainer()).ran == 1 and calls(state) == 1


def test_wait_names_every_failed_run_with_its_log(params, tmp_path):
    submit.submit(params, "g", FakeTrainer(fail=frozenset({"grar"})))
    with pytest.raises(submit.GridFailed) as caught:
        submit.wait(params, ["g", "h"], poll_s=0.01)
    lines = str(caught.value).splitlines()
    assert lines[0] == "4 run(s) not done:"
    for seed, line in enumerate(lines[1:3]):
        assert line.startswith(f"  g/grar seed {seed}: failed (RuntimeError: grar exploded), log ")
        assert line.endswith("error.txt")
    assert lines[3:] == [f"  h/danet seed {seed}: not submitted (grar grid submit h)" for seed in (0, 1)]
    assert json.loads((tmp_path / "runs" / "grids" / "h.json").read_text())["cells"][0]["state"] == "done"


def test_cell_job_checkpoint_is_the_same_call_and_pickles(params, tmp_path):
    job = submit.CellJob(FakeTrainer())
    delayed = job.checkpoint(params, tmp_path / "run")
    assert delayed.function is job and delayed.args == (params, tmp_path / "run") and delayed.kwargs == {}
    again = pickle.loads(pickle.dumps(delayed))
    assert again.function.fn == FakeTrainer() and again.args[0] == params
    assert again.result()["miou"] == HEAD_MIOU[params.model.head] and (tmp_path / "run" / "metrics.json").exists()


def test_the_debug_executor_runs_every_cell_here(tmp_path):
    params = grid_params(tmp_path, **{"executor.kind": "debug"})
    submission = submit.submit(params, "h", FakeTrainer())
    assert submission.job_ids == [] and submission.ran == 4
    assert [s.state for s in submission.states] == ["done"] * 4
    assert (tmp_path / "logs" / "h").is_dir()  # submitit's folder of the grid's jobs


# --- the evaluate stage ----------------------------------------------------------------------------


def test_collect_writes_mean_and_per_seed_scores_and_curves(tmp_path):
    params = grid_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:2]}})
    submit.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
    collect_grids(params)
    table = json.loads((tmp_path / "scores" / "g.json").read_text())
    assert list(table) == ["fcn", "ppm"]
    fcn = table["fcn"]
    assert (fcn["miou"], fcn["miou_ms"], fcn["pixel_accuracy"]) == (0.505, 0.63, 0.625)  # (0.50 + 0.51) / 2, ...
    assert fcn["seeds"]["1"] == {
        "miou": 0.51,
        "miou_ms": 0.635,
        "pixel_accuracy": 0.75,
        "run_dir": str(grids.expand(params, "g")[1].run_dir),
    }
    assert "vs_fcn" not in fcn and table["ppm"]["vs_fcn"]["baseline"] == "fcn"
    assert table["ppm"]["vs_fcn"]["miou"]["none"].startswith(
        "no interval: 4 run(s) without confusion_images.npz, e.g. "
    )
    assert (tmp_path / "plots" / "g" / "ppm.csv").read_text() == "iteration,loss,lr\n1,3.5,0.03\n2,1.5,0.01\n"
    assert sorted(p.relative_to(tmp_path / "metrics").as_posix() for p in (tmp_path / "metrics").rglob("*.json")) == [
        "g/fcn.json",
        "g/ppm.json",
    ]
    assert json.loads((tmp_path / "metrics" / "g" / "fcn.json").read_text()) == {"miou": 50.5, "miou_ms": 63.0}
    assert json.loads((tmp_path / "metrics" / "g" / "ppm.json").read_text()) == {
        "miou": 25.5,
        "miou_ms": 38.0,
        "vs_fcn": None,
        "vs_fcn_low": None,
        "vs_fcn_high": None,
    }


def test_collect_states_each_cells_interval_against_the_fcn(tmp_path):
    params = grid_params(tmp_path, **{"grid.bootstrap": 1000, "grid.grids": {"g": GRIDS["g"]}})
    submit.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer(per_image=True))
    collect_grids(params)
    metrics = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "metrics" / "g").iterdir()}
    assert set(metrics) == {"fcn", "ppm", "grar"} and set(metrics["fcn"]) == {"miou", "miou_ms"}
    # ppm − fcn per seed: 58.33 − 100 and 0 − 100; the seeds resampled: the interval spans both
    d0, d1 = round(175 / 3 - 100, 4), -100.0
    assert (metrics["ppm"]["vs_fcn"], metrics["ppm"]["vs_fcn_low"], metrics["ppm"]["vs_fcn_high"]) == (
        round((175 / 3 - 200) / 2, 4),
        d1,
        d0,
    )
    assert (metrics["grar"]["vs_fcn"], metrics["grar"]["vs_fcn_low"], metrics["grar"]["vs_fcn_high"]) == (0, 0, 0)
    details = json.loads((tmp_path / "scores" / "g.json").read_text())
    grar0 = next(run.run_dir for run in grids.expand(params, "g") if (run.cell, run.seed) == ("grar", 0))
    assert details["grar"]["vs_fcn"]["ms"] == {
        "none": f"no interval: 4 run(s) without confusion_images_ms.npz, e.g. "
        f"{grar0} (evaluated before per-image confusions, or without "
        "multi-scale)"
    }


def test_collect_without_multi_scale_and_with_a_missing_run(tmp_path):
    params = grid_params(tmp_path, **{"grid.grids": {"g": GRIDS["g"][:1]}, "eval.multi_scale": False})
    with pytest.raises(DataError, match=r"g\.json: no grid index; train the grid first"):
        collect_grids(params)
    submit.train_grids(params, poll_s=0.01, cell_fn=FakeTrainer())
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
    assert out[:4] == [
        "g: 3 cells x 2 seed(s) [0, 1]",
        "  fcn   model.head=fcn",
        "  ppm   model.head=ppm",
        "  grar  model.head=grar train.loss.sr=0.5",
    ]
    assert main(["grid", "status", "g", "--params", str(params_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("grid g: 6 runs: 6 pending, 0 running, 0 done, 0 failed (index ")
    assert out[1].split() == [
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
    assert out[2].split() == ["fcn", "0", "pending", "-", "-", "-", "-"]


def test_grid_list_shows_each_cells_effective_overrides(tmp_path, capsys):
    paper = str(ROOT / "profiles" / "paper.yaml")
    assert main(["grid", "list", "--params", paper]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if not line.startswith("  ")]
    assert headers == [
        "table1: 5 cells x 1 seed(s) [0]",
        "table2: 9 cells x 1 seed(s) [0]",
        "table3: 7 cells x 1 seed(s) [0]",
        "table4: 2 cells x 1 seed(s) [0]",
        "table5: 3 cells x 1 seed(s) [0]",
        "table6: 2 cells x 1 seed(s) [0]",
        "sr-weight: 3 cells x 1 seed(s) [0]",
    ]
    assert out[1] == "  r50-fcn             model.head=fcn model.backbone=resnet50 train.loss.sr=0.0"
    assert out[-5] == "  resnest101-grar-sr  train.dataset=coco_stuff model.head=grar model.backbone=resnest101"
    assert out[-1] == "  w-sr-0.4  model.backbone=resnet50 model.head=grar train.loss.sr=0.4"


def test_grid_submit_and_wait_exit_codes(params_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(submit, "run_cell", FakeTrainer(fail=frozenset({"fcn"})))
    assert main(["grid", "submit", "h", "--params", str(params_file)]) == 1
    captured = capsys.readouterr()
    error = captured.err.split("grar: error: ")[1]
    assert error.startswith("2 run(s) not done:\n  h/fcn-again seed 0: failed (RuntimeError: fcn exploded), log ")
    assert "danet" not in error
    rows = [line.split() for line in captured.out.splitlines()[2:]]
    assert [row[:5] for row in rows] == [
        ["fcn-again", "0", "failed", "-", "-"],
        ["fcn-again", "1", "failed", "-", "-"],
        ["danet", "0", "done", "-", "12.50"],
        ["danet", "1", "done", "-", "13.50"],
    ]
    assert main(["grid", "wait", "h", "--params", str(params_file), "--poll", "0.01"]) == 1
    assert "h/fcn-again seed 1: failed" in capsys.readouterr().err
    monkeypatch.setattr(submit, "run_cell", FakeTrainer())
    assert main(["grid", "submit", "h", "--params", str(params_file)]) == 0
    assert main(["grid", "wait", "h", "--params", str(params_file)]) == 0
    assert "4 done, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["grid", "status", "nope"], "grid 'nope' not in grid.grids; grids: g, h"),
        (["grid", "wait"], "grar grid wait needs a grid NAME; grids: g, h"),
        (["grid", "wait", "g", "--poll", "0"], "--poll 0.0: must be > 0 seconds"),
    ],
)
def test_grid_argument_errors_exit_2_with_one_line(params_file, capsys, argv, message):
    assert main([*argv, "--params", str(params_file)]) == 2
    assert capsys.readouterr().err == f"grar: error: {message}\n"


def test_grid_status_does_not_import_torch():
    """``grar grid status`` answers in a fraction of a second: finding and naming runs needs no torch."""
    code = (
        "import sys, pipeline.cluster.grids, pipeline.scores.grid_scores, pipeline.cli.grid; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_a_job_that_lost_its_run_writes_no_error_txt_into_it(tmp_path):
    params = grid_params(tmp_path)
    run = grids.expand(params, "g")[0]

    def lost(params: Params, run_dir: Path) -> dict:
        raise lock.LockLost(str(run_dir), run_dir / "grar.lock.0", None)

    with pytest.raises(lock.LockLost):
        submit.CellJob(lost)(run.params, run.run_dir)
    assert not (run.run_dir / "error.txt").exists()


def test_a_run_that_failed_on_a_full_disk_says_so_as_its_reason(tmp_path, monkeypatch, capsys):
    """The reason is the failure's one line from error.txt, or from the job's log when error.txt cannot be written."""
    params = grid_params(tmp_path)
    run = grids.expand(params, "g")[0]
    full = DataError(f"{run.run_dir}/checkpoint.pt: checkpoint not written: No space left on device")

    def disk_full(params: Params, run_dir: Path) -> dict:
        raise full

    with pytest.raises(DataError):
        submit.CellJob(disk_full)(run.params, run.run_dir)
    assert grids.failure_reason(run, "FAILED") == str(full)
    (run.run_dir / "error.txt").unlink()
    capsys.readouterr()

    def no_space(target, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(submit, "write_text_atomic", no_space)
    with pytest.raises(DataError):
        submit.CellJob(disk_full)(run.params, run.run_dir)
    log = tmp_path / "1_0_log.err"
    log.write_text(
        capsys.readouterr().err + "Traceback (most recent call last):\n  ...\nsubmitit.core.utils.FailedJobError\n"
    )
    assert not (run.run_dir / "error.txt").exists()
    assert grids.failure_reason(run, "FAILED", str(log)) == str(full)
    assert f"grar: error: {run.run_dir}/error.txt not written: {run.run_dir}/error.txt: No space left on device" in (
        log.read_text()
    )


def test_an_unreadable_grid_index_is_skipped_by_status_and_rebuilt_by_the_next_wait(params_file, capsys):
    params = load_params(params_file)
    runs = grids.expand(params, "g")
    FakeTrainer()(runs[0].params, runs[0].run_dir)  # fcn seed 0 is done
    index = Path(params.grid.runs) / "grids" / "g.json"
    index.parent.mkdir(parents=True)
    index.write_text('{"grid": "g", "cells": [')  # truncated
    assert main(["grid", "status", "g", "--params", str(params_file)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"grar: warning: {index}: cannot read the grid index (Expecting value: line 1 column 25 (char 24)); "
        "`grar grid wait g` (or submit) rebuilds it from the run folders, keeping this file beside it; the SLURM "
        "jobs it records are not followed\n"
    )
    assert out.splitlines()[2].split()[:3] == ["fcn", "0", "done"]
    assert index.read_text() == '{"grid": "g", "cells": ['  # status writes nothing
    grids.record(params, ["g"])  # what every poll of `grar grid wait` does
    (kept,) = index.parent.glob("g.json.corrupt-*")
    assert kept.read_text() == '{"grid": "g", "cells": [' and "rebuilt from the run folders" in capsys.readouterr().err
    assert [entry["state"] for entry in json.loads(index.read_text())["cells"]] == ["done"] + ["pending"] * 5


def test_a_job_whose_trainer_was_killed_outside_python_says_so(params, tmp_path):
    run = grids.expand(params, "g")[0]
    log = tmp_path / "9_0_log.err"
    log.write_text("iteration 20/200 loss 2.1\nsrun: error: vm: task 0: Killed\nsrun: Force Terminated StepId=9.0\n")
    assert grids.failure_reason(run, "FAILED", str(log)) == "FAILED (task 0 on vm: Killed)"
