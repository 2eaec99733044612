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
