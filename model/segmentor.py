"""The segmentation model: backbone + context head (+ auxiliary FCN head on layer3)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Outputs holding class logits: upsampled to the input size (once, here). The
# other outputs (e.g. "features" for the SR-Loss) stay at feature resolution.
LOGITS = ("out", "coarse", "aux", "pam", "cam")
# How ``Segmentor.predict`` fuses its passes (params ``eval.fusion``; see there).
FUSIONS = ("softmax_mean", "exp_sum")


def resize(x: Tensor, size: tuple[int, int], align_corners: bool = False) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size`` (training: align_corners=False); a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


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
        base_size: int | None = None,
        pad_value: tuple[float, ...] | float = 0.0,
        fusion: str = "softmax_mean",
        align_corners: bool = False,
    ) -> Tensor:
        """Class probabilities (B, K, H, W) at the input size; call ``eval()`` first.

        Single scale: ``scales=(1.0,)``, ``flip=False``. The "MS" column of
        Table 1: ``scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``, ``flip=True``.
        Each pass's size is ``scaled_size`` (``base_size``: the long side
        becomes base_size x scale, as PyTorch-Encoding's MultiEvalModule does;
        ``None``: the image's own size x scale). With ``window`` set, each
        scaled image goes through ``window_logits`` (``window`` x ``window``
        crops every ``stride`` pixels, default int(2/3 window), padded with
        ``pad_value``). The auxiliary head is not run. ``align_corners``: of
        every bilinear resize here (the image to each scale, a crop's logits
        to the crop, a pass to the input size).

        ``fusion`` (``FUSIONS``):

        - ``softmax_mean`` (mmsegmentation's ``EncoderDecoder.aug_test``,
          mmseg/models/segmentors/encoder_decoder.py): the logits of a pass
          (windows averaged where they overlap) are resized once to the input
          size and softmaxed; the softmax of every (scale, flip) pass is
          averaged, the flip being of the whole scaled image.
        - ``exp_sum`` (PyTorch-Encoding's ``MultiEvalModule.forward`` and
          ``module_inference``, encoding/models/sseg/base.py): each window
          gives exp(logits + the flipped window's logits flipped back) (just
          exp(logits) without ``flip``), the logits first resized to the
          window; windows are averaged where they overlap, each scale's map
          resized to the input size, and the scales summed. Encoding pads every
          window, and a scaled image smaller than the window, to the window;
          so does ``window_logits``; without ``window`` the whole scaled image
          is the one window. Sums of exponentials are not probabilities: they
          are divided by their sum over the classes at the end (per pixel, so
          the argmax is Encoding's), to return what ``softmax_mean`` returns.
          With ``align_corners=True`` and a ``window`` this is
          ``MultiEvalModule`` exactly (float32 sums, as there; so, as there, a
          logit sum above ~88 overflows float32's exp).
        """
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive, got {scales}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
        size = images.shape[-2:]
        crop_logits = functools.partial(self._crop_logits, align_corners=align_corners)
        if fusion == "exp_sum":
            scores = None  # (B, K, H, W), float32
            window_scores = functools.partial(self._window_exp, flip=flip, align_corners=align_corners)
            for scale in scales:
                scaled = resize(images, scaled_size((size[0], size[1]), scale, base_size), align_corners)
                if window is None:  # the scaled image is the one window
                    out = window_scores(scaled)  # (B, K, h, w)
                else:
                    out = window_logits(window_scores, scaled, window, stride, pad_value)  # (B, K, h, w)
                out = resize(out.float(), size, align_corners)  # (B, K, H, W)
                scores = out if scores is None else scores.add_(out)
            return scores / scores.sum(dim=1, keepdim=True)  # (B, K, H, W)
        total = None  # (B, H, W, K): classes last, so the softmax and the sums read contiguous rows
        passes = 0
        for scale in scales:
            scaled = resize(images, scaled_size((size[0], size[1]), scale, base_size), align_corners)
            for flipped in (False, True) if flip else (False,):
                inputs = scaled.flip(-1) if flipped else scaled
                if window is None:  # logits at 1/8 of the scaled image
                    logits = self.outputs(inputs, aux=False)["out"]  # (B, K, h, w)
                else:  # logits at the scaled image's size
                    logits = window_logits(crop_logits, inputs, window, stride, pad_value)
                if flipped:  # flipping commutes with the resize: flip the smaller tensor
                    logits = logits.flip(-1)
                logits = resize(logits, size, align_corners).float().permute(0, 2, 3, 1)  # (B, H, W, K)
                probabilities = torch.softmax(logits, dim=-1)
                total = probabilities if total is None else total.add_(probabilities)
                passes += 1
        return (total / passes).permute(0, 3, 1, 2)  # (B, K, H, W)

    def _crop_logits(self, crop: Tensor, align_corners: bool = False) -> Tensor:
        """Logits (B, K, h, w) of a crop at its own size, without the auxiliary head."""
        return resize(self.outputs(crop, aux=False)["out"], crop.shape[-2:], align_corners)

    def _window_exp(self, crop: Tensor, flip: bool, align_corners: bool) -> Tensor:
        """Encoding's ``module_inference``: exp(logits (+ the flipped crop's logits, flipped back)), float32."""
        logits = self._crop_logits(crop, align_corners).float()  # (B, K, h, w)
        if flip:
            logits = logits + self._crop_logits(crop.flip(-1), align_corners).float().flip(-1)
        return logits.exp()


def scaled_size(size: tuple[int, int], scale: float, base_size: int | None = None) -> tuple[int, int]:
    """The (height, width) an image of ``size`` is resized to for one inference scale.

    ``base_size`` None: round(side x scale), at least 1. Otherwise as
    PyTorch-Encoding's ``MultiEvalModule.forward`` (encoding/models/base.py):
    long side = ceil(base_size x scale), short side = int(short x long / old
    long + 0.5), the aspect ratio kept.
    """
    height, width = size
    if base_size is None:
        return max(1, round(height * scale)), max(1, round(width * scale))
    long = math.ceil(base_size * scale)
    if height > width:
        return long, max(1, int(width * long / height + 0.5))
    return max(1, int(height * long / width + 0.5)), long


def window_logits(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    window: int,
    stride: int | None = None,
    pad_value: tuple[float, ...] | float = 0.0,
) -> Tensor:
    """Logits (B, K, H, W) of ``images`` (B, C, H, W) from ``window`` x ``window`` crops, averaged where they overlap.

    As PyTorch-Encoding's ``MultiEvalModule`` (encoding/models/base.py): the
    image is padded at the bottom and right to at least ``window`` on each
    side; windows start every ``stride`` pixels (default int(window x 2/3)),
    ceil((padded - window) / stride) + 1 of them per axis; a window running
    past the padded image is cut there and padded back to ``window`` (so
    ``forward`` always sees ``window`` x ``window``); the logits of the padding
    are dropped. ``pad_value`` is one value per channel (the reference pads
    with black: -mean / std after normalisation). ``forward`` maps a crop
    (B, C, window, window) to logits (B, K, window, window).
    """
    stride = stride if stride is not None else int(window * 2 / 3)
    if window <= 0 or not 0 < stride <= window:
        raise ValueError(f"sliding window needs window > 0 and 0 < stride <= window, got {window}, {stride}")
    height, width = images.shape[-2:]
    padded = _pad(images, max(height, window), max(width, window), pad_value)  # (B, C, ph, pw)
    ph, pw = padded.shape[-2:]
    logits = count = None
    for top in _window_starts(ph, window, stride):
        for left in _window_starts(pw, window, stride):
            bottom, right = min(top + window, ph), min(left + window, pw)
            crop = _pad(padded[..., top:bottom, left:right], window, window, pad_value)  # (B, C, window, window)
            out = forward(crop)[..., : bottom - top, : right - left]  # (B, K, bottom - top, right - left)
            if logits is None:  # float32 sums, whatever autocast gives the crops
                logits = out.new_zeros((*out.shape[:2], ph, pw), dtype=torch.float32)
                count = out.new_zeros((1, 1, ph, pw), dtype=torch.float32)
            logits[..., top:bottom, left:right] += out.float()
            count[..., top:bottom, left:right] += 1
    return (logits / count)[..., :height, :width]


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets 0, stride, 2 stride... along an axis of ``length`` >= ``window``.

    There are ceil((length - window) / stride) + 1 of them.
    """
    return [i * stride for i in range(math.ceil((length - window) / stride) + 1)]


def _pad(images: Tensor, height: int, width: int, value: tuple[float, ...] | float) -> Tensor:
    """``images`` (B, C, h, w) padded at the bottom and right to (height, width) with one value per channel."""
    h, w = images.shape[-2:]
    if (h, w) == (height, width):
        return images
    values = torch.as_tensor(value, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)
    out = values.expand(images.shape[0], images.shape[1], height, width).clone()
    out[..., :h, :w] = images
    return out
