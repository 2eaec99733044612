"""Build models and the criterion from the config: parts chosen by name, local pretrained weights.

``model/`` holds pure modules with explicit arguments; this is where params
(``ModelConfig``, ``LossConfig``) become those arguments, and where the one file
the model needs (the backbone's pretrained weights) is read. What a run reads
from its dataset and statistics to build them: ``pipeline.training.inputs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.backbones import BACKBONES, Backbone
from model.heads import HEADS
from model.heads.danet import DANetHead
from model.heads.fcn import FCNHead
from model.heads.grar import GRArHead
from model.segmentor import Segmentor
from pipeline.config import GrarConfig, LossConfig, ModelConfig, WeightsConfig
from pipeline.errors import ConfigError, DataError
from pipeline.training.losses import Criterion
from pipeline.weights import expected_text, pretrained_path, published_for, verify_published

CLASSIFIER_KEYS = ("fc.",)  # the ImageNet classifier of torchvision / timm weight files: not part of a backbone
DANET_BUILDS = {"matched": False, "reference": True}  # model.danet -> DANetHead(reference=...)
# Whole-model checkpoints whose backbone sits under a prefix: mmsegmentation's segmentors ("backbone.",
# beside "decode_head." / "auxiliary_head."), PyTorch-Encoding's BaseNet ("pretrained.", beside "head." /
# "auxlayer.", encoding/models/base.py). Only the prefixed keys are kept, without the prefix.
BACKBONE_PREFIXES = ("backbone.", "pretrained.")
# mmsegmentation's ResNetV1c deep stem (mmseg/models/backbones/resnet.py: self.stem = Sequential(conv, norm,
# relu, conv, norm, relu, conv, norm, relu)) -> this project's names (PyTorch-Encoding's: conv1.N, then bn1).
MMSEG_STEM = {
    "stem.0.": "conv1.0.",
    "stem.1.": "conv1.1.",
    "stem.3.": "conv1.3.",
    "stem.4.": "conv1.4.",
    "stem.6.": "conv1.6.",
    "stem.7.": "bn1.",
}


def lookup(table: Mapping[str, Any], name: str, key: str) -> Any:
    """``table[name]``, or a ``ConfigError`` naming ``key`` and listing the valid names."""
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"{key}: unknown value {name!r}; valid: {', '.join(table)}") from None


def build_head(
    name: str,
    in_channels: int,
    num_classes: int,
    width: int,
    grar: GrarConfig,
    affinity: Tensor | None = None,
    affinity_source: str = "affinity matrix",
    danet: str = "matched",
) -> nn.Module:
    """Head ``name`` sized from the backbone's channels and ``width``; GRAr gets ``affinity`` and its switches.

    ``danet`` (``model.danet``): ``matched`` (Table 3's size) or ``reference`` (DANet's own code).
    """
    head_class = lookup(HEADS, name, "model.head")
    if head_class is DANetHead:
        return DANetHead(in_channels, num_classes, width, reference=lookup(DANET_BUILDS, danet, "model.danet"))
    if head_class is not GRArHead:
        return head_class(in_channels, num_classes, width)
    if grar.edges == "graph" and affinity is None:
        raise ConfigError("model.grar.edges: graph needs the affinity matrix of the class statistics")
    try:
        return GRArHead(
            in_channels,
            num_classes,
            width,
            affinity,
            positive=grar.positive,
            negative=grar.negative,
            edges=grar.edges,
            pooling=grar.pooling,
            combine=grar.combine,
        )
    except ValueError as err:
        raise DataError(f"{affinity_source}: {err}") from None


def build_segmentor(
    config: ModelConfig,
    num_classes: int,
    affinity: Tensor | None = None,
    affinity_source: str = "affinity matrix",
    weights: WeightsConfig | None = None,
) -> Segmentor:
    """The model of ``config``: backbone (with ``config.pretrained`` weights), head, auxiliary FCN head on layer3.

    ``affinity`` (K, K) is the Eq. 1 matrix for GRAr with ``edges: graph``;
    ``affinity_source`` (e.g. its Parquet path) names it in errors. ``weights``
    (the params' section) resolves ``model.pretrained: imagenet`` (``pipeline.weights``).
    """
    try:
        backbone: Backbone = lookup(BACKBONES, config.backbone, "model.backbone")(stem=config.stem)
    except ValueError as err:
        raise ConfigError(f"model.stem: {err}") from None
    pretrained = pretrained_path(config, weights)
    published = published_for(config, weights)
    if published is not None and pretrained is not None:
        verify_published(published, pretrained)  # every use, not only a fetch: a file copied there too
    if pretrained is not None:
        load_backbone_weights(backbone, pretrained, config.backbone, expected_text(config, weights))
    head = build_head(
        config.head,
        backbone.out_channels,
        num_classes,
        config.width,
        config.grar,
        affinity,
        affinity_source,
        config.danet,
    )
    aux_head = FCNHead(backbone.aux_channels, num_classes, config.width // 2) if config.aux else None
    return Segmentor(backbone, head, aux_head)


def load_backbone_weights(
    backbone: Backbone, path: str | os.PathLike, name: str = "backbone", published: str = ""
) -> None:
    """Load a local weight file of the backbone's source model into ``backbone.body``.

    Sources: torchvision / timm ImageNet weights, PyTorch-Encoding's
    (``resnet50s``... with ``model.stem: deep``; whole segmentation models keep
    their ``pretrained.*`` keys) and mmsegmentation's (``ResNetV1c`` with
    ``model.stem: deep_v1c``; its ``stem.*`` keys are renamed, whole segmentors
    keep their ``backbone.*`` keys). Accepted: a state dict, or a dict holding
    one under ``"state_dict"``; a ``module.`` prefix (DataParallel) and the
    ImageNet classifier ``fc.*`` are dropped. A missing file, a file that is not a state dict, or keys / shapes
    that do not match the backbone raise ``DataError`` naming the file (and
    ``published``, the published file it should be, when there is one): never a
    silent random initialisation.
    """
    path = Path(path)
    where = f"model.pretrained: {path}"
    if not path.is_file():
        fix = "run `grar weights fetch`" if published else "set model.pretrained: null for random initialisation"
        raise DataError(f"{where}: file not found{published}; backbone weights are read from a local file ({fix})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise DataError(f"{where}: not a PyTorch weight file ({type(err).__name__}: {err}){published}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise DataError(f"{where}: expected a state dict (parameter name -> tensor){published}")
    state = backbone_state(state)
    expected = backbone.body.state_dict()
    # BatchNorm fills in num_batches_tracked when a file predates it.
    missing = sorted(key for key in set(expected) - set(state) if not key.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(
            f"{where}: keys do not match the {name} backbone: {len(missing)} missing ({_some(missing)}), "
            f"{len(unexpected)} unexpected ({_some(unexpected)}){published}"
        )
    wrong = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in sorted(state)
        if state[key].shape != expected[key].shape
    ]
    if wrong:
        raise DataError(f"{where}: shapes do not match the {name} backbone: {_some(wrong)}{published}")
    backbone.body.load_state_dict(state, strict=False)


def backbone_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A weight file's state dict with this project's backbone names (see ``load_backbone_weights``)."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    for prefix in BACKBONE_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
            break
    renamed = {}
    for key, value in state.items():
        old = next((old for old in MMSEG_STEM if key.startswith(old)), None)
        renamed[MMSEG_STEM[old] + key.removeprefix(old) if old else key] = value
    return {key: value for key, value in renamed.items() if not key.startswith(CLASSIFIER_KEYS)}


def _some(items: list[str], limit: int = 3) -> str:
    """The first ``limit`` items, comma-separated, with '...' when there are more; 'none' when empty."""
    if not items:
        return "none"
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def build_criterion(
    loss: LossConfig, num_classes: int, feature_channels: int, class_weights: Tensor | None = None
) -> Criterion:
    """The loss of Eq. 6 with the weights of ``train.loss``; ``class_weights`` are the w_k for ``frequency``."""
    if loss.sr_class_weights == "frequency" and class_weights is None:
        raise ConfigError("train.loss.sr_class_weights: frequency needs the class weights from the statistics")
    if loss.sr_class_weights == "uniform":
        class_weights = None
    return Criterion(
        num_classes, feature_channels, loss.aux, loss.coarse, loss.sr, class_weights, loss.danet, loss.resolution
    )


class TrainingStep(nn.Module):
    """Model and criterion as one module, so DDP all-reduces the SR-Loss classifier's gradients with the model's."""

    def __init__(self, model: Segmentor, criterion: Criterion) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: Tensor, target: Tensor) -> dict[str, Tensor]:
        if self.criterion.resolution == "feature":  # logits left at 1/8: the CEs resize the target instead
            return self.criterion(self.model.outputs(images), target)
        return self.criterion(self.model(images), target)
