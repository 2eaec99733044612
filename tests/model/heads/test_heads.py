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
    with_coarse = {
        name
        for name in HEADS
        if "coarse" in build(name, IN_CHANNELS, K, WIDTH).eval()(torch.randn(1, IN_CHANNELS, 3, 3))
    }
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


def test_danet_reference_build_has_quarter_width_branches_and_branch_logits():
    torch.manual_seed(0)
    head = HEADS["danet"](32, K, WIDTH, reference=True)
    assert head.feature_channels == 8 and head.position[1].query.out_channels == 1  # 32 / 4, then / 8
    outputs = head(torch.randn(2, 32, 7, 9))
    assert set(outputs) == {"out", "features", "pam", "cam"}
    for key in ("out", "pam", "cam"):
        assert outputs[key].shape == (2, K, 7, 9)
    sum(value.sum() for value in outputs.values()).backward()
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_danet_reference_module_count_by_hand():
    # DANet's code on 2048 channels: branches of 512, PAM query/key 64.
    # 2 x (2048*512*9 + BN 2*512) + PAM (2 x (512*64 + 64) + 512*512 + 512 + gamma) + CAM gamma
    # + 2 x (512*512*9 + BN 2*512) = 18,876,416 + 328,321 + 1 + 4,720,640
    with torch.device("meta"):
        head = HEADS["danet"](2048, 59, 512, reference=True)
    assert head.position[1].query.out_channels == 64 and head.feature_channels == 512
    assert module_parameters(head) == 23_925_378
    classifiers = 3 * (512 * 59 + 59)  # final, PAM-only and CAM-only 1x1 convs with bias
    assert sum(p.numel() for p in head.parameters()) - module_parameters(head) == classifiers
