"""Backbones: output stride 8 and declared channels, on tiny odd-sized inputs (random init)."""

from __future__ import annotations

import pytest
import torch

from model.backbones import BACKBONES

# name -> (aux_channels, out_channels)
CHANNELS = {"tiny_resnet": (256, 512), "resnet50": (1024, 2048), "resnet101": (1024, 2048), "resnest101": (1024, 2048)}


def test_every_backbone_is_covered():
    assert set(BACKBONES) == set(CHANNELS)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_output_stride_8_and_channels(name):
    torch.manual_seed(0)
    backbone = BACKBONES[name]().eval()
    assert (backbone.aux_channels, backbone.out_channels) == CHANNELS[name]
    assert backbone.output_stride == 8
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 33, 47))
    assert list(features) == ["layer3", "layer4"]
    # Odd sizes: every stride-2 step rounds up, so H/8 -> ceil(33/8) = 5, ceil(47/8) = 6.
    assert features["layer3"].shape == (1, CHANNELS[name][0], 5, 6)
    assert features["layer4"].shape == (1, CHANNELS[name][1], 5, 6)


def test_tiny_resnet_is_dilated_not_strided():
    backbone = BACKBONES["tiny_resnet"]()
    body = backbone.body
    assert body.layer3[0].conv2.stride == (1, 1) and body.layer4[0].conv2.stride == (1, 1)
    assert body.layer3[1].conv2.dilation == (2, 2) and body.layer4[0].conv2.dilation == (2, 2)
    assert sum(p.numel() for p in backbone.parameters()) < 1_000_000  # trains on 2 CPU cores


def test_tiny_resnet_backward_reaches_the_stem():
    torch.manual_seed(0)
    backbone = BACKBONES["tiny_resnet"]()
    features = backbone(torch.randn(2, 3, 17, 23))
    (features["layer3"].mean() + features["layer4"].mean()).backward()
    assert backbone.body.conv1.weight.grad.abs().sum() > 0


def test_deep_stems_are_three_3x3_convs_named_as_pytorch_encoding():
    body = BACKBONES["tiny_resnet"]("deep").body  # PyTorch-Encoding: widths w, w, 2w (tiny: w = 32)
    shapes = {
        key: tuple(value.shape)
        for key, value in body.state_dict().items()
        if key.startswith(("conv1.", "bn1.")) and key.endswith("weight")
    }
    assert shapes == {
        "conv1.0.weight": (32, 3, 3, 3),
        "conv1.1.weight": (32,),
        "conv1.3.weight": (32, 32, 3, 3),
        "conv1.4.weight": (32,),
        "conv1.6.weight": (64, 32, 3, 3),
        "bn1.weight": (64,),
    }
    assert body.conv1[0].stride == (2, 2) and body.layer1[0].conv1.in_channels == 64
    assert body.layer1[0].downsample[0].in_channels == 64
    v1c = BACKBONES["tiny_resnet"]("deep_v1c").body  # mmseg V1c: w/2, w/2, w
    assert [m.out_channels for m in v1c.conv1 if isinstance(m, torch.nn.Conv2d)] == [16, 16, 32]
    features = BACKBONES["tiny_resnet"]("deep")(torch.randn(1, 3, 17, 23))
    assert features["layer4"].shape == (1, 512, 3, 3)


def test_resnet50_deep_stem_widths_are_those_of_resnet50s_and_v1c():
    with torch.device("meta"):
        deep = BACKBONES["resnet50"]("deep").body
        v1c = BACKBONES["resnet50"]("deep_v1c").body
    assert [m.out_channels for m in deep.conv1 if isinstance(m, torch.nn.Conv2d)] == [64, 64, 128]
    assert deep.bn1.num_features == 128 and deep.layer1[0].conv1.in_channels == 128
    assert deep.layer1[0].downsample[0].weight.shape == (256, 128, 1, 1)
    assert [m.out_channels for m in v1c.conv1 if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]
    assert v1c.layer1[0].conv1.in_channels == 64
    with pytest.raises(ValueError, match="unknown stem 'wide'"):
        BACKBONES["resnet50"]("wide")


def test_resnest101_stem_is_its_own_deep_stem_of_the_deep_widths():
    with torch.device("meta"):
        standard, deep = BACKBONES["resnest101"]("standard").body, BACKBONES["resnest101"]("deep").body
    widths = [m.out_channels for m in deep.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert widths == [m.out_channels for m in standard.conv1 if isinstance(m, torch.nn.Conv2d)] == [64, 64, 128]
    with pytest.raises(ValueError, match="stem 'deep_v1c': resnest101 has its own deep stem"):
        BACKBONES["resnest101"]("deep_v1c")
