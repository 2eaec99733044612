"""Dilated backbones at output stride 8 (section 4.1).

"The CNN backbone is truncated from the last pooling layer and the last two
downsampling operations are discarded, i.e. the output stride is 8": layer3 and
layer4 keep the resolution of layer2 and use dilation 2 and 4 instead of
stride 2 (torchvision's ``replace_stride_with_dilation=[False, True, True]``,
timm's ``output_stride=8``).

Every backbone is a ``Backbone``: ``forward(images)`` returns
``{"layer3": ..., "layer4": ...}`` (the auxiliary FCN head reads layer3, the
context head layer4) and the module declares ``out_channels`` (layer4),
``aux_channels`` (layer3) and ``output_stride``; heads size themselves from
them. The state-dict keys of ``Backbone.body`` are those of the source model
(torchvision / timm) without its ImageNet classifier ``fc``, so a local weight
file of that model loads into ``body`` (``pipeline.training.build.load_backbone_weights``).
All weights are randomly initialised here: this module does no I/O.

Stems (``stem``, params ``model.stem``), for the ResNets and ``tiny_resnet``:
``standard`` is torchvision's 7x7 conv; the two deep stems replace it by three
3x3 convs (the first with stride 2), BN + ReLU between them, then ``bn1``:

- ``deep``: PyTorch-Encoding's ``resnet50s`` / ``resnet101s``
  (encoding/models/backbone/resnet.py, ``deep_stem=True, stem_width=64``):
  widths 64, 64, 128, so layer1 starts from 128 channels;
- ``deep_v1c``: mmsegmentation's ``ResNetV1c`` (mmseg/models/backbones/resnet.py,
  ``make_stem`` with ``stem_channels=64``): widths 32, 32, 64.

Both keep torchvision's key names ``conv1.0``, ``conv1.1``, ``conv1.3``,
``conv1.4``, ``conv1.6``, ``bn1`` (PyTorch-Encoding's own);
``pipeline.training.build.load_backbone_weights`` renames mmseg's ``stem.*`` to them.
For ``tiny_resnet`` the widths scale with its 32-channel stem.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models import resnet101 as tv_resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck, conv1x1, conv3x3

DILATE_LAST_TWO = [False, True, True]  # layer2 strides, layer3/layer4 dilate: output stride 8
RETURN_LAYERS = {"layer3": "layer3", "layer4": "layer4"}

# The tiny backbone of the embedded profile: torchvision Bottleneck blocks, narrow.
TINY_STEM = 32
TINY_PLANES = (16, 32, 64, 128)  # Bottleneck planes; outputs are 4x: 64, 128, 256, 512
TINY_BLOCKS = (1, 1, 2, 1)

# Stem name (params ``model.stem``) -> (middle width, output width) as multiples of the standard stem's width.
STEMS: dict[str, tuple[float, float] | None] = {"standard": None, "deep": (1, 2), "deep_v1c": (0.5, 1)}


class Backbone(nn.Module):
    """A feature extractor returning layer3 and layer4 by name.

    ``body`` must return an ordered mapping of exactly (layer3, layer4) features
    (torchvision's ``IntermediateLayerGetter``, timm's ``FeatureDictNet``).
    """

    def __init__(self, body: nn.Module, out_channels: int, aux_channels: int, output_stride: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.aux_channels = aux_channels
        self.output_stride = output_stride

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        layer3, layer4 = self.body(images).values()  # (B, aux_channels, H/8, W/8), (B, out_channels, H/8, W/8)
        return {"layer3": layer3, "layer4": layer4}


def _from_torchvision(resnet: nn.Module) -> Backbone:
    """Wrap a torchvision ResNet built with ``DILATE_LAST_TWO`` (its ``fc`` and pooling are dropped)."""
    return Backbone(
        IntermediateLayerGetter(resnet, RETURN_LAYERS),
        out_channels=resnet.layer4[-1].conv3.out_channels,
        aux_channels=resnet.layer3[-1].conv3.out_channels,
        output_stride=8,
    )


def replace_stem(resnet: nn.Module, stem: str) -> nn.Module:
    """Swap the 7x7 stem of a torchvision-style ResNet (``conv1``, ``bn1``, ``layer1``) for ``stem``, in place.

    The stem widths are ``STEMS[stem]`` times the standard stem's; when the
    output width changes, the first layer1 block's ``conv1`` and downsample
    conv take the new width (as PyTorch-Encoding's ``inplanes = stem_width * 2``).
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    if STEMS[stem] is None:
        return resnet
    base = resnet.conv1.out_channels
    middle, out = (int(base * factor) for factor in STEMS[stem])
    resnet.conv1 = nn.Sequential(
        conv3x3(3, middle, stride=2),
        nn.BatchNorm2d(middle),
        nn.ReLU(inplace=True),
        conv3x3(middle, middle),
        nn.BatchNorm2d(middle),
        nn.ReLU(inplace=True),
        conv3x3(middle, out),
    )
    resnet.bn1 = nn.BatchNorm2d(out)
    block = resnet.layer1[0]
    if out != block.conv1.in_channels:
        block.conv1 = conv1x1(out, block.conv1.out_channels)
        block.downsample[0] = conv1x1(out, block.downsample[0].out_channels, block.downsample[0].stride)
    for module in (*resnet.conv1.modules(), block.conv1, block.downsample[0]):
        if isinstance(module, nn.Conv2d):  # torchvision's ResNet initialisation
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return resnet


def resnet50(stem: str = "standard") -> Backbone:
    """Dilated ResNet-50 (torchvision), output stride 8: 1024 / 2048 channels; ``stem`` as above."""
    return _from_torchvision(
        replace_stem(tv_resnet50(weights=None, replace_stride_with_dilation=DILATE_LAST_TWO), stem)
    )


def resnet101(stem: str = "standard") -> Backbone:
    """Dilated ResNet-101 (torchvision), output stride 8: 1024 / 2048 channels; ``stem`` as above."""
    return _from_torchvision(
        replace_stem(tv_resnet101(weights=None, replace_stride_with_dilation=DILATE_LAST_TWO), stem)
    )


def resnest101(stem: str = "standard") -> Backbone:
    """ResNeSt-101 (timm ``resnest101e``: deep stem of width 64, as in the ResNeSt paper), output stride 8.

    Its stem is its own (3x3 convs 64-64-128, the widths of ``deep``): ``standard`` and ``deep`` both build it
    as it is (no replacement), ``deep_v1c`` is refused.
    """
    if stem not in ("standard", "deep"):
        raise ValueError(
            f"stem {stem!r}: resnest101 has its own deep stem (64-64-128, as 'deep'); use deep or standard"
        )
    import timm  # imported here: timm's import is slow and only this backbone needs it

    body = timm.create_model(
        "resnest101e", pretrained=False, features_only=True, out_indices=(3, 4), output_stride=8, feature_cls="dict"
    )
    aux_channels, out_channels = body.feature_info.channels()
    return Backbone(body, out_channels=out_channels, aux_channels=aux_channels, output_stride=8)


def tiny_resnet(stem: str = "standard") -> Backbone:
    """A narrow dilated ResNet for the embedded profile (32 x 192 strips on 2 CPU cores).

    Same topology as torchvision's dilated ResNet (7x7 stem + max-pool, four
    stages of torchvision ``Bottleneck`` blocks, layer3/layer4 dilated 2/4 so
    the output stride is 8) with a 32-channel stem, planes 16/32/64/128 and
    1/1/2/1 blocks: 0.58M parameters, layer3 256 and layer4 512 channels.
    """
    stages: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(3, TINY_STEM, kernel_size=7, stride=2, padding=3, bias=False)),
        ("bn1", nn.BatchNorm2d(TINY_STEM)),
        ("relu", nn.ReLU(inplace=True)),
        ("maxpool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]
    inplanes, dilation = TINY_STEM, 1
    for index, (planes, blocks, dilate) in enumerate(zip(TINY_PLANES, TINY_BLOCKS, [False, *DILATE_LAST_TWO])):
        stride = 1 if index == 0 else 2
        previous_dilation = dilation
        if dilate:  # torchvision's rule: the stride becomes dilation, the first block keeps the previous one
            dilation, stride = dilation * stride, 1
        downsample = None
        if stride != 1 or inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                conv1x1(inplanes, planes * Bottleneck.expansion, stride), nn.BatchNorm2d(planes * Bottleneck.expansion)
            )
        layer = [Bottleneck(inplanes, planes, stride, downsample, dilation=previous_dilation)]
        inplanes = planes * Bottleneck.expansion
        layer += [Bottleneck(inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        stages.append((f"layer{index + 1}", nn.Sequential(*layer)))
    body = nn.Sequential(OrderedDict(stages))
    for module in body.modules():  # torchvision's ResNet initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    replace_stem(body, stem)
    return Backbone(
        IntermediateLayerGetter(body, RETURN_LAYERS),
        out_channels=TINY_PLANES[3] * Bottleneck.expansion,
        aux_channels=TINY_PLANES[2] * Bottleneck.expansion,
        output_stride=8,
    )


# Backbone name (params ``model.backbone``) -> constructor (taking ``stem``).
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "tiny_resnet": tiny_resnet,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnest101": resnest101,
}
