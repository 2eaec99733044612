"""The Segmentor: output dict, upsampling once, single-scale / multi-scale + flip / sliding-window inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.backbones import tiny_resnet
from model.heads.fcn import FCNHead
from model.heads.grar import GRArHead
from model.segmentor import Segmentor, _window_starts, scaled_size, window_logits

K = 4


def grar_segmentor() -> Segmentor:
    torch.manual_seed(0)
    backbone = tiny_resnet()
    affinity = torch.rand(K, K).fill_diagonal_(1)
    head = GRArHead(backbone.out_channels, K, 16, affinity)
    return Segmentor(backbone, head, FCNHead(backbone.aux_channels, K, 8))


class Pointwise(nn.Module):
    """A 'backbone' of 1x1 convs at output stride 1: cropping commutes with it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x):
        y = self.conv(x)
        return {"layer3": y, "layer4": y}


class PointwiseHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(6, K, 1)

    def forward(self, x):
        return {"out": self.classifier(x)}


def test_forward_returns_upsampled_logits_and_feature_resolution_extras():
    model = grar_segmentor()
    outputs = model(torch.randn(2, 3, 33, 45))
    assert set(outputs) == {"out", "coarse", "features", "aux"}
    for key in ("out", "coarse", "aux"):
        assert outputs[key].shape == (2, K, 33, 45)
    assert outputs["features"].shape == (2, 16, 5, 6)  # 1/8, rounded up
    sum(value.sum() for value in outputs.values()).backward()
    assert model.head.reasoning.lambda_positive.grad is not None


def test_without_aux_head_there_is_no_aux_output():
    model = grar_segmentor()
    model.aux_head = None
    assert "aux" not in model(torch.randn(2, 3, 16, 16))


def test_predict_single_scale_is_the_softmax_of_forward():
    model = grar_segmentor().eval()
    images = torch.randn(1, 3, 33, 45)
    probabilities = model.predict(images)
    with torch.no_grad():
        expected = torch.softmax(model(images)["out"], dim=1)
    torch.testing.assert_close(probabilities, expected)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, 33, 45))


def test_predict_flip_averages_the_flipped_pass_flipped_back():
    model = grar_segmentor().eval()
    images = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        plain = torch.softmax(model(images)["out"], dim=1)
        flipped = torch.softmax(model(images.flip(-1))["out"], dim=1).flip(-1)
    torch.testing.assert_close(model.predict(images, flip=True), (plain + flipped) / 2)


def test_predict_multi_scale_returns_input_size_probabilities():
    model = grar_segmentor().eval()
    images = torch.randn(2, 3, 33, 45)
    probabilities = model.predict(images, scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    assert probabilities.shape == (2, K, 33, 45)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 33, 45))
    with torch.no_grad():
        half = torch.nn.functional.interpolate(images, size=(16, 22), mode="bilinear", align_corners=False)
        half_pass = torch.nn.functional.interpolate(
            model(half)["out"], size=(33, 45), mode="bilinear", align_corners=False
        ).softmax(dim=1)
    assert not torch.allclose(probabilities, half_pass)  # other scales did count


def test_a_scaled_pass_resizes_feature_logits_once_and_skips_the_aux_head():
    model = grar_segmentor().eval()

    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("the auxiliary head ran at inference")

    model.aux_head = Refuses()
    images = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        scaled = torch.nn.functional.interpolate(images, size=(36, 60), mode="bilinear", align_corners=False)
        low = model.outputs(scaled, aux=False)["out"]  # (1, K, 5, 8): 1/8 of the scaled image
        expected = torch.nn.functional.interpolate(low, size=(24, 40), mode="bilinear", align_corners=False)
    assert low.shape[-2:] == (5, 8)
    torch.testing.assert_close(model.predict(images, scales=(1.5,)), expected.softmax(dim=1))


def test_sliding_window_stitches_crops_exactly():
    torch.manual_seed(0)
    model = Segmentor(Pointwise(), PointwiseHead()).eval()
    images = torch.randn(1, 3, 11, 13)
    with torch.no_grad():
        whole = model(images)["out"]
        stitched = window_logits(lambda crop: model(crop)["out"], images, window=4, stride=3)
    torch.testing.assert_close(stitched, whole)  # pointwise: the padding of the last windows changes nothing
    torch.testing.assert_close(model.predict(images, window=5), torch.softmax(whole, dim=1))


