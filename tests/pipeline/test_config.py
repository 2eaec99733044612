"""The validated config tree: every rule rejects with exit code 2 and names the key."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from pipeline.config import FolderDatasetConfig, Params, hw, load_params, validate, with_overrides
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"


def raw_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def error_for(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert info.value.exit_code == 2
    return str(info.value)


def test_default_params_is_the_embedded_profile():
    assert PARAMS.read_bytes() == (ROOT / "profiles" / "embedded.yaml").read_bytes()
    params = load_params(PARAMS)
    assert params.profile == "embedded"
    assert params.model.backbone == "tiny_resnet"
    assert params.data.datasets == ("embedded",)


def test_paper_profile_holds_the_paper_setup():
    params = load_params(ROOT / "profiles" / "paper.yaml")
    assert params.model.backbone == "resnet101"
    assert (params.model.stem, params.model.imagenet_file) == ("deep", "resnet101s")  # PyTorch-Encoding's resnet101s
    # trains and evaluates at one size reference, PyTorch-Encoding's base size
    assert params.train.augment.base_size == params.eval.base_size == 520
    assert (params.eval.fusion, params.eval.align_corners, params.train.precision) == ("exp_sum", True, "fp32")
    assert {name: (s.lr, s.head_lr_mult) for name, s in params.train.schedules.items() if name != "embedded"} == {
        "pascal_context": (0.001, 10.0),
        "ade20k": (0.01, 10.0),
        "coco_stuff": (0.001, 10.0),
    }
    assert params.train.crop_size == 544
    assert params.train.batch_size == 16
    assert params.train.momentum == 0.9
    assert params.train.weight_decay == 0.0001
    assert params.train.poly_power == 0.9
    assert params.executor.kind == "slurm"
    assert set(params.data.datasets) == {"pascal_context", "ade20k", "coco_stuff"}


def test_paper_profile_grids_name_no_weight_file_and_cover_tables_1_to_6():
    text = (ROOT / "profiles" / "paper.yaml").read_text()
    params = load_params(ROOT / "profiles" / "paper.yaml")
    assert text.count("weights/") == len(params.weights.files) == 7  # each published file, once: weights.files
    assert params.model.pretrained == "imagenet"
    grids = params.grid.grids
    assert list(grids) == [f"table{n}" for n in range(1, 7)] + ["sr-weight"]
    assert not any(
        "model.pretrained" in overrides for spec in grids.values() for overrides in spec.overrides().values()
    )
    assert list(grids["table1"].overrides()) == [
        "r50-fcn",
        "r50-grar",
        "r50-grar-sr",
        "r101-grar-sr",
        "resnest101-grar-sr",
    ]
    for number, dataset in ((4, "pascal_context"), (5, "ade20k"), (6, "coco_stuff")):
        cells = {
            cell: with_overrides(params, overrides) for cell, overrides in grids[f"table{number}"].overrides().items()
        }
        assert list(cells)[:2] == ["r101-grar-sr", "resnest101-grar-sr"]
        assert [
            (p.train.dataset, p.model.backbone, p.model.head, p.train.loss.sr, p.eval.multi_scale)
            for p in list(cells.values())[:2]
        ] == [(dataset, "resnet101", "grar", 0.2, True), (dataset, "resnest101", "grar", 0.2, True)]
        assert cells["r101-grar-sr"].train.schedule == params.train.schedules[dataset]
        assert cells["r101-grar-sr"].train.head_mult == 10.0  # PyTorch-Encoding's trainer, every dataset
    # Table 5's third cell: ADE20K's lr as mmsegmentation uses it, no head multiplier; otherwise its r101 cell
    other = with_overrides(params, grids["table5"].overrides()["r101-grar-sr-head-x1"])
    assert (other.train.dataset, other.train.schedule.lr, other.train.head_mult) == ("ade20k", 0.01, 1.0)
    same = with_overrides(params, grids["table5"].overrides()["r101-grar-sr"])
    assert other.model_copy(update={"train": same.train}) == same
    # the w_sr sweep: Table 1's R50 GRAr + SR-Loss row at three weights, 0.2 being that row itself
    sweep = {cell: with_overrides(params, o) for cell, o in grids["sr-weight"].overrides().items()}
    assert {cell: p.train.loss.sr for cell, p in sweep.items()} == {"w-sr-0.1": 0.1, "w-sr-0.2": 0.2, "w-sr-0.4": 0.4}
    assert sweep["w-sr-0.2"] == with_overrides(params, grids["table1"].overrides()["r50-grar-sr"])


def test_unknown_top_level_key_names_it_and_lists_sections():
    raw = raw_params()
    raw["trian"] = {}
    message = error_for(raw)
    assert "unknown key trian" in message
    assert "allowed keys: profile, seed, data, stats, model, train" in message


def test_unknown_nested_key_names_its_path_and_siblings():
    raw = raw_params()
    raw["train"]["lrr"] = 0.1
    message = error_for(raw)
    assert "unknown key train.lrr" in message
    assert "schedules," in message and "crop_size" in message


def test_wrong_type_names_key_and_expected_type():
    raw = raw_params()
    raw["train"]["crop_size"] = "big"
    message = error_for(raw)
    assert message.endswith("train.crop_size: input should be a valid integer (got 'big'); expected int | [int, int]")
    raw["model"]["pretrained"] = 3
    raw["train"]["crop_size"] = 64
    assert error_for(raw).endswith("model.pretrained: input should be a valid string (got 3); expected str | null")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([32, 0], "train.crop_size.1: must be > 0 (got 0)"),
        ([1, 2, 3], "train.crop_size: must hold at most 2 item(s) (got [1, 2, 3])"),
        ([32], "train.crop_size: item 1 is missing; expected int | [int, int]"),
    ],
)
def test_a_size_pair_reports_the_pair_member_error(value, expected):
    raw = raw_params()
    raw["train"]["crop_size"] = value
    assert error_for(raw).endswith(expected)


def test_sizes_are_an_int_or_height_width():
    raw = raw_params()
    raw["train"]["crop_size"] = [48, 160]
    raw["data"]["embedded"]["image_size"] = 40
    params = validate(raw)
    assert (params.train.crop_size, params.data.embedded.image_size) == ((48, 160), 40)
    assert (hw(params.train.crop_size), hw(params.data.embedded.image_size)) == ((48, 160), (40, 40))
    raw["data"]["embedded"]["image_size"] = [8, 64]
    assert error_for(raw).endswith("data.embedded.image_size.0: must be >= 16 (got 8)")


def test_bool_is_not_an_int_and_float_is_not_an_int():
    raw = raw_params()
    raw["train"]["iterations"] = True
    assert "train.iterations" in error_for(raw)
    raw = raw_params()
    raw["train"]["iterations"] = 2.5
    assert "train.iterations" in error_for(raw)


def test_int_is_accepted_where_a_float_is_expected():
    raw = raw_params()
    raw["train"]["schedules"]["embedded"]["lr"] = 1
    assert validate(raw).train.schedule.lr == 1.0


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "poly_power", -0.1, "train.poly_power: must be > 0"),
        ("train", "poly_power", 0, "train.poly_power: must be > 0"),
        ("train", "head_lr_mult", 0, "train.head_lr_mult: must be > 0"),
        ("train", "crop_size", 0, "train.crop_size: must be > 0"),
        ("train", "momentum", 1.0, "train.momentum: must be < 1"),
        ("train", "weight_decay", -1e-4, "train.weight_decay: must be >= 0"),
        ("train", "batch_size", -3, "train.batch_size: must be > 0"),
        ("seed", None, -1, "seed: must be >= 0"),
    ],
)
def test_out_of_range_values_name_key_and_bound(section, key, value, expected):
    raw = raw_params()
    if key is None:
        raw[section] = value
    else:
        raw[section][key] = value
    assert expected in error_for(raw)


def test_unknown_backbone_lists_the_allowed_names():
    raw = raw_params()
    raw["model"]["backbone"] = "resnet5"
    message = error_for(raw)
    assert "model.backbone: unknown value 'resnet5'" in message
    for name in ("tiny_resnet", "resnet50", "resnet101", "resnest101"):
        assert name in message


def test_unknown_dataset_in_list_names_the_item():
    raw = raw_params()
    raw["data"]["datasets"] = ["embedded", "cityscapes"]
    assert error_for(raw).endswith(
        "data.datasets: unknown dataset 'cityscapes'; built-in: embedded, ade20k, pascal_context, coco_stuff; "
        "add your own under data.folders"
    )


def test_folder_datasets_are_known_names():
    raw = raw_params()
    raw["data"]["folders"] = {"mine": "/data/mine", "theirs": {"path": "/data/theirs", "ignore": 0, "remap": {3: 1}}}
    raw["data"]["datasets"] = ["embedded", "mine", "theirs"]
    raw["train"]["dataset"] = "mine"
    raw["train"]["schedules"]["mine"] = {"lr": 0.01, "iterations": 10}
    params = validate(raw)
    assert params.data.names == ("embedded", "ade20k", "pascal_context", "coco_stuff", "mine", "theirs")
    assert params.data.folder("mine") == FolderDatasetConfig(path="/data/mine", ignore=255, remap={})
    assert params.data.folder("theirs").remap == {3: 1}
    assert params.data.folder("ade20k") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"folders": {"ade20k": "/x"}},
            "data.folders.ade20k: 'ade20k' is a built-in dataset; give your folder another name",
        ),
        (
            {"folders": {"m": {"path": "/x", "ignore": 0, "remap": {0: 3}}}},
            "data.folders.m: remap: value 0 is the ignore value; it cannot also be remapped",
        ),
        ({"folders": {"m": {"path": "/x", "remap": {1: 300}}}}, "data.folders.m.remap.1: must be <= 255 (got 300)"),
        ({"folders": {"m": {"pth": "/x"}}}, "missing key data.folders.m.path"),
        ({"folders": {"../m": "/x"}}, "data.folders.../m: string should match pattern"),
        ({"datasets": ["embedded", "embedded"]}, "data.datasets: a dataset is listed twice (embedded, embedded)"),
    ],
)
def test_bad_folder_datasets_are_one_line(change, message):
    raw = raw_params()
    raw["data"].update(change)
    assert message in error_for(raw)


def test_schedule_of_an_unknown_dataset_is_refused():
    raw = raw_params()
    raw["train"]["schedules"]["mine"] = {"lr": 0.01, "iterations": 10}
    assert "train.schedules.mine: unknown dataset 'mine'" in error_for(raw)


def test_empty_dataset_list_is_rejected():
    raw = raw_params()
    raw["data"]["datasets"] = []
    assert "data.datasets: must hold at least 1 item" in error_for(raw)


def test_missing_key_is_named():
    raw = raw_params()
    del raw["train"]["schedules"]["embedded"]["lr"]
    assert "missing key train.schedules.embedded.lr" in error_for(raw)


def test_negative_learning_rate_names_the_schedule():
    raw = raw_params()
    raw["train"]["schedules"]["ade20k"]["lr"] = -0.01
    assert "train.schedules.ade20k.lr: must be > 0" in error_for(raw)


def test_training_dataset_needs_a_schedule():
    raw = raw_params()
    raw["train"]["dataset"] = "ade20k"
    del raw["train"]["schedules"]["ade20k"]
    message = error_for(raw)
    assert "train: train.dataset 'ade20k' has no entry in train.schedules" in message
    assert "(got" not in message


def test_grid_cells_are_validated_at_load_time():
    raw = raw_params()
    raw["grid"]["grids"]["table1"][0]["set"] = {"model.hed": "fcn"}
    assert "grid.grids.table1 cell 'fcn': unknown key model.hed" in error_for(raw)
    raw = raw_params()
    raw["grid"]["grids"]["table1"][0]["set"] = {"model.head": "fcnn"}
    assert "grid.grids.table1 cell 'fcn': model.head: unknown value 'fcnn'" in error_for(raw)
    raw = raw_params()
    raw["grid"]["grids"]["table1"][0]["set"] = {"train.loss.sr.x": 1}
    assert "grid.grids.table1 cell 'fcn': train.loss.sr.x: train.loss.sr is not a section" in error_for(raw)


def test_grid_cell_names_are_unique_and_well_formed():
    raw = raw_params()
    raw["grid"]["grids"]["table1"][1]["name"] = "fcn"
    assert "grid.grids.table1: cell name 'fcn' is used twice" in error_for(raw)
    raw = raw_params()
    raw["grid"]["grids"]["table1"][1]["name"] = "a b"
    assert "grid.grids.table1.1.name" in error_for(raw)


def shared_grid(raw: dict, shared: dict, *cells: dict) -> dict:
    """``raw`` with grid.grids.table1 in the mapping form: ``{set: shared, cells: [...]}``."""
    raw["grid"]["grids"]["table1"] = {"set": shared, "cells": list(cells)}
    return raw


def test_a_grid_is_a_list_of_cells_or_shared_overrides_and_cells():
    listed = validate(raw_params()).grid.grids["table1"]
    assert listed.set == {} and listed.overrides() == {
        "fcn": {"model.head": "fcn", "train.loss.sr": 0.0},
        "grar": {"model.head": "grar", "train.loss.sr": 0.0},
        "grar-sr": {"model.head": "grar"},
    }
    raw = shared_grid(
        raw_params(),
        {"model.head": "grar", "train.loss.sr": 0.0},
        {"name": "fcn", "set": {"model.head": "fcn"}},  # overrides a shared key
        {"name": "grar", "set": {}},
        {"name": "pos", "set": {"model.grar.negative": False}},
    )
    grid = validate(raw).grid.grids["table1"]
    assert grid.overrides() == {
        "fcn": {"model.head": "fcn", "train.loss.sr": 0.0},
        "grar": {"model.head": "grar", "train.loss.sr": 0.0},
        "pos": {"model.head": "grar", "train.loss.sr": 0.0, "model.grar.negative": False},
    }
    assert validate(shared_grid(raw_params(), {}, {"name": "a", "set": {}})).grid.grids["table1"].set == {}
    raw = raw_params()
    raw["grid"]["grids"]["table1"] = {"cells": [{"name": "a", "set": {"model.head": "fcn"}}]}  # set is optional
    assert validate(raw).grid.grids["table1"].overrides() == {"a": {"model.head": "fcn"}}


def test_a_cell_overriding_a_shared_section_or_a_key_inside_it():
    base = validate(raw_params())
    raw = shared_grid(
        raw_params(),
        {"model.grar": {**base.model.grar.model_dump(), "edges": "conv"}},
        {"name": "a", "set": {"model.grar.positive": False}},
        {"name": "b", "set": {}},
    )
    params = validate(raw)
    a, b = (with_overrides(params, o).model.grar for o in params.grid.grids["table1"].overrides().values())
    assert (a.edges, a.positive, b.edges, b.positive) == ("conv", False, "conv", True)


def test_shared_overrides_are_validated_and_errors_name_the_grid_and_the_cell():
    raw = shared_grid(raw_params(), {"model.backbon": "tiny_resnet"}, {"name": "a", "set": {}})
    assert error_for(
        raw
    ) == "params.yaml: grid.grids.table1 set: unknown key model.backbon; allowed keys: " + ", ".join(
        Params.model_fields["model"].annotation.model_fields
    )
    raw = shared_grid(raw_params(), {"train.loss.sr.x": 1}, {"name": "a", "set": {}})
    assert "grid.grids.table1 set: train.loss.sr.x: train.loss.sr is not a section" in error_for(raw)
    raw = shared_grid(
        raw_params(), {"model.head": "grar"}, {"name": "a", "set": {}}, {"name": "b", "set": {"model.head": "fcnn"}}
    )
    assert "grid.grids.table1 cell 'b': model.head: unknown value 'fcnn'" in error_for(raw)
    raw = shared_grid(raw_params(), {"model.head": "grar"}, {"name": "a", "set": {}}, {"name": "a", "set": {}})
    assert "grid.grids.table1: cell name 'a' is used twice" in error_for(raw)
    raw = shared_grid(raw_params(), {}, {"name": "a b", "set": {}})
    assert "grid.grids.table1.cells.0.name" in error_for(raw)  # the mapping form's path
    raw = raw_params()
    raw["grid"]["grids"]["table1"] = {"set": {}, "cels": []}
    assert error_for(raw) == "params.yaml: missing key grid.grids.table1.cells"


def test_a_base_override_reaches_every_cell_that_does_not_set_the_key(tmp_path):
    params = load_params(
        ROOT / "profiles" / "paper.yaml",
        ("model.pretrained=null", "executor.slurm.partition=other", "train.dataset=ade20k"),
    )
    resolved = {
        (grid, cell): with_overrides(params, overrides)
        for grid, spec in params.grid.grids.items()
        for cell, overrides in spec.overrides().items()
    }
    assert len(resolved) == 5 + 9 + 7 + 2 + 3 + 2 + 3  # tables 1-6, sr-weight
    assert all(p.model.pretrained is None and p.executor.slurm.partition == "other" for p in resolved.values())
    datasets = {key: p.train.dataset for key, p in resolved.items()}
    assert {d for (grid, _), d in datasets.items() if grid in ("table1", "table2", "table3")} == {"ade20k"}
    assert [datasets[(grid, "r101-grar-sr")] for grid in ("table4", "table5", "table6")] == [
        "pascal_context",
        "ade20k",
        "coco_stuff",
    ]  # a grid's shared set overrides the base


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line \d+ not valid YAML"):
        load_params(bad)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(bad)


def test_overrides_are_parsed_as_yaml_and_validated():
    params = load_params(PARAMS, ("train.schedules.embedded.lr=0.05", "model.head=fcn", "eval.scales=[0.5, 1.0]"))
    assert params.train.schedule.lr == 0.05
    assert params.model.head == "fcn"
    assert params.eval.scales == (0.5, 1.0)
    with pytest.raises(ConfigError, match="train.crop_size: must be > 0"):
        load_params(PARAMS, ("train.crop_size=-1",))
    with pytest.raises(ConfigError, match="unknown key train.lrr"):
        load_params(PARAMS, ("train.lrr=1",))


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("train.crop_size", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train.crop_size.x=1", "train.crop_size is not a section"),
        ("nosuch.key=1", "nosuch is not a section; allowed keys: profile, seed"),
        ("train.crop_size=[1", "is not valid YAML"),
    ],
)
def test_malformed_overrides_are_clear_errors(item, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        load_params(PARAMS, (item,))


def test_config_is_frozen_and_with_overrides_returns_a_validated_copy():
    params = load_params(PARAMS)
    with pytest.raises(pydantic.ValidationError):
        params.train.crop_size = 1  # type: ignore[misc]
    changed = with_overrides(params, {"train.crop_size": 33, "model.grar.edges": "conv"})
    assert (changed.train.crop_size, changed.model.grar.edges) == (33, "conv")
    assert params.train.crop_size == (32, 192)
    with pytest.raises(ConfigError, match="model.grar.edges: unknown value 'graphs'"):
        with_overrides(params, {"model.grar.edges": "graphs"})


def test_round_trip_through_model_dump():
    params = load_params(PARAMS)
    assert Params.model_validate_json(params.model_dump_json()) == params


def alias_bomb(levels: int, key: str = "bomb") -> str:
    """``key:`` holding ``levels`` levels of nine aliases each of the level below ("billion laughs": 9^levels)."""
    lines = [f"{key}:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_a_params_file_is_one_line_before_anything_expands_it(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(PARAMS.read_text() + alias_bomb(6))  # 9^6 = 531,441 values once expanded
    lines = PARAMS.read_text().count("\n")
    with pytest.raises(ConfigError) as info:
        load_params(bad)
    assert str(info.value) == (
        f"{bad}: line {lines + 7}: more than 100,000 values with aliases expanded (an alias bomb?); "
        "write the values out, or use fewer aliases"
    )


def test_an_alias_bomb_in_a_set_value_is_one_line():
    bomb = "{" + ", ".join(alias_bomb(6).splitlines()[1:]).replace("  ", "") + "}"
    with pytest.raises(ConfigError) as info:
        load_params(PARAMS, (f"model.head={bomb}",))
    assert str(info.value) == (
        "--set model.head: line 1: more than 100,000 values with aliases expanded (an alias bomb?); "
        "write the values out, or use fewer aliases"
    )


def test_aliases_within_the_limit_load_as_the_values_they_name(tmp_path):
    text = PARAMS.read_text()
    fcn = "        - {name: fcn, set: {model.head: fcn, eval.multi_scale: true}}\n"  # Tables 2 and 3
    assert text.count(fcn) == 2
    shared = text.replace(fcn, fcn.replace("set: {", "set: &fcn {"), 1).replace(
        fcn, "        - {name: fcn, set: *fcn}\n"
    )
    good = tmp_path / "params.yaml"
    good.write_text(shared)
    assert shared.count("*fcn") == 1 and load_params(good) == load_params(PARAMS)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[" * 65 + "]" * 65, "--set model.head: line 1: nested deeper than 64 levels"),
        ("&a [*a]", "--set model.head: line 1: alias *a inside the node it names (a recursive structure)"),
        ("{a: 1, a: 2}", "--set model.head: line 1: duplicate key 'a' (first on line 1)"),
        ("x" * (1 << 20 + 1), "--set model.head: value of 2,097,152 characters; at most 1,048,576"),
    ],
)
def test_yaml_beyond_the_limits_is_one_line(value, message):
    with pytest.raises(ConfigError) as info:
        load_params(PARAMS, (f"model.head={value}",))
    assert str(info.value) == message


def test_a_params_file_over_a_mebibyte_is_refused_unread(tmp_path):
    big = tmp_path / "params.yaml"
    big.write_text(PARAMS.read_text() + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError) as info:
        load_params(big)
    assert str(info.value) == f"{big}: {big.stat().st_size:,} bytes; a parameters file may hold at most 1,048,576"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=fp16", "train.precision: unknown value 'fp16'; allowed: 'bf16' or 'fp32'"),
        ("eval.fusion=mean", "eval.fusion: unknown value 'mean'; allowed: 'softmax_mean' or 'exp_sum'"),
        ("eval.align_corners=maybe", "eval.align_corners: input should be a valid boolean"),
        ("train.augment.base_size=0", "train.augment.base_size: must be > 0 (got 0)"),
        ("train.augment.base_size=520.5", "train.augment.base_size: input should be a valid integer"),
        ("train.augment.scale=[2.0, 0.5]", "train.augment: scale: [2.0, 0.5] must be [low, high] with low <= high"),
        ("train.schedules.ade20k.head_lr_mult=0", "train.schedules.ade20k.head_lr_mult: must be > 0.0 (got 0)"),
        (
            "train.augment.base_sise=520",
            "unknown key train.augment.base_sise; allowed keys: hflip, scale, rotate, base_size",
        ),
        ("train.precission=fp32", "unknown key train.precission; allowed keys: dataset, schedules,"),
        ("eval.align_corner=true", "unknown key eval.align_corner; allowed keys: multi_scale, scales,"),
        (
            "train.schedules.ade20k={lr: 0.01, iterations: 5, head_lr: 1}",
            "unknown key train.schedules.ade20k.head_lr; allowed keys: lr, iterations, head_lr_mult",
        ),
        ("weights.files.resnet50d=weights/x.pth", "weights.files.resnet50d"),
    ],
)
def test_the_recipe_switches_are_validated_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as info:
        load_params(PARAMS, (override,))
    assert info.value.exit_code == 2
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_recipe_switches_default_to_what_grar_did_before_them():
    """A params file without the added keys (an older one) means what it meant (pipeline.config.ADDED_KEYS)."""
    raw = raw_params()
    del raw["train"]["augment"]["base_size"], raw["train"]["precision"]
    del raw["eval"]["fusion"], raw["eval"]["align_corners"]
    older = validate(raw)
    assert older == load_params(PARAMS)
    assert (older.train.augment.base_size, older.train.precision) == (None, "bf16")
    assert (older.eval.fusion, older.eval.align_corners) == ("softmax_mean", False)
    assert older.train.schedule.head_lr_mult is None and older.train.head_mult == older.train.head_lr_mult
    # a schedule without its own multiple prints as written: {lr, iterations}
    assert older.train.schedules["embedded"].model_dump() == {"lr": 0.03, "iterations": 600}
