"""GRAr: Graph-based Region Affinity reasoning on a bi-directional graph (sections 3.1-3.2, Eq. 2-4).

Pipeline of ``GRArHead`` on backbone features x (B, in, h, w):

1. channel adaptation: 1x1 conv in -> C (+ BN + ReLU) gives the pixel features;
2. coarse classifier (1x1 conv C -> N, N = num_classes): the coarse mask, returned
   as ``"coarse"`` logits and trained by its own CE loss (section 3.1);
3. semantic regions: one region per class from the coarse argmax; average pooling
   of the pixel features over each region gives N node features F (B, C, N)
   (section 3.1). A class absent from the coarse mask has an empty region and a
   zero node;
4. affinity reasoning on the nodes, Eq. 2-4 (``RegionGraphReasoning``);
5. mapping back: every pixel receives the node feature F̂ of its region, combined
   with its own pixel feature, then the final classifier.

Choices where the paper is silent (each documented where it is made):

- region pooling ``pooling="hard"`` (default): regions are the coarse argmax, so
  pooling is the exact region mean and mapping back copies F̂_k to the pixels of
  region k; no gradient flows through the argmax (the coarse classifier learns
  from its CE). ``pooling="soft"``: the softmax of the coarse logits over classes
  weighs every pixel into every region (mean weighted by the probabilities, the
  OCR-style soft region) and mapping back is the probability-weighted sum of the
  nodes; gradients flow into the coarse classifier through both;
- ``combine="sum"`` (default): features = pixel features + mapped-back node
  features (parameter-free, width C); ``combine="concat"``: [pixels, mapped]
  (width 2C) feed the classifier;
- λ and λ̂ start at ``lambda_init = 0`` (the residual-scale convention of DANet's
  gamma): the module starts as region pooling + fusion and learns how much
  reasoning to add; gradients reach λ, λ̂ from the first step;
- no normalisation inside the node reasoning: a BatchNorm over nodes would mix
  the zero nodes of absent classes into its statistics; the reasoning convs have
  biases instead;
- the message sums of Eq. 2-3 are not normalised by the number of nodes (as
  printed); λ, λ̂ and the convs absorb the scale.

Absent classes (hard pooling): a zero node sends nothing (F_i e_ij = 0 in every
sum of Eq. 2-3), and whatever it receives is never written back to a pixel (its
region is empty), so it cannot influence the output.

Table-3 count on 2048 channels, C = 512 (classifiers excluded): adaptation
2048*512 + BN + three node convs 512*512 (Eq. 2), 512*512 (Eq. 3), 1536*512
(Eq. 4) with biases + λ, λ̂ = 2,361,858 (2.36M; paper 2.4M).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.heads.common import classifier, conv_bn_relu

EDGES = ("graph", "conv")
POOLING = ("hard", "soft")
COMBINE = ("sum", "concat")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``name`` and the valid values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} {value!r} unknown; valid: {', '.join(choices)}")


def check_affinity(affinity: Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``affinity`` is a finite (N, N) matrix with values in [0, 1], N = num_classes."""
    if affinity.shape != (num_classes, num_classes):
        raise ValueError(
            f"affinity matrix has shape {tuple(affinity.shape)}, expected ({num_classes}, {num_classes}) "
            f"for {num_classes} classes: the statistics were computed for another dataset"
        )
    if not torch.isfinite(affinity).all() or affinity.min() < 0 or affinity.max() > 1:
        raise ValueError("affinity matrix must hold finite co-occurrence frequencies in [0, 1] (Eq. 1)")