def local_position(crop):
    """Logits that depend only on the pixel's place in its window: 10 x row + column, one class."""
    rows = torch.arange(crop.shape[-2], dtype=torch.float32).view(-1, 1)
    cols = torch.arange(crop.shape[-1], dtype=torch.float32).view(1, -1)
    return (10 * rows + cols).expand(crop.shape[0], 1, -1, -1)


def test_window_logits_average_the_overlapping_windows():
    # 4 x 5 image, window 3, stride int(3 * 2/3) = 2: rows start at 0, 2 (the second cut at row 4 and padded),
    # columns at 0, 2 (ceil((5 - 3) / 2) + 1 = 2 windows). A pixel's value is the mean over its windows of
    # 10 x (its row in the window) + (its column in the window):
    # rows 0..3 -> 0, 1, (2 + 0)/2, 1; columns 0..4 -> 0, 1, (2 + 0)/2, 1, 2.
    logits = window_logits(local_position, torch.zeros(1, 3, 4, 5), window=3)
    row = torch.tensor([0.0, 1.0, 1.0, 1.0]).view(-1, 1)
    col = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0]).view(1, -1)
    assert logits.shape == (1, 1, 4, 5)
    assert torch.equal(logits[0, 0], 10 * row + col)
    # 7 wide, window 3, stride 1: columns start at 0..4; column 3 lies in the windows at 1, 2, 3: (2 + 1 + 0) / 3
    logits = window_logits(local_position, torch.zeros(1, 3, 3, 7), window=3, stride=1)
    assert logits[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0]


def test_an_image_smaller_than_the_window_is_padded_with_the_pad_value():
    seen = []

    def crop_sum(crop):  # (B, 3, 3, 3) -> one logit map: the sum of the crop, pixels and padding
        seen.append(tuple(crop.shape))
        return crop.sum(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *crop.shape[-2:])

    # a 2 x 2 image of ones in a 3 x 3 window: 4 pixels x 3 channels of 1 + 5 padded pixels x (-1 + 2 + 0.5)
    logits = window_logits(crop_sum, torch.ones(1, 3, 2, 2), window=3, pad_value=(-1.0, 2.0, 0.5))
    assert seen == [(1, 3, 3, 3)]
    assert logits.shape == (1, 1, 2, 2) and torch.equal(logits, torch.full((1, 1, 2, 2), 12 + 5 * 1.5))


def test_scaled_size_follows_the_base_size_on_the_long_side():
    assert scaled_size((300, 400), 1.0) == (300, 400)
    assert scaled_size((33, 45), 0.5) == (16, 22)  # round(16.5) = 16 (half to even), round(22.5) = 22
    # base 520: long side ceil(520 x 0.75) = 390, short int(300 x 390 / 400 + 0.5) = int(293.0) = 293
    assert scaled_size((300, 400), 0.75, base_size=520) == (293, 390)
    assert scaled_size((400, 300), 1.0, base_size=520) == (520, 390)  # portrait: height is the long side
    assert scaled_size((32, 192), 1.25, base_size=100) == (21, 125)  # int(32 x 125 / 192 + 0.5) = int(21.33)


def test_predict_with_a_base_size_runs_each_scale_at_its_size():
    model = grar_segmentor().eval()
    images = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        scaled = torch.nn.functional.interpolate(images, size=(30, 50), mode="bilinear", align_corners=False)
        low = model.outputs(scaled, aux=False)["out"]
        expected = torch.nn.functional.interpolate(low, size=(24, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.predict(images, scales=(1.0,), base_size=50), expected.softmax(dim=1))


def test_window_starts_step_by_the_stride_until_the_window_covers_the_end():
    assert _window_starts(10, 4, 3) == [0, 3, 6]  # ceil(6 / 3) + 1 = 3
    assert _window_starts(11, 4, 3) == [0, 3, 6, 9]  # the last window runs past the end: cut and padded
    assert _window_starts(8, 4, 4) == [0, 4]
    assert _window_starts(4, 4, 2) == [0]


@pytest.mark.parametrize(("window", "stride"), [(0, None), (4, 5), (4, 0)])
def test_bad_window_is_a_clear_error(window, stride):
    model = Segmentor(Pointwise(), PointwiseHead())
    with pytest.raises(ValueError, match="sliding window needs"):
        model.predict(torch.randn(1, 3, 8, 8), window=window, stride=stride)


def test_bad_scales_are_a_clear_error():
    with pytest.raises(ValueError, match="scales must be positive"):
        Segmentor(Pointwise(), PointwiseHead()).predict(torch.randn(1, 3, 8, 8), scales=(0.0,))
