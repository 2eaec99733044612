"""Losses: SR-Loss (Eq. 5-6) on a constructed example, ignore pixels, batch reduction, the criterion's sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.datasets.layout import IGNORE_INDEX
from pipeline.training.losses import Criterion, SemanticRegionLoss, pixel_cross_entropy, region_means

# Labels at feature resolution (2 x 3); class 1 is absent, one pixel is ignored.
SMALL_LABELS = [[0, 0, 2], [IGNORE_INDEX, 2, 2]]
FEATURES = [  # (C=3, 2, 3); the ignored pixel holds 50s
    [[1.0, 3.0, 0.0], [50.0, 2.0, 4.0]],
    [[0.0, 2.0, 1.0], [50.0, 1.0, 1.0]],
    [[2.0, 2.0, 3.0], [-50.0, 0.0, 2.0]],
]
MEAN_0 = [2.0, 1.0, 2.0]  # pixels (0, 0), (0, 1)
MEAN_2 = [2.0, 1.0, 5.0 / 3.0]  # pixels (0, 2), (1, 1), (1, 2)


def target() -> torch.Tensor:
    """The labels at input resolution (4 x 6): 2 x 2 blocks, so nearest downsampling recovers SMALL_LABELS."""
    small = torch.tensor([SMALL_LABELS])
    return small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # (1, 4, 6)


def cross_entropy_by_hand(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def identity_loss(class_weights=None) -> SemanticRegionLoss:
    """SR-Loss whose shared FC layer is the identity: the logits are the region means."""
    loss = SemanticRegionLoss(3, 3, class_weights)
    with torch.no_grad():
        loss.fc.weight.copy_(torch.eye(3))
        loss.fc.bias.zero_()
    return loss


def test_region_means_pool_over_ground_truth_regions_only():
    means, sizes = region_means(torch.tensor([FEATURES]), target(), 3)
    torch.testing.assert_close(sizes, torch.tensor([[2.0, 0.0, 3.0]]))
    torch.testing.assert_close(means[0, 0], torch.tensor(MEAN_0))
    torch.testing.assert_close(means[0, 1], torch.zeros(3))
    torch.testing.assert_close(means[0, 2], torch.tensor(MEAN_2))


def test_sr_loss_value_by_hand():
    value = identity_loss()(torch.tensor([FEATURES]), target())
    expected = (cross_entropy_by_hand(MEAN_0, 0) + cross_entropy_by_hand(MEAN_2, 2)) / 2  # K = 2 classes present
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_sr_loss_class_weights():
    value = identity_loss(torch.tensor([1.0, 7.0, 3.0]))(torch.tensor([FEATURES]), target())
    expected = (1.0 * cross_entropy_by_hand(MEAN_0, 0) + 3.0 * cross_entropy_by_hand(MEAN_2, 2)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_ignored_pixels_never_enter_a_region():
    features = torch.tensor([FEATURES])
    changed = features.clone()
    changed[0, :, 1, 0] = torch.tensor([-1e3, 7.0, 1e3])  # the ignored pixel
    loss = identity_loss()
    torch.testing.assert_close(loss(changed, target()), loss(features, target()))


def test_batch_mean_over_images_with_labelled_regions():
    loss = identity_loss()
    single = loss(torch.tensor([FEATURES]), target())
    unlabelled = torch.full((1, 4, 6), IGNORE_INDEX)
    batch = loss(torch.tensor([FEATURES, FEATURES]), torch.cat([target(), unlabelled]))
    torch.testing.assert_close(batch, single)  # the unlabelled image adds nothing
    other = torch.zeros(1, 4, 6, dtype=torch.long)  # one region, class 0, mean of all pixels
    both = loss(torch.tensor([FEATURES, FEATURES]), torch.cat([target(), other]))
    mean_all = torch.tensor(FEATURES).mean(dim=(1, 2)).tolist()
    expected = (single.item() + cross_entropy_by_hand(mean_all, 0)) / 2
    assert both.item() == pytest.approx(expected, rel=1e-6)


def test_sr_loss_without_any_region_is_zero_and_differentiable():
    features = torch.randn(2, 3, 2, 3, requires_grad=True)
    value = identity_loss()(features, torch.full((2, 4, 6), IGNORE_INDEX))
    assert value.item() == 0
    value.backward()
    assert features.grad is not None


def test_sr_loss_gradients_reach_features_and_fc():
    features = torch.tensor([FEATURES], requires_grad=True)
    loss = SemanticRegionLoss(3, 3)
    loss(features, target()).backward()
    assert loss.fc.weight.grad.abs().sum() > 0
    assert features.grad[0, :, 1, 0].abs().sum() == 0  # ignored pixel: no gradient
    assert features.grad[0, :, 0, 0].abs().sum() > 0


def test_bad_class_weights_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"class_weights has shape \(2,\), expected \(3,\)"):
        SemanticRegionLoss(3, 3, torch.ones(2))


def outputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = {key: torch.randn(1, 3, 4, 6, generator=generator) for key in ("out", "aux", "coarse")}
    return {**logits, "features": torch.tensor([FEATURES])}


def test_criterion_sums_the_named_terms_with_their_weights():
    criterion = Criterion(3, 3, aux_weight=0.4, coarse_weight=0.3, sr_weight=0.2)
    criterion.sr.load_state_dict(identity_loss().state_dict())
    values = outputs()
    terms = criterion(values, target())
    assert set(terms) == {"ce", "aux", "coarse", "sr", "total"}
    for name, key in (("ce", "out"), ("aux", "aux"), ("coarse", "coarse")):
        torch.testing.assert_close(terms[name], F.cross_entropy(values[key], target(), ignore_index=IGNORE_INDEX))
    sr = (cross_entropy_by_hand(MEAN_0, 0) + cross_entropy_by_hand(MEAN_2, 2)) / 2
    assert terms["sr"].item() == pytest.approx(sr, rel=1e-6)
    expected = terms["ce"] + 0.4 * terms["aux"] + 0.3 * terms["coarse"] + 0.2 * terms["sr"]
    torch.testing.assert_close(terms["total"], expected)


def test_criterion_terms_follow_the_outputs_and_weights():
    criterion = Criterion(3, 3, aux_weight=0.4, coarse_weight=0.0, sr_weight=0.0)
    values = outputs()
    del values["aux"]
    terms = criterion(values, target())
    assert set(terms) == {"ce", "total"} and criterion.sr is None
    torch.testing.assert_close(terms["total"], terms["ce"])


def test_pixel_cross_entropy_of_an_unlabelled_crop_is_zero_not_nan():
    value = pixel_cross_entropy(torch.randn(1, 3, 4, 6), torch.full((1, 4, 6), IGNORE_INDEX))
    assert value.item() == 0


def test_danet_branch_terms_are_one_ce_each_at_their_weight():
    # uniform PAM logits: CE = log 3 on every labelled pixel; CAM logits favour class 0 by log 2 everywhere
    cam = torch.zeros(1, 3, 4, 6)
    cam[:, 0] = math.log(2.0)  # p(0) = 2/4, p(1) = p(2) = 1/4
    values = {"out": torch.zeros(1, 3, 4, 6), "pam": torch.zeros(1, 3, 4, 6), "cam": cam}
    labels = target()
    counts = [(labels == c).sum().item() for c in range(3)]  # labelled pixels per class
    cam_ce = (counts[0] * math.log(2) + (counts[1] + counts[2]) * math.log(4)) / sum(counts)
    terms = Criterion(3, 3, 0.4, 0.0, 0.0, danet_weight=0.5)(values, labels)
    assert set(terms) == {"ce", "danet", "total"}
    assert terms["danet"].item() == pytest.approx(math.log(3) + cam_ce, rel=1e-6)
    assert terms["total"].item() == pytest.approx(math.log(3) + 0.5 * (math.log(3) + cam_ce), rel=1e-6)
    assert "danet" not in Criterion(3, 3, 0.4, 0.0, 0.0, danet_weight=0.0)(values, labels)


def test_feature_resolution_ce_resizes_the_target_by_nearest_neighbour():
    """``train.loss.resolution: feature``: logits (1, 3, 2, 3) against the 4 x 6 labels = the CE vs SMALL_LABELS."""
    logits = torch.randn(1, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(logits, torch.tensor([SMALL_LABELS]), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(pixel_cross_entropy(logits, target()), expected, rtol=0, atol=1e-6)
    by_hand = (
        sum(
            cross_entropy_by_hand(logits[0, :, i, j].tolist(), SMALL_LABELS[i][j])
            for i in range(2)
            for j in range(3)
            if SMALL_LABELS[i][j] != IGNORE_INDEX
        )
        / 5
    )
    assert pixel_cross_entropy(logits, target()).item() == pytest.approx(by_hand, rel=1e-6)


def test_training_step_at_feature_resolution_skips_the_upsampling():
    from model.backbones import tiny_resnet
    from model.heads.fcn import FCNHead
    from model.segmentor import Segmentor
    from pipeline.training.build import TrainingStep

    torch.manual_seed(0)
    backbone = tiny_resnet()
    model = Segmentor(backbone, FCNHead(backbone.out_channels, 3, 16), FCNHead(backbone.aux_channels, 3, 8)).eval()
    images, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 3, (2, 32, 48))
    full, feature = (TrainingStep(model, Criterion(3, 16, 0.4, 0.0, 0.0, resolution=r)) for r in ("full", "feature"))
    low = model.outputs(images)
    expected = pixel_cross_entropy(low["out"], labels) + 0.4 * pixel_cross_entropy(low["aux"], labels)
    torch.testing.assert_close(feature(images, labels)["total"], expected)
    assert not torch.allclose(full(images, labels)["total"], expected)  # full resolution: another loss
    with pytest.raises(ValueError, match="resolution 'half' unknown; valid: full, feature"):
        Criterion(3, 16, 0.4, 0.0, 0.0, resolution="half")
