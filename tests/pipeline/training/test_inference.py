"""Run-level evaluation: batching by size, the single-scale and multi-scale confusion matrices, the scores."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from test_data import write_split
from tiny_run import IMAGE_SIZE, VAL_IMAGES

from model.segmentor import FUSIONS
from pipeline.config import EvalConfig, Precision
from pipeline.errors import DataError
from pipeline.paths import dataset_dir
from pipeline.scores.per_image import read_image_confusions, write_image_confusions
from pipeline.training.data import BLACK, SegmentationDataset
from pipeline.training.distributed import PRECISIONS
from pipeline.training.inference import evaluate_model, infer, scores, size_batches
from pipeline.training.inputs import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
SINGLE = EvalConfig(
    multi_scale=False,
    scales=(1.0,),
    flip=False,
    base_size=None,
    window=None,
    fusion="softmax_mean",
    align_corners=False,
)
MULTI = EvalConfig(
    multi_scale=True,
    scales=(0.5, 1.0, 1.5),
    flip=True,
    base_size=None,
    window=None,
    fusion="softmax_mean",
    align_corners=False,
)


class ConstantModel(torch.nn.Module):
    """Predicts class ``single`` at single scale (one pass, scale 1, no flip) and ``multi`` otherwise."""

    def __init__(self, num_classes: int, single: int, multi: int) -> None:
        super().__init__()
        self.num_classes, self.single, self.multi = num_classes, single, multi
        self.calls = []

    def predict(
        self,
        images,
        scales=(1.0,),
        flip=False,
        window=None,
        stride=None,
        base_size=None,
        pad_value=0.0,
        fusion="softmax_mean",
        align_corners=False,
    ):
        self.calls.append((images.shape, tuple(scales), flip, window, base_size, pad_value, fusion, align_corners))
        winner = self.single if (tuple(scales), flip) == ((1.0,), False) else self.multi
        probabilities = torch.zeros(images.shape[0], self.num_classes, *images.shape[-2:])
        probabilities[:, winner] = 1
        return probabilities


def labels_dataset(tmp_path) -> SegmentationDataset:
    """Three images: two 3 x 4 and one 2 x 5, with an ignored pixel."""
    first = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [255, 0, 0, 0]], np.uint8)
    second = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]], np.uint8)
    third = np.array([[2, 2, 2, 2, 2], [0, 0, 0, 0, 1]], np.uint8)
    write_split(tmp_path, {"a": first, "b": second, "c": third})
    return SegmentationDataset(tmp_path, "train")


def test_images_of_one_size_are_batched_within_the_pixel_budget(tmp_path):
    dataset = labels_dataset(tmp_path)
    assert size_batches(dataset) == [[0, 1], [2]]
    assert size_batches(dataset, max_pixels=12) == [[0], [1], [2]]  # one 3 x 4 image fills 12 pixels
    assert size_batches(dataset, max_pixels=1) == [[0], [1], [2]]  # a batch holds at least one image


def test_confusion_matrices_count_every_labelled_pixel(tmp_path):
    dataset = labels_dataset(tmp_path)
    model = ConstantModel(3, single=1, multi=2)
    evaluation = evaluate_model(model, dataset, MULTI, torch.device("cpu"), "bf16")
    # ground truth histogram over the labelled pixels: class 0: 6 + 0 + 4, class 1: 3 + 8 + 1, class 2: 2 + 4 + 5
    expected_single = np.array([[0, 10, 0], [0, 12, 0], [0, 11, 0]])
    assert np.array_equal(evaluation.single, expected_single)
    assert np.array_equal(evaluation.multi, expected_single[:, [0, 2, 1]])
    assert evaluation.seconds > 0
    assert [call[1:5] for call in model.calls] == [((1.0,), False, None, None), ((0.5, 1.0, 1.5), True, None, None)] * 2
    assert [call[0][0] for call in model.calls] == [2, 2, 1, 1]  # batches of the two 3 x 4 images, then the 2 x 5
    only_single = evaluate_model(ConstantModel(3, 0, 0), dataset, SINGLE, torch.device("cpu"), "bf16")
    assert only_single.multi is None and only_single.single[:, 0].tolist() == [10, 12, 11]
    assert only_single.multi_images is None


def test_per_image_confusions_sum_to_the_dataset_matrix(tmp_path):
    dataset = labels_dataset(tmp_path / "data")
    evaluation = evaluate_model(ConstantModel(3, single=1, multi=2), dataset, MULTI, torch.device("cpu"), "bf16")
    single = evaluation.single_images
    # image a (order of the sorted stems): gt 0 x6, 1 x3, 2 x2 (one ignored pixel), all predicted 1
    assert single.image_matrix(0).tolist() == [[0, 6, 0], [0, 3, 0], [0, 2, 0]]
    assert single.image_matrix(1).tolist() == [[0, 0, 0], [0, 8, 0], [0, 4, 0]]
    assert single.image_matrix(2).tolist() == [[0, 4, 0], [0, 1, 0], [0, 5, 0]]
    assert (single.num_images, single.num_classes, len(single.count)) == (3, 3, 8)  # non-zero cells only
    assert np.array_equal(single.dense_total(), evaluation.single)
    assert np.array_equal(evaluation.multi_images.dense_total(), evaluation.multi)
    assert np.array_equal(single.dense_total(np.array([2, 0, 1])), 2 * single.image_matrix(0) + single.image_matrix(2))
    write_image_confusions(tmp_path / "c.npz", single)
    again = read_image_confusions(tmp_path / "c.npz")
    for name in ("image", "gt", "pred", "count"):
        assert np.array_equal(getattr(again, name), getattr(single, name))
        assert getattr(again, name).dtype == getattr(single, name).dtype
    assert (again.num_images, again.num_classes) == (3, 3)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a per-image confusion file"):
        read_image_confusions(tmp_path / "bad.npz")


def test_scores_of_a_confusion_matrix():
    matrix = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # class 2 absent from both: no IoU
    result = scores(matrix, ["a", "b", "c"])
    assert list(result) == ["miou", "pixel_accuracy", "mean_accuracy", "per_class_iou"]
    assert result["per_class_iou"] == {"a": 0.75, "b": 2 / 3, "c": None}
    assert result["miou"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert result["pixel_accuracy"] == pytest.approx(5 / 6)
    assert result["mean_accuracy"] == pytest.approx((0.75 + 1) / 2)


@pytest.mark.parametrize("window", [None, 17])
def test_a_real_model_scores_every_val_pixel(tiny_project, window):
    model = build_model(tiny_project, 24)
    val = SegmentationDataset(dataset_dir(tiny_project, "embedded"), "val")
    config = SINGLE.model_copy(update={"multi_scale": True, "window": window})
    evaluation = evaluate_model(model, val, config, torch.device("cpu"), "fp32")
    assert evaluation.single.sum() == VAL_IMAGES * IMAGE_SIZE**2
    assert np.array_equal(evaluation.single, evaluation.multi)  # "multi-scale" of scale 1 without flip is single
    assert model.training  # evaluation leaves the mode as it found it


@pytest.mark.parametrize(("fusion", "align_corners"), [("softmax_mean", False), ("exp_sum", True)])
def test_infer_passes_the_protocol_to_predict_and_pads_with_black(fusion, align_corners):
    model = ConstantModel(3, single=1, multi=2)
    config = EvalConfig(
        multi_scale=True,
        scales=(0.5, 1.0),
        flip=True,
        base_size=520,
        window=544,
        fusion=fusion,
        align_corners=align_corners,
    )
    assert infer(model, torch.zeros(1, 3, 4, 6), config, "bf16").argmax(1).unique().tolist() == [1]
    assert infer(model, torch.zeros(1, 3, 4, 6), config, "fp32", multi=True).argmax(1).unique().tolist() == [2]
    assert [call[1:] for call in model.calls] == [
        ((1.0,), False, 544, 520, BLACK, fusion, align_corners),
        ((0.5, 1.0), True, 544, 520, BLACK, fusion, align_corners),
    ]
    # black after ImageNet normalisation: (0 - mean) / std per channel
    assert pytest.approx((-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225), rel=1e-12) == BLACK


def test_infer_with_base_size_and_window_runs_a_real_model(tiny_project):
    model = build_model(tiny_project, 24).eval()
    images = torch.randn(1, 3, 20, 36)
    config = EvalConfig(
        multi_scale=True, scales=(1.0,), flip=False, base_size=48, window=24, fusion="softmax_mean", align_corners=False
    )
    probabilities = infer(model, images, config, "bf16")  # 48 x 27 (int(20 x 48 / 36 + 0.5)), windows of 24 every 16
    with torch.no_grad():
        scaled = torch.nn.functional.interpolate(images, size=(27, 48), mode="bilinear", align_corners=False)
        from model.segmentor import resize, window_logits

        logits = window_logits(lambda crop: model(crop)["out"], scaled, 24, 16, BLACK)
        expected = resize(logits, (20, 36)).softmax(dim=1)
    torch.testing.assert_close(probabilities, expected)


def test_the_config_allows_exactly_the_fusions_and_precisions_the_code_has():
    assert get_args(EvalConfig.model_fields["fusion"].annotation) == FUSIONS
    assert get_args(Precision) == PRECISIONS
