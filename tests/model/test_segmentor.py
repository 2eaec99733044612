"""The Segmentor: output dict, upsampling once, single-scale / multi-scale + flip / sliding-window inference."""

from __future__ import annotations

import math

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


# eval.fusion and eval.align_corners: softmax_mean (mmsegmentation's aug_test) and exp_sum (PyTorch-Encoding's
# MultiEvalModule, encoding/models/sseg/base.py), by hand and against that module's procedure written out.


class FirstChannel(nn.Module):
    """Logits [0, x] per pixel, x the image's first channel, at output stride 1: values computable by hand."""

    def forward(self, x):
        return {"layer3": x, "layer4": x}


class ZeroAndFirst(nn.Module):
    def forward(self, x):
        return {"out": torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], dim=1)}  # (B, 2, H, W)


def test_exp_sum_and_softmax_mean_by_hand_scale_by_scale():
    model = Segmentor(FirstChannel(), ZeroAndFirst()).eval()
    images = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)  # one row, x = 0, 1, 2, 3
    sigmoid = torch.sigmoid
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])

    def p1(**kwargs):  # the probability of class 1 along the row
        return model.predict(images, flip=True, align_corners=True, **kwargs)[0, 1, 0]

    # scale 1: no resize. The model is pointwise, so a flipped pass is the plain one: softmax_mean averages two
    # softmax([0, x]) = sigmoid(x); exp_sum takes exp([0, x + x]): sigmoid(2x) once normalised.
    torch.testing.assert_close(p1(scales=(1.0,), fusion="softmax_mean"), sigmoid(x))
    torch.testing.assert_close(p1(scales=(1.0,), fusion="exp_sum"), sigmoid(2 * x))
    # scale 2 (align_corners=True): the 1 x 4 row becomes 2 x 8 rows of x' = 3j/7, j = 0..7; back at 1 x 4, pixel i
    # reads position 7i/3 of the 8: i = 0 -> j 0; i = 1 -> 2/3 of j 2 + 1/3 of j 3; i = 2 -> 1/3 of j 4 + 2/3 of
    # j 5; i = 3 -> j 7. softmax_mean resizes the logits, linear in x: back to x exactly, sigmoid(x) again.
    torch.testing.assert_close(p1(scales=(2.0,), fusion="softmax_mean"), sigmoid(x))
    # exp_sum resizes exp(2x') per class: class 0 stays exp(0) = 1; class 1 mixes exponentials.
    e = [float(torch.exp(torch.tensor(2 * 3 * j / 7))) for j in range(8)]
    class1 = torch.tensor([e[0], 2 / 3 * e[2] + 1 / 3 * e[3], 1 / 3 * e[4] + 2 / 3 * e[5], e[7]])
    torch.testing.assert_close(p1(scales=(2.0,), fusion="exp_sum"), class1 / (1 + class1))
    # both scales: softmax_mean averages the two passes' softmaxes, exp_sum sums the two scales' exponentials
    torch.testing.assert_close(p1(scales=(1.0, 2.0), fusion="softmax_mean"), sigmoid(x))
    both = torch.exp(2 * x) + class1
    torch.testing.assert_close(p1(scales=(1.0, 2.0), fusion="exp_sum"), both / (2 + both))