class RegionGraphReasoning(nn.Module):
    """Affinity reasoning on N node features, Eq. 2-4.

    With node features F (B, C, N) and edge matrices e (N, N), e[i, j] the edge
    FROM node i TO node j:

    - Eq. 2 (positive): F^p_j = F_j + λ Conv(Σ_i F_i e^p_ij, Θ),     e^p_ij = f_ij
    - Eq. 3 (negative): F^n_j = F_j − λ̂ Conv(Σ_i F_i e^n_ij, Θ̂),   e^n_ij = 1 − f_ij
    - Eq. 4 (fusion):   F̂_j = Conv(F_j ⊕ F^n_j ⊕ F^p_j)

    Σ_i F_i e_ij is the matrix product F @ e; each Conv is a 1x1 convolution on
    the nodes (``nn.Conv1d``, kernel 1, with bias); λ, λ̂ are learnable scalars.
    ``positive`` / ``negative`` switch Eq. 2 / Eq. 3 off (their term leaves the
    concatenation of Eq. 4, whose conv shrinks accordingly; both off leaves region
    pooling + a 1x1 conv).

    ``edges="graph"``: f is ``affinity`` (Eq. 1 statistics, f[i, j] = frequency
    that class i co-occurs with class j, i.e. the support from i to j), a
    non-learned buffer saved with the model. ``edges="conv"`` (the "Conv" rows of
    Table 2): the statistics are discarded and e^p, e^n are two learnable N x N
    matrices initialised like ``nn.Conv1d`` (uniform ±1/sqrt(N)), i.e. a
    GloRe-style 1D convolution across the node axis learnt from scratch; Eq. 3
    keeps its minus sign; ``affinity`` may then be ``None``.
    """

    def __init__(
        self,
        channels: int,
        num_nodes: int,
        affinity: Tensor | None,
        positive: bool = True,
        negative: bool = True,
        edges: str = "graph",
        lambda_init: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("edges", edges, EDGES)
        if affinity is not None:
            check_affinity(affinity, num_nodes)
        self.edges = edges
        if edges == "graph":
            if affinity is None:
                raise ValueError("edges='graph' needs the affinity matrix of the class statistics (Eq. 1)")
            self.register_buffer("affinity", affinity.detach().float().clone())  # (N, N), f[i, j]: from i to j
        else:
            bound = 1 / math.sqrt(num_nodes)
            self.positive_edges = nn.Parameter(torch.empty(num_nodes, num_nodes).uniform_(-bound, bound))
            self.negative_edges = nn.Parameter(torch.empty(num_nodes, num_nodes).uniform_(-bound, bound))
        self.positive = positive
        self.negative = negative
        if positive:
            self.positive_conv = nn.Conv1d(channels, channels, kernel_size=1)  # Θ of Eq. 2
            self.lambda_positive = nn.Parameter(torch.tensor(float(lambda_init)))  # λ
        if negative:
            self.negative_conv = nn.Conv1d(channels, channels, kernel_size=1)  # Θ̂ of Eq. 3
            self.lambda_negative = nn.Parameter(torch.tensor(float(lambda_init)))  # λ̂
        self.fuse = nn.Conv1d((1 + positive + negative) * channels, channels, kernel_size=1)  # Eq. 4

    def edge_matrices(self) -> tuple[Tensor, Tensor]:
        """(e^p, e^n), each (N, N) with [i, j] the edge from node i to node j."""
        if self.edges == "graph":
            return self.affinity, 1 - self.affinity
        return self.positive_edges, self.negative_edges

    def forward(self, nodes: Tensor) -> Tensor:
        positive_edges, negative_edges = self.edge_matrices()
        terms = [nodes]  # F: (B, C, N)
        if self.negative:
            message = torch.matmul(nodes, negative_edges.to(nodes.dtype))  # (B, C, N): Σ_i F_i e^n_ij
            terms.append(nodes - self.lambda_negative * self.negative_conv(message))  # F^n, Eq. 3
        if self.positive:
            message = torch.matmul(nodes, positive_edges.to(nodes.dtype))  # (B, C, N): Σ_i F_i e^p_ij
            terms.append(nodes + self.lambda_positive * self.positive_conv(message))  # F^p, Eq. 2
        return self.fuse(torch.cat(terms, dim=1))  # F̂: (B, C, N), Eq. 4


def region_weights(coarse: Tensor, pooling: str) -> Tensor:
    """Pixel-to-region weights (B, N, hw) from coarse logits (B, N, h, w).

    hard: one-hot of the argmax over classes (each pixel in exactly one region);
    soft: softmax over classes (each pixel spread over all regions).
    """
    if pooling == "hard":
        labels = coarse.argmax(dim=1).flatten(1)  # (B, hw)
        return F.one_hot(labels, coarse.shape[1]).transpose(1, 2).to(coarse.dtype)  # (B, N, hw)
    return torch.softmax(coarse.flatten(2), dim=1)  # (B, N, hw)


def pool_regions(pixels: Tensor, weights: Tensor) -> Tensor:
    """Weighted average of pixel features (B, C, hw) over each region: nodes (B, C, N); empty region -> zero node."""
    sums = torch.bmm(pixels, weights.transpose(1, 2))  # (B, C, N)
    mass = weights.sum(dim=2, dtype=torch.float32)  # (B, N); float32: pixel counts are not exact in bfloat16
    return (sums / torch.where(mass > 0, mass, torch.ones_like(mass)).unsqueeze(1)).to(sums.dtype)


def map_back(nodes: Tensor, weights: Tensor) -> Tensor:
    """Node features (B, C, N) back to the pixels of their regions: (B, C, hw)."""
    return torch.bmm(nodes, weights)


class GRArHead(nn.Module):
    """The GRAr head: adaptation, coarse mask, region nodes, Eq. 2-4, mapping back, classifier.

    Returns ``{"out": logits, "coarse": coarse logits, "features": classifier
    input}`` at feature resolution; ``features`` (width C, or 2C with
    ``combine="concat"``) is what the SR-Loss pools. See the module docstring
    for the choices where the paper is silent.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int,
        affinity: Tensor | None,
        positive: bool = True,
        negative: bool = True,
        edges: str = "graph",
        pooling: str = "hard",
        combine: str = "sum",
        lambda_init: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLING)
        check_choice("combine", combine, COMBINE)
        self.adapt = conv_bn_relu(in_channels, width)  # the channel adaptation layer
        self.coarse_classifier = classifier(width, num_classes)
        self.reasoning = RegionGraphReasoning(width, num_classes, affinity, positive, negative, edges, lambda_init)
        self.pooling = pooling
        self.combine = combine
        self.feature_channels = width * (2 if combine == "concat" else 1)
        self.classifier = classifier(self.feature_channels, num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        pixels = self.adapt(x)  # (B, C, h, w)
        coarse = self.coarse_classifier(pixels)  # (B, N, h, w)
        weights = region_weights(coarse, self.pooling)  # (B, N, hw)
        nodes = pool_regions(pixels.flatten(2), weights)  # (B, C, N)
        mapped = map_back(self.reasoning(nodes), weights).view_as(pixels)  # (B, C, h, w)
        if self.combine == "sum":
            features = pixels + mapped  # (B, C, h, w)
        else:
            features = torch.cat([pixels, mapped], dim=1)  # (B, 2C, h, w)
        return {"out": self.classifier(features), "coarse": coarse, "features": features}
