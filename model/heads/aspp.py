"""DeepLabV3's Atrous Spatial Pyramid Pooling (Table 3, "ASPP")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu


class ASPPHead(nn.Module):
    """ASPP with width/2 channels (paper: 256): 1x1, three 3x3 atrous (rates 12/24/36 at output stride 8)
    and image pooling, concatenated and projected by a 1x1 conv (+ dropout 0.5 as in DeepLabV3).

    Table-3 count on 2048 channels, width 512: 2 x (2048*256 + BN) + 3 x (2048*256*9 + BN)
    + 1280*256 + BN = 15,535,104 (15.54M; paper 15.5M). Unlike torchvision's
    ``DeepLabHead`` there is no extra 3x3 conv before the classifier.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, rates: tuple[int, ...] = (12, 24, 36)) -> None:
        super().__init__()
        channels = width // 2
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels)]
            + [conv_bn_relu(in_channels, channels, kernel_size=3, dilation=rate) for rate in rates]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, channels))
        self.project = nn.Sequential(conv_bn_relu((len(rates) + 2) * channels, channels), nn.Dropout(0.5))
        self.classifier = classifier(channels, num_classes)
        self.feature_channels = channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pooled = F.interpolate(self.image_pool(x), x.shape[-2:], mode="bilinear", align_corners=False)
        branches = [branch(x) for branch in self.branches] + [pooled]  # each (B, width/2, h, w)
        features = self.project(torch.cat(branches, dim=1))  # (B, width/2, h, w)
        return {"out": self.classifier(features), "features": features}
