"""The segmentation model: backbone + context head (+ auxiliary FCN head on layer3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Outputs holding class logits: upsampled to the input size (once, here). The
# other outputs (e.g. "features" for the SR-Loss) stay at feature resolution.
LOGITS = ("out", "coarse", "aux")


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size`` (align_corners=False); a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Segmentor(nn.Module):
    """Compose a ``Backbone``, a head and an optional auxiliary head; owns ``forward``.

    ``forward(images)`` returns the head's dict plus ``"aux"`` (when there is an
    auxiliary head, which reads layer3); logits under ``LOGITS`` are upsampled to
    the input size, everything else stays at feature resolution (1/8).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = images.shape[-2:]  # (H, W)
        outputs = self.outputs(images)
        for key in LOGITS:
            if key in outputs:
                outputs[key] = resize(outputs[key], size)  # (B, K, H, W)
        return outputs

    def outputs(self, images: Tensor, aux: bool = True) -> dict[str, Tensor]:
        """The head's dict (plus ``"aux"`` when ``aux`` and there is an auxiliary head), all at feature resolution."""
        features = self.backbone(images)  # layer3, layer4: (B, C, H/8, W/8)
        outputs = dict(self.head(features["layer4"]))
        if aux and self.aux_head is not None:
            outputs["aux"] = self.aux_head(features["layer3"])["out"]
        return outputs

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        scales: tuple[float, ...] = (1.0,),
        flip: bool = False,
        window: int | None = None,
        stride: int | None = None,
    ) -> Tensor:
        """Class probabilities (B, K, H, W) at the input size; call ``eval()`` first.

        Single scale: ``scales=(1.0,)``, ``flip=False``. The "MS" column of
        Table 1: ``scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``, ``flip=True``: the
        softmax of every scaled (and horizontally flipped) pass, averaged; a
        pass's logits are resized once, from feature resolution straight to the
        input size, and the auxiliary head is not run. With ``window`` set, each scaled image is
        processed in ``window`` x ``window`` crops every ``stride`` pixels
        (default 2/3 of the window) whose logits are averaged where they overlap.
        """
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {scales}")
        size = images.shape[-2:]
        total = None  # (B, H, W, K): classes last, so the softmax and the sums read contiguous rows
        passes = 0
        for scale in scales:
            scaled = resize(images, (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))))
            for flipped in (False, True) if flip else (False,):
                inputs = scaled.flip(-1) if flipped else scaled
                if window is None:  # logits at 1/8 of the scaled image
                    logits = self.outputs(inputs, aux=False)["out"]  # (B, K, h, w)
                else:
                    logits = self._window_logits(inputs, window, stride)  # (B, K, h_s, w_s)
                if flipped:  # flipping commutes with the resize: flip the smaller tensor
                    logits = logits.flip(-1)
                logits = resize(logits, size).float().permute(0, 2, 3, 1)  # (B, H, W, K)
                probabilities = torch.softmax(logits, dim=-1)
                total = probabilities if total is None else total.add_(probabilities)
                passes += 1
        return (total / passes).permute(0, 3, 1, 2)  # (B, K, H, W)

    def _window_logits(self, images: Tensor, window: int, stride: int | None) -> Tensor:
        """Logits (B, K, H, W) of overlapping ``window`` crops of ``images``, averaged where they overlap."""
        stride = stride if stride is not None else max(1, window * 2 // 3)
        if window <= 0 or not 0 < stride <= window:
            raise ValueError(f"sliding window needs window > 0 and 0 < stride <= window, got {window}, {stride}")
        height, width = images.shape[-2:]
        logits = count = None
        for top in _window_starts(height, window, stride):
            for left in _window_starts(width, window, stride):
                crop = images[..., top : top + window, left : left + window]
                out = self(crop)["out"]  # (B, K, <=window, <=window)
                if logits is None:
                    logits = out.new_zeros((*out.shape[:2], height, width))
                    count = out.new_zeros((1, 1, height, width))
                logits[..., top : top + window, left : left + window] += out
                count[..., top : top + window, left : left + window] += 1
        return logits / count


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length``: every ``stride``, the last flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]
