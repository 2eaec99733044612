"""Building the model from params: parts by name, affinity checks, local pretrained weights, the criterion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.backbones import tiny_resnet
from model.heads.grar import GRArHead
from model.segmentor import Segmentor
from pipeline.config import load_params, with_overrides
from pipeline.errors import ConfigError, DataError
from pipeline.training.build import build_criterion, build_head, build_segmentor, load_backbone_weights, lookup

ROOT = Path(__file__).resolve().parents[3]
K = 4


@pytest.fixture
def params():
    return load_params(ROOT / "params.yaml")


def affinity() -> torch.Tensor:
    return torch.rand(K, K, generator=torch.Generator().manual_seed(0)).fill_diagonal_(1)


def test_embedded_model_is_tiny_resnet_with_grar_and_aux(params):
    model = build_segmentor(params.model, K, affinity())
    assert isinstance(model, Segmentor) and isinstance(model.head, GRArHead)
    assert model.backbone.out_channels == 512
    assert model.head.feature_channels == params.model.width
    assert model.aux_head is not None
    outputs = model(torch.randn(2, 3, 33, 45))
    assert outputs["out"].shape == (2, K, 33, 45)


@pytest.mark.parametrize("head", ["fcn", "ppm", "aspp", "danet", "ocr"])
def test_other_heads_need_no_affinity(params, head):
    config = with_overrides(params, {"model.head": head, "model.aux": False}).model
    model = build_segmentor(config, K)
    assert model.aux_head is None
    assert model(torch.randn(2, 3, 17, 19))["out"].shape == (2, K, 17, 19)


def test_grar_switches_come_from_params(params):
    config = with_overrides(
        params, {"model.grar.edges": "conv", "model.grar.negative": False, "model.grar.pooling": "soft"}
    ).model
    head = build_segmentor(config, K).head  # conv edges: no affinity needed
    assert head.reasoning.edges == "conv" and not head.reasoning.negative and head.pooling == "soft"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="model.head: unknown value 'psp'; valid: fcn, ppm, aspp, danet, ocr, grar"):
        lookup({"fcn": 1, "ppm": 2, "aspp": 3, "danet": 4, "ocr": 5, "grar": 6}, "psp", "model.head")


def test_graph_edges_without_affinity_is_a_config_error(params):
    with pytest.raises(ConfigError, match="model.grar.edges: graph needs the affinity matrix"):
        build_head("grar", 32, K, 16, params.model.grar, None)


def test_affinity_of_another_dataset_names_its_source(params):
    with pytest.raises(
        DataError,
        match=r"stats/ade20k/affinity.parquet: affinity matrix has shape \(150, 150\), "
        r"expected \(4, 4\)",
    ):
        build_head("grar", 32, K, 16, params.model.grar, torch.eye(150), "stats/ade20k/affinity.parquet")


def pretrained(params, path: Path):
    return with_overrides(params, {"model.pretrained": str(path)}).model


def test_missing_pretrained_file_is_a_clear_error(params, tmp_path):
    missing = tmp_path / "resnet101-imagenet.pth"
    with pytest.raises(DataError, match=f"model.pretrained: {missing}: file not found"):
        build_segmentor(pretrained(params, missing), K, affinity())


def test_pretrained_weights_load_from_a_local_file(params, tmp_path):
    torch.manual_seed(1)
    source = tiny_resnet()
    state = {f"module.{key}": value for key, value in source.body.state_dict().items()}  # DataParallel prefix
    state["fc.weight"] = torch.zeros(1000, 512)  # the ImageNet classifier is dropped
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": state}, path)
    torch.manual_seed(2)
    model = build_segmentor(pretrained(params, path), K, affinity())
    for key, value in source.body.state_dict().items():
        torch.testing.assert_close(model.backbone.body.state_dict()[key], value)


def test_weights_of_another_backbone_are_a_clear_error(tmp_path):
    state = tiny_resnet().body.state_dict()
    state["layer5.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(
        DataError,
        match=r"keys do not match the tiny_resnet backbone: 1 missing \(layer1.0.conv1.weight\), "
        r"1 unexpected \(layer5.weight\)",
    ):
        load_backbone_weights(tiny_resnet(), path, "tiny_resnet")


def test_weights_of_the_wrong_shape_are_a_clear_error(tmp_path):
    state = tiny_resnet().body.state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"shapes do not match .*conv1.weight \(32, 3, 3, 3\) vs \(32, 3, 7, 7\)"):
        load_backbone_weights(tiny_resnet(), path)


def test_a_file_that_is_not_a_weight_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not weights")
    with pytest.raises(DataError, match=f"{path}: not a PyTorch weight file"):
        load_backbone_weights(tiny_resnet(), path)
    torch.save([1, 2, 3], path)
    with pytest.raises(DataError, match="expected a state dict"):
        load_backbone_weights(tiny_resnet(), path)


def test_criterion_from_params(params):
    criterion = build_criterion(params.train.loss, K, 16)
    assert criterion.weights == {
        "ce": 1.0,
        "aux": params.train.loss.aux,
        "coarse": params.train.loss.coarse,
        "sr": params.train.loss.sr,
        "danet": params.train.loss.danet,
    }
    torch.testing.assert_close(criterion.sr.class_weights, torch.ones(K))
    frequency = with_overrides(params, {"train.loss.sr_class_weights": "frequency"}).train.loss
    with pytest.raises(ConfigError, match="frequency needs the class weights"):
        build_criterion(frequency, K, 16)
    weighted = build_criterion(frequency, K, 16, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(weighted.sr.class_weights, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def saved(tmp_path, state, name="weights.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def assert_loaded(model, source):
    loaded = model.backbone.body.state_dict()
    for key, value in source.body.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_pytorch_encoding_deep_stem_weights_load(params, tmp_path):
    # PyTorch-Encoding's resnet50s names (conv1.0 ... conv1.6, bn1), here in a whole segmentation model
    # (BaseNet: backbone under "pretrained.", heads under "head." / "auxlayer.")
    torch.manual_seed(1)
    source = tiny_resnet("deep")
    state = {f"pretrained.{key}": value for key, value in source.body.state_dict().items()}
    state |= {
        "head.conv5a.0.weight": torch.zeros(1),
        "auxlayer.conv5.0.weight": torch.zeros(1),
        "pretrained.fc.weight": torch.zeros(1000, 512),
    }
    torch.manual_seed(2)
    model = build_segmentor(
        with_overrides(
            params, {"model.stem": "deep", "model.pretrained": str(saved(tmp_path, {"state_dict": state}))}
        ).model,
        K,
        affinity(),
    )
    assert_loaded(model, source)


def test_mmseg_v1c_weights_load_with_their_stem_names(params, tmp_path):
    # mmseg's ResNetV1c names its deep stem stem.0 (conv), stem.1 (BN), stem.3, stem.4, stem.6, stem.7 (the
    # last BN, this project's bn1); a segmentor checkpoint holds it under "backbone."
    torch.manual_seed(1)
    source = tiny_resnet("deep_v1c")
    renames = {
        "conv1.0.": "stem.0.",
        "conv1.1.": "stem.1.",
        "conv1.3.": "stem.3.",
        "conv1.4.": "stem.4.",
        "conv1.6.": "stem.6.",
        "bn1.": "stem.7.",
    }
    state = {}
    for key, value in source.body.state_dict().items():
        old = next((old for old in renames if key.startswith(old)), None)
        state["backbone." + (renames[old] + key.removeprefix(old) if old else key)] = value
    assert "backbone.stem.7.running_var" in state and "backbone.layer1.0.conv1.weight" in state
    state["decode_head.conv_seg.weight"] = torch.zeros(1)
    torch.manual_seed(2)
    path = saved(tmp_path, {"meta": {}, "state_dict": state})
    model = build_segmentor(
        with_overrides(params, {"model.stem": "deep_v1c", "model.pretrained": str(path)}).model, K, affinity()
    )
    assert_loaded(model, source)
    # an ImageNet V1c file (no prefix) loads the same
    plain = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    load_backbone_weights(tiny_resnet("deep_v1c"), saved(tmp_path, plain, "v1c.pth"))


def test_weights_of_a_standard_stem_do_not_fit_a_deep_one(tmp_path):
    path = saved(tmp_path, tiny_resnet().body.state_dict())
    with pytest.raises(DataError, match=r"keys do not match the tiny_resnet backbone: \d+ missing \(conv1.0.weight"):
        load_backbone_weights(tiny_resnet("deep"), path, "tiny_resnet")


def test_resnest_keeps_its_own_stem(params):
    with pytest.raises(
        ConfigError,
        match=r"model: stem 'deep_v1c': resnest101 has its own deep stem \(64-64-128, as 'deep'\); use deep or "
        r"standard \(both build it\)$",
    ):
        with_overrides(params, {"model.backbone": "resnest101", "model.stem": "deep_v1c"})
    # its stem is 'deep' (64-64-128): both names build timm's resnest101e as it is
    assert with_overrides(params, {"model.backbone": "resnest101", "model.stem": "deep"}).model.stem == "deep"