class Strided(nn.Module):
    """A 'backbone' of one 3x3 conv of stride 2: logits at half resolution, each from a 3 x 3 neighbourhood, so
    windows, padding, flips and the upsampling of logits all change the result."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"layer3": y, "layer4": y}


def test_exp_sum_without_flip_at_one_scale_is_the_softmax():
    torch.manual_seed(2)
    model = Segmentor(Strided(), PointwiseHead()).eval()
    images = torch.randn(1, 3, 21, 30)
    torch.testing.assert_close(model.predict(images, fusion="exp_sum"), model.predict(images))
    # with windows, exp_sum averages the windows' exponentials where they overlap, softmax_mean their logits
    overlapping = model.predict(images, window=16, fusion="exp_sum"), model.predict(images, window=16)
    assert not torch.allclose(*overlapping)
    torch.testing.assert_close(overlapping[0][..., :10, :10], overlapping[1][..., :10, :10])  # in one window only


def encoding_multi_eval(model, image, scales, base_size, crop_size, pad_value):
    """PyTorch-Encoding's MultiEvalModule.forward with flip (encoding/models/sseg/base.py), step by step, for the
    one image of ``image`` (1, 3, h, w): resizes bilinear with align_corners=True (its up_kwargs), padding with
    ``pad_value`` at the bottom and right, windows of ``crop_size`` every int(2/3 crop_size), each window
    (padded to the crop) giving exp(logits + flipped logits), averaged where windows overlap, the scales summed."""
    up = {"mode": "bilinear", "align_corners": True}
    _, _, h, w = image.shape
    stride = int(crop_size * 2 / 3)

    def evaluate(x):  # the network: logits resized to its input (its heads' interpolate with up_kwargs)
        return nn.functional.interpolate(model.outputs(x, aux=False)["out"], x.shape[-2:], **up)

    def inference(x):  # module_inference(module, x, flip=True)
        return (evaluate(x) + evaluate(x.flip(-1)).flip(-1)).exp()

    def pad(x):  # pad_image: bottom and right up to crop_size, one value per channel
        padh, padw = max(crop_size - x.shape[2], 0), max(crop_size - x.shape[3], 0)
        out = torch.empty(1, 3, x.shape[2] + padh, x.shape[3] + padw)
        for c in range(3):
            out[:, c] = nn.functional.pad(x[:, c], (0, padw, 0, padh), value=pad_value[c])
        return out

    scores = 0
    for scale in scales:
        long_size = math.ceil(base_size * scale)
        if h > w:
            height, width, short_size = long_size, int(w * long_size / h + 0.5), int(w * long_size / h + 0.5)
        else:
            width, height, short_size = long_size, int(h * long_size / w + 0.5), int(h * long_size / w + 0.5)
        current = nn.functional.interpolate(image, (height, width), **up)
        if long_size <= crop_size:
            outputs = inference(pad(current))[:, :, :height, :width]
        else:
            padded = pad(current) if short_size < crop_size else current
            ph, pw = padded.shape[-2:]
            outputs = torch.zeros(1, K, ph, pw)
            count = torch.zeros(1, 1, ph, pw)
            for row in range(math.ceil((ph - crop_size) / stride) + 1):
                for col in range(math.ceil((pw - crop_size) / stride) + 1):
                    h0, w0 = row * stride, col * stride
                    h1, w1 = min(h0 + crop_size, ph), min(w0 + crop_size, pw)
                    window = inference(pad(padded[:, :, h0:h1, w0:w1]))
                    outputs[:, :, h0:h1, w0:w1] += window[:, :, : h1 - h0, : w1 - w0]
                    count[:, :, h0:h1, w0:w1] += 1
            outputs = (outputs / count)[:, :, :height, :width]
        scores = scores + nn.functional.interpolate(outputs, (h, w), **up)
    return scores


def test_exp_sum_with_align_corners_is_pytorch_encoding_multi_eval_scale_by_scale():
    torch.manual_seed(1)
    model = Segmentor(Strided(), PointwiseHead()).eval()
    image = torch.randn(1, 3, 21, 30)
    black = (-2.1, -2.0, -1.8)
    # base 32, crop 24: scale 0.5 -> 11 x 16, one padded window; 1.0 -> 22 x 32 padded to 24 x 32, two windows;
    # 1.25 -> 28 x 40, 2 x 2 windows, the last ones cut and padded back
    scales = (0.5, 1.0, 1.25)
    options = {"flip": True, "window": 24, "base_size": 32, "pad_value": black, "fusion": "exp_sum"}
    with torch.no_grad():
        for scale in scales:
            expected = encoding_multi_eval(model, image, (scale,), 32, 24, black)
            torch.testing.assert_close(
                model.predict(image, scales=(scale,), align_corners=True, **options),
                expected / expected.sum(dim=1, keepdim=True),
            )
        expected = encoding_multi_eval(model, image, scales, 32, 24, black)
        ours = model.predict(image, scales=scales, align_corners=True, **options)
        torch.testing.assert_close(ours, expected / expected.sum(dim=1, keepdim=True))
        assert torch.equal(ours.argmax(1), expected.argmax(1))
        # the other conventions give other numbers on the same model: the switches switch something
        assert not torch.allclose(model.predict(image, scales=scales, align_corners=False, **options), ours)
        options["fusion"] = "softmax_mean"
        assert not torch.allclose(model.predict(image, scales=scales, align_corners=True, **options), ours)


def test_an_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fusion 'mean'; valid: softmax_mean, exp_sum"):
        Segmentor(Pointwise(), PointwiseHead()).predict(torch.randn(1, 3, 8, 8), fusion="mean")
