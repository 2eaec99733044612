"""Building blocks shared by the heads."""

from __future__ import annotations

from torch import nn

CLASSIFIER_DROPOUT = 0.1


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm + ReLU: the paper's "BN after new conv layers" (section 4.1)."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def classifier(in_channels: int, num_classes: int, dropout: float = CLASSIFIER_DROPOUT) -> nn.Sequential:
    """Dropout + 1x1 conv to class logits: the "final classifier" every head ends with."""
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_classes, kernel_size=1))
