"""Every head: one interface, output shapes on odd sizes with one backward pass, and the Table 3 counts."""

from __future__ import annotations

import pytest
import torch

from model.heads import HEADS, module_parameters

K = 5
IN_CHANNELS = 24
WIDTH = 16


def build(name: str, in_channels: int, num_classes: int, width: int, device: str = "cpu"):
    """Head ``name``; GRAr gets a random affinity (made on the CPU: it is checked on construction)."""
    extra = {"affinity": torch.rand(num_classes, num_classes).fill_diagonal_(1)} if name == "grar" else {}
    with torch.device(device):  # "meta": shapes only, no 23M-parameter initialisation
        return HEADS[name](in_channels, num_classes, width, **extra)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_output_shapes_on_odd_sizes_and_backward(name):
    torch.manual_seed(0)
    head = build(name, IN_CHANNELS, K, WIDTH)
    outputs = head(torch.randn(2, IN_CHANNELS, 7, 9))
    assert outputs["out"].shape == (2, K, 7, 9)
    assert outputs["features"].shape == (2, head.feature_channels, 7, 9)
    assert set(outputs) <= {"out", "features", "coarse"}
    if "coarse" in outputs:
        assert outputs["coarse"].shape == (2, K, 7, 9)
    sum(value.sum() for value in outputs.values()).backward()
    for parameter_name, parameter in head.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


def test_heads_with_a_coarse_mask():
    torch.manual_seed(0)
    with_coarse = {name for name in HEADS if "coarse" in build(name, IN_CHANNELS, K, WIDTH).eval()(
        torch.randn(1, IN_CHANNELS, 3, 3))}
    assert with_coarse == {"grar", "ocr"}


# Table 3 (paper) and the exact count of each configuration: "the module" is the head
# without its final and coarse classifiers (model.heads.module_parameters).
TABLE3 = {
    "ppm": (23.2e6, 23_073_792),
    "aspp": (15.5e6, 15_535_104),
    "danet": (10.6e6, 10_701_122),
    "ocr": (10.5e6, 10_622_464),
    "grar": (2.4e6, 2_361_858),
}


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_module_parameters_match_table_3(name):
    paper, exact = TABLE3[name]
    head = build(name, 2048, 59, 512, device="meta")
    count = module_parameters(head)
    assert count == exact
    assert abs(count - paper) / paper < 0.03


def test_module_parameters_exclude_only_the_classifiers():
    head = build("grar", 2048, 59, 512, device="meta")
    total = sum(p.numel() for p in head.parameters())
    classifiers = 2 * (512 * 59 + 59)  # coarse and final 1x1 convs with bias
    assert total - module_parameters(head) == classifiers
