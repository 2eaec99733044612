"""The run identity (``pipeline.rundir``): keys added after runs existed leave those runs' identity alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cluster.grids import expand
from pipeline.config import ADDED_KEYS, default_of, validate, with_overrides
from pipeline.rundir import NEUTRAL, config_hash, run_identity

REPO = Path(__file__).resolve().parents[2]
# Every key grar added after embedded runs existed, as a dotted path (a schedule's head_lr_mult under any dataset).
ADDED = {".".join(path) for path in ADDED_KEYS} | {"train.schedules.*.head_lr_mult"}


def dotted(mapping: dict, prefix: str = "") -> set[str]:
    """Every key path of a nested mapping, dataset names of train.schedules written as *."""
    paths = set()
    for key, value in mapping.items():
        name = "*" if prefix == "train.schedules." else key
        paths.add(prefix + name)
        if isinstance(value, dict):
            paths |= dotted(value, f"{prefix}{name}.")
    return paths


@pytest.fixture
def embedded(tmp_path):
    """The embedded profile as params.yaml holds it (with the added keys written out), runs under tmp_path."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["grid"]["runs"] = str(tmp_path / "runs")
    return raw


def test_the_embedded_profile_writes_every_added_key_at_its_default(embedded):
    params = validate(embedded)
    assert {path: default_of(path) for path in ADDED_KEYS} == NEUTRAL
    assert NEUTRAL == {
        ("train", "augment", "base_size"): None,
        ("train", "precision"): "bf16",
        ("eval", "fusion"): "softmax_mean",
        ("eval", "align_corners"): False,
    }
    for path, value in NEUTRAL.items():
        section = embedded
        for part in path:
            section = section[part]  # written out in the profile (KeyError otherwise)
        assert section == value
    assert all(schedule.head_lr_mult is None for schedule in params.train.schedules.values())


def test_every_embedded_grid_run_hashes_what_grar_hashed_before_the_added_keys(embedded):
    """The main job's runs keep their folders: no added key reaches their identity, and a params file without
    the added keys (an older one) is the same runs."""
    params = validate(embedded)
    older = yaml.safe_load(yaml.safe_dump(embedded))
    del older["train"]["augment"]["base_size"], older["train"]["precision"]
    del older["eval"]["fusion"], older["eval"]["align_corners"]
    runs = [run for grid in params.grid.grids for run in expand(params, grid)]
    older_runs = [run for grid in params.grid.grids for run in expand(validate(older), grid)]
    assert len(runs) == (3 + 9 + 6) * 2  # tables 1-3, two seeds
    for run, old in zip(runs, older_runs):
        assert not dotted(run_identity(run.params)) & ADDED, (run.grid, run.cell)
        assert run.config_hash == old.config_hash, (run.grid, run.cell)


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("train.augment.base_size", 64, ("train", "augment", "base_size")),
        ("train.precision", "fp32", ("train", "precision")),
        ("eval.fusion", "exp_sum", ("eval", "fusion")),
        ("eval.align_corners", True, ("eval", "align_corners")),
        ("train.schedules.embedded.head_lr_mult", 3.0, ("train", "schedules", "embedded", "head_lr_mult")),
    ],
)
def test_an_added_key_away_from_its_default_is_part_of_the_identity(embedded, key, value, where):
    params = validate(embedded)
    changed = with_overrides(params, {key: value})
    identity = run_identity(changed)
    for part in where:
        identity = identity[part]
    assert identity == value
    assert config_hash(changed) != config_hash(params)
    # and back at the default, the identity is the unchanged run's again
    default = None if where[1] == "schedules" else NEUTRAL[where]
    assert config_hash(with_overrides(changed, {key: default})) == config_hash(params)
