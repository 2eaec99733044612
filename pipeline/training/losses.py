"""Training losses (beside training, never inside a head): pixel CE, auxiliary CE, coarse CE, SR-Loss (Eq. 5-6),
and DANet's branch CEs.

``Criterion(outputs, target)`` returns a dict of named terms and their weighted
sum under ``"total"``, computed in one place:

    total = CE(out) + w_aux CE(aux) + w_coarse CE(coarse) + w_sr SR(features)
            + w_danet (CE(pam) + CE(cam))

which is Eq. 6 (L = L_s + (w_sr / K) Σ_k w_k L_k) with L_s the pixel CE plus the
auxiliary and coarse-mask CEs; the last term exists for DANet built as its
reference (``model.danet: reference``) only. Pixels labelled ``IGNORE_INDEX`` (255) count in
no term. ``Criterion`` holds the SR-Loss's fully connected layer: its parameters
must go to the optimiser with the model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.datasets.layout import IGNORE_INDEX

RESOLUTIONS = ("full", "feature")  # where the pixel CEs are computed: the labels' size, or the logits' (1/8)


def labels_at(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Labels (B, H, W) resized to ``size`` by nearest neighbour (ignored pixels stay 255); as is at that size."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def region_means(features: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mask average pooling over ground-truth regions, Eq. 5.

    ``features`` (B, C, h, w), ``target`` (B, H, W) class ids with ``IGNORE_INDEX``.
    The target is resized to (h, w) by nearest neighbour; ignored pixels belong
    to no region. Returns the region means (B, K, C) and the region sizes (B, K)
    in feature pixels (0: class absent from the image at feature resolution).
    """
    labels = labels_at(target, features.shape[-2:]).flatten(1)  # (B, hw)
    classes = torch.arange(num_classes, device=labels.device)
    masks = (labels[:, None, :] == classes[None, :, None]).float()  # (B, K, hw); 255 matches no class
    sizes = masks.sum(dim=2)  # (B, K)
    sums = torch.bmm(masks, features.flatten(2).transpose(1, 2).float())  # (B, K, C), float32 under autocast
    return sums / sizes.clamp(min=1).unsqueeze(2), sizes


def pixel_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean CE over the labelled pixels of logits (B, K, h, w); 0 (not NaN) when every pixel is ignored.

    ``target`` (B, H, W) is resized to (h, w) by nearest neighbour when the
    logits are smaller (``train.loss.resolution: feature``).

    Computed on the (B*H*W, K) rows of channels-last logits: the class axis is
    then contiguous, so the log-softmax needs no copy of the full-resolution
    logits (``benchmarks/loss_throughput.py``: 0.70x the time of the 4-D call
    at 8 x 24 x 32 x 192 on CPU, upsampling and backward included).
    """
    target = labels_at(target, logits.shape[-2:])  # (B, h, w)
    rows = logits.float().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])  # (B*h*w, K)
    total = F.cross_entropy(rows, target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


class SemanticRegionLoss(nn.Module):
    """SR-Loss (section 3.3, Eq. 5-6): classify the mean feature of every ground-truth region.

    For each image and each class k present in its ground truth (at feature
    resolution), the features are mask-average-pooled over the region of k
    (Eq. 5), a fully connected layer shared by all classes gives K-way logits,
    and L_k is the CE against k. Per image the loss is (1 / K_img) Σ_k w_k L_k
    with K_img the number of classes present; the batch loss is the mean over
    the images that contain at least one labelled region (an image with none
    adds nothing). w_sr of Eq. 6 is applied by ``Criterion``.

    ``class_weights`` (K,) are the w_k (default: all 1, "uniform"), a buffer.
    """

    def __init__(self, in_channels: int, num_classes: int, class_weights: Tensor | None = None) -> None:
        super().__init__()
        if class_weights is None:
            class_weights = torch.ones(num_classes)
        if class_weights.shape != (num_classes,):
            raise ValueError(f"class_weights has shape {tuple(class_weights.shape)}, expected ({num_classes},)")
        self.num_classes = num_classes
        self.fc = nn.Linear(in_channels, num_classes)
        self.register_buffer("class_weights", class_weights.detach().float().clone())

    def forward(self, features: Tensor, target: Tensor) -> Tensor:
        means, sizes = region_means(features, target, self.num_classes)  # (B, K, C), (B, K)
        present = sizes > 0  # (B, K)
        image_index, class_index = present.nonzero(as_tuple=True)  # (R,), (R,): one entry per region
        if image_index.numel() == 0:
            return features.sum() * 0  # no labelled region in the batch: zero, still in the graph
        logits = self.fc(means[image_index, class_index])  # (R, K)
        losses = F.cross_entropy(logits, class_index, reduction="none") * self.class_weights[class_index]  # (R,)
        per_image = torch.zeros(features.shape[0], device=features.device).index_add(0, image_index, losses)
        regions = present.sum(dim=1)  # (B,): K_img
        has_regions = regions > 0
        return (per_image[has_regions] / regions[has_regions]).mean()


class Criterion(nn.Module):
    """The training objective: a dict of named loss terms and their weighted ``"total"``.

    Terms: ``"ce"`` (pixel CE on ``outputs["out"]``), ``"aux"`` (on ``"aux"``),
    ``"coarse"`` (on ``"coarse"``, GRAr / OCR), ``"sr"`` (SR-Loss on
    ``"features"``), ``"danet"`` (CE on ``"pam"`` + CE on ``"cam"``, DANet's
    reference build); a term is present when its outputs are and its weight is > 0.

    ``resolution`` (``train.loss.resolution``): ``"full"``, the logits are at the
    target's size (``Segmentor.forward`` upsamples them), as in the paper;
    ``"feature"``, the logits stay at feature resolution (``Segmentor.outputs``,
    1/8) and the target is resized to them by nearest neighbour, as the SR-Loss
    does: no full-resolution upsampling and log-softmax, a different loss
    (``benchmarks/run_cost.py`` measures both; docs/training.md, "Threads and runs side by side").
    """

    def __init__(
        self,
        num_classes: int,
        feature_channels: int,
        aux_weight: float,
        coarse_weight: float,
        sr_weight: float,
        class_weights: Tensor | None = None,
        danet_weight: float = 0.0,
        resolution: str = "full",
    ) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution {resolution!r} unknown; valid: {', '.join(RESOLUTIONS)}")
        self.resolution = resolution
        self.weights = {"ce": 1.0, "aux": aux_weight, "coarse": coarse_weight, "sr": sr_weight, "danet": danet_weight}
        self.sr = SemanticRegionLoss(feature_channels, num_classes, class_weights) if sr_weight > 0 else None

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        terms = {}
        for term, key in (("ce", "out"), ("aux", "aux"), ("coarse", "coarse")):
            if key in outputs and self.weights[term] > 0:
                terms[term] = pixel_cross_entropy(outputs[key], target)
        if self.sr is not None and "features" in outputs:
            terms["sr"] = self.sr(outputs["features"], target)
        if "pam" in outputs and "cam" in outputs and self.weights["danet"] > 0:
            terms["danet"] = pixel_cross_entropy(outputs["pam"], target) + pixel_cross_entropy(outputs["cam"], target)
        terms["total"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms
