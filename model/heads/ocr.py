"""OCRNet's object-contextual representations (Table 3, "OCR")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu


class OCRHead(nn.Module):
    """3x3 conv in -> width (paper: 512); soft object regions from a coarse classifier; object-region
    representations (spatial softmax per class); pixel-region relation with
    width/2 key channels (256); concat [context, pixels] -> 1x1 conv -> width.

    The soft object regions come from ``coarse_classifier`` (1x1 conv on the
    width-channel pixel features) and are returned as ``"coarse"`` logits,
    supervised by the coarse CE exactly like GRAr's coarse mask; OCRNet reads
    them from its auxiliary head instead, but a plug-in module on layer4 only
    sees layer4.

    Table-3 count on 2048 channels, width 512 (classifiers excluded): 2048*512*9 + BN
    + f_pixel, f_object (2 x (512*256 + 256*256 + 2 BN)) + f_down (512*256 + BN) + f_up
    (256*512 + BN) + 1024*512 + BN = 10,622,464 (10.62M; paper 10.5M).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        key_channels = width // 2
        self.conv = conv_bn_relu(in_channels, width, kernel_size=3)
        self.coarse_classifier = classifier(width, num_classes)
        self.f_pixel = nn.Sequential(conv_bn_relu(width, key_channels), conv_bn_relu(key_channels, key_channels))
        self.f_object = nn.Sequential(conv_bn_relu(width, key_channels), conv_bn_relu(key_channels, key_channels))
        self.f_down = conv_bn_relu(width, key_channels)
        self.f_up = conv_bn_relu(key_channels, width)
        self.fuse = nn.Sequential(conv_bn_relu(2 * width, width), nn.Dropout2d(0.05))
        self.classifier = classifier(width, num_classes)
        self.feature_channels = width
        self.key_channels = key_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pixels = self.conv(x)  # (B, C, h, w)
        coarse = self.coarse_classifier(pixels)  # (B, K, h, w)
        b, c, h, w = pixels.shape
        regions = torch.softmax(coarse.flatten(2), dim=2)  # (B, K, hw): spatial softmax per class
        objects = torch.bmm(regions, pixels.flatten(2).transpose(1, 2))  # (B, K, C)
        objects = objects.transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1)
        query = self.f_pixel(pixels).flatten(2).transpose(1, 2)  # (B, hw, key)
        key = self.f_object(objects).flatten(2)  # (B, key, K)
        value = self.f_down(objects).flatten(2).transpose(1, 2)  # (B, K, key)
        relation = torch.softmax(torch.bmm(query, key) * self.key_channels**-0.5, dim=-1)  # (B, hw, K)
        context = torch.bmm(relation, value).transpose(1, 2).reshape(b, self.key_channels, h, w)  # (B, key, h, w)
        features = self.fuse(torch.cat([self.f_up(context), pixels], dim=1))  # (B, C, h, w)
        return {"out": self.classifier(features), "coarse": coarse, "features": features}
