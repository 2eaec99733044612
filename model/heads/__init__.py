"""Context heads on backbone features, one interface: ``forward(x) -> dict``.

Every head is built as ``Head(in_channels, num_classes, width, ...)`` (GRAr adds
its affinity and switches), sizes itself from ``in_channels`` (the backbone's
``out_channels``) and ``width`` (params ``model.width``; the paper's 512), and
returns at feature resolution:

- ``"out"``: class logits (B, K, h, w);
- ``"features"``: the classifier's input (B, ``feature_channels``, h, w), which
  the SR-Loss (Eq. 5) pools;
- ``"coarse"`` (GRAr, OCR): coarse-mask logits (B, K, h, w), trained by a CE;
- ``"pam"``, ``"cam"`` (DANet built as its reference): the position-only and
  channel-only branches' logits (B, K, h, w), each trained by a CE.

"The module" of Table 3 is a head without its class-dependent classifiers
(``classifier``, ``coarse_classifier``, DANet's ``pam_classifier`` and
``cam_classifier``): see ``module_parameters``.
"""

from __future__ import annotations

from torch import nn

from model.heads.aspp import ASPPHead
from model.heads.danet import DANetHead
from model.heads.fcn import FCNHead
from model.heads.grar import GRArHead
from model.heads.ocr import OCRHead
from model.heads.ppm import PPMHead

# Head name (params ``model.head``) -> class.
HEADS: dict[str, type[nn.Module]] = {
    "fcn": FCNHead,
    "ppm": PPMHead,
    "aspp": ASPPHead,
    "danet": DANetHead,
    "ocr": OCRHead,
    "grar": GRArHead,
}

CLASSIFIERS = ("classifier.", "coarse_classifier.", "pam_classifier.", "cam_classifier.")


def module_parameters(head: nn.Module) -> int:
    """Parameters of the head as Table 3 counts "the module": all but the classifiers to the K classes.

    The classifiers are 1x1 convs to the K classes that every method has (the
    FCN baseline too); leaving them out makes the count independent of the
    dataset. GRAr's ``edges="conv"`` matrices (N x N) do count.
    """
    return sum(p.numel() for name, p in head.named_parameters() if not name.startswith(CLASSIFIERS))
