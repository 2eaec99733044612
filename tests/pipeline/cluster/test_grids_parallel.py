"""The local executor's side-by-side runs (``executor.parallel``) and a run's thread count (``train.threads``).

Real tiny runs: trained two at a time in spawned worker processes they end with
the same metrics and weights as trained one after another in this process, and
the thread count is part of a run's identity.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cluster import grids, submit
from pipeline.config import with_overrides
from pipeline.rundir import config_hash
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.loop import cpu_threads


def tiny_runs(params, root, seeds=(0, 1)):
    """One grid ``Run`` per seed of the tiny project, folders under ``root``."""
    runs = []
    for seed in seeds:
        run_params = with_overrides(
            params, {"seed": seed, "train.threads": 1, "model.head": "fcn", "train.loss.sr": 0.0}
        )
        runs.append(grids.Run("g", "fcn", seed, run_params, config_hash(run_params), root / f"fcn-s{seed}"))
    return runs


def test_runs_side_by_side_equal_runs_one_after_another(tiny_project, tmp_path):
    outcomes = {}
    for parallel in (1, 2):
        runs = tiny_runs(tiny_project, tmp_path / f"parallel{parallel}")
        outcomes[parallel] = {
            run.seed: (outcome, detail) for run, outcome, detail in submit.run_locally(submit.CellJob(), runs, parallel)
        }
        assert [outcome for outcome, _ in outcomes[parallel].values()] == ["done", "done"], outcomes[parallel]
    for seed in (0, 1):
        one, two = (outcomes[parallel][seed][1] for parallel in (1, 2))
        assert (one["miou"], one["ms"]["miou"], one["per_class_iou"]) == (
            two["miou"],
            two["ms"]["miou"],
            two["per_class_iou"],
        )
        assert one["provenance"]["threads"] == two["provenance"]["threads"] == 1
        states = [
            load_checkpoint(tmp_path / f"parallel{parallel}" / f"fcn-s{seed}" / "checkpoint.pt")["model"]
            for parallel in (1, 2)
        ]
        assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert outcomes[1][0][1]["miou"] != outcomes[1][1][1]["miou"]  # the seeds differ: the comparison can fail


def test_a_failing_run_in_a_worker_is_reported_and_the_others_go_on(tiny_project, tmp_path):
    good, bad = tiny_runs(tiny_project, tmp_path)
    bad = grids.Run(
        bad.grid,
        bad.cell,
        bad.seed,
        with_overrides(bad.params, {"data.root": str(tmp_path / "none")}),
        bad.config_hash,
        bad.run_dir,
    )
    results = {
        run.seed: (outcome, detail) for run, outcome, detail in submit.run_locally(submit.CellJob(), [good, bad], 2)
    }
    assert results[0][0] == "done"
    assert results[1][0] == "failed" and results[1][1].startswith("DataError: ")
    assert (bad.run_dir / "error.txt").exists()
    assert json.loads((good.run_dir / "metrics.json").read_text())["miou"] == results[0][1]["miou"]


def test_threads_are_part_of_the_run_identity(tiny_project):
    one, two = (with_overrides(tiny_project, {"train.threads": threads}) for threads in (1, 2))
    assert config_hash(one) != config_hash(two)


@pytest.mark.parametrize("threads", [1, 3])
def test_cpu_threads_sets_and_restores(tiny_project, threads):
    before = torch.get_num_threads()
    with cpu_threads(with_overrides(tiny_project, {"train.threads": threads})) as inside:
        assert inside == torch.get_num_threads() == threads
    assert torch.get_num_threads() == before
    with cpu_threads(with_overrides(tiny_project, {"train.threads": None})) as inside:  # outside SLURM: torch's
        assert inside == before
