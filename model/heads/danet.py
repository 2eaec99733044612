"""DANet's dual attention (Table 3, "DANet"): position attention and channel attention, summed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu


class PositionAttention(nn.Module):
    """DANet's PAM: every pixel attends to every pixel (a (hw x hw) softmax); ``gamma`` starts at 0."""

    def __init__(self, channels: int, key_channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.key = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, hw, key)
        key = self.key(x).flatten(2)  # (B, key, hw)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, hw, hw)
        value = self.value(x).flatten(2)  # (B, C, hw)
        out = torch.bmm(value, attention.transpose(1, 2)).view(b, c, h, w)  # (B, C, h, w)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """DANet's CAM: every channel attends to every channel (a (C x C) softmax); ``gamma`` starts at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)  # (B, C, hw)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        energy = energy.amax(dim=-1, keepdim=True) - energy  # DANet's max-shift
        out = torch.bmm(torch.softmax(energy, dim=-1), flat).view_as(x)  # (B, C, h, w)
        return self.gamma * out + x


class DANetHead(nn.Module):
    """DANet's dual attention head in one of two builds (``reference``).

    ``reference=False`` ("matched"): two branches of width/2 channels (paper:
    256) with width/16 query/key channels (32): 3x3 conv, attention, 3x3 conv;
    their sum feeds the classifier. Built to the size the paper's Table 3
    counts; DANet's per-branch classifiers are left out. Table-3 count on 2048
    channels, width 512: 2 x (2048*256*9 + BN) + PAM (2 x 256*32 + 256*256 +
    biases + gamma) + CAM gamma + 2 x (256*256*9 + BN) = 10,701,122 (10.70M;
    paper 10.6M).

    ``reference=True``: as DANet's own code builds it (junfu1115/DANet,
    encoding/models/sseg/danet.py ``DANetHead``): branches of in_channels/4
    channels (512 on ResNet), PAM query/key of branch/8 (encoding/nn/attention.py
    ``PAM_Module``: in_dim // 8), and two more classifiers, on the PAM-only
    and the CAM-only branch (``conv6``, ``conv7``), returned as ``"pam"`` and
    ``"cam"`` logits for their own losses (``pipeline.training.losses``: CE each,
    weight ``train.loss.danet``; the reference sums the three CEs with weight 1,
    encoding/nn/customize.py ``SegmentationMultiLosses``). ``width`` is unused.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, reference: bool = False) -> None:
        super().__init__()
        channels = in_channels // 4 if reference else width // 2
        key_channels = channels // 8 if reference else width // 16
        self.position = nn.Sequential(
            conv_bn_relu(in_channels, channels, kernel_size=3),
            PositionAttention(channels, key_channels),
            conv_bn_relu(channels, channels, kernel_size=3),
        )
        self.channel = nn.Sequential(
            conv_bn_relu(in_channels, channels, kernel_size=3),
            ChannelAttention(),
            conv_bn_relu(channels, channels, kernel_size=3),
        )
        self.classifier = classifier(channels, num_classes)
        self.pam_classifier = classifier(channels, num_classes) if reference else None
        self.cam_classifier = classifier(channels, num_classes) if reference else None
        self.feature_channels = channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        position = self.position(x)  # (B, channels, h, w)
        channel = self.channel(x)  # (B, channels, h, w)
        features = position + channel
        outputs = {"out": self.classifier(features), "features": features}
        if self.pam_classifier is not None:
            outputs["pam"] = self.pam_classifier(position)  # (B, K, h, w)
            outputs["cam"] = self.cam_classifier(channel)  # (B, K, h, w)
        return outputs
