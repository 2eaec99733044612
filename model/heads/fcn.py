"""The dilated FCN baseline head (Tables 1-3, "Baseline is dilated FCN")."""

from __future__ import annotations

from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu


class FCNHead(nn.Module):
    """3x3 conv (in -> width) + BN + ReLU, then the classifier (torchvision's ``FCNHead``).

    Also the auxiliary head on layer3 (built with width/2, as torchvision's
    1024 -> 256). Table-3 count on 2048 channels, width 512: 9.44M.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, width, kernel_size=3)
        self.classifier = classifier(width, num_classes)
        self.feature_channels = width

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.conv(x)  # (B, width, h, w)
        return {"out": self.classifier(features), "features": features}  # out: (B, K, h, w)
