"""PSPNet's Pyramid Pooling Module (Table 3, "PPM")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu


class PPMHead(nn.Module):
    """Pyramid pooling (bins 1/2/3/6, each 1x1 conv in -> width), concat with the input, 3x3 bottleneck -> width.

    Table-3 count on 2048 channels, width 512: 4 x (2048*512 + BN) + 4096*512*9 + BN
    = 23,073,792 (23.07M; paper 23.2M).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), conv_bn_relu(in_channels, width)) for size in bins
        )
        self.bottleneck = conv_bn_relu(in_channels + len(bins) * width, width, kernel_size=3)
        self.classifier = classifier(width, num_classes)
        self.feature_channels = width

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        pyramid = [F.interpolate(stage(x), size, mode="bilinear", align_corners=False) for stage in self.stages]
        features = self.bottleneck(torch.cat([x, *pyramid], dim=1))  # (B, width, h, w)
        return {"out": self.classifier(features), "features": features}
