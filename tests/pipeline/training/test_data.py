"""The training data: listing and checking a split, normalisation, joint augmentation, the seeded sampler."""

from __future__ import annotations

import os

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image
from tiny_run import IMAGE_SIZE, TRAIN_IMAGES
from torch.utils.data import DistributedSampler

from pipeline.config import AugmentConfig
from pipeline.errors import DataError
from pipeline.paths import dataset_dir
from pipeline.training.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochBatchSampler,
    RandomScale,
    SegmentationDataset,
    list_split,
    long_side_size,
    train_loader,
    train_transform,
)

NO_AUGMENT = AugmentConfig(hflip=False, scale=(1.0, 1.0), rotate=0.0, base_size=None)


def write_split(root, labels: dict[str, np.ndarray], names=("a", "b", "c"), image_suffix=".png") -> None:
    """A prepared dataset at ``root``: images whose red channel is 40 * label, labels as given."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "classes.csv").write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    for stem, label in labels.items():
        label = label.astype(np.int64)
        rgb = np.stack([label * 40 % 256, np.full_like(label, 7), np.full_like(label, 200)], axis=-1)
        Image.fromarray(rgb.astype(np.uint8)).save(root / "train" / "images" / f"{stem}{image_suffix}")
        Image.fromarray(label.astype(np.uint8), mode="L").save(root / "train" / "labels" / f"{stem}.png")


def stripes(height: int = 7, width: int = 9) -> np.ndarray:
    """Labels 0, 1, 2 in vertical stripes (asymmetric, so a flip shows)."""
    label = np.zeros((height, width), np.uint8)
    label[:, 3:5] = 1
    label[:, 5:] = 2
    return label


def test_unaugmented_samples_are_imagenet_normalised(tmp_path):
    write_split(tmp_path, {"x": stripes()})
    image, label = SegmentationDataset(tmp_path, "train")[0]
    assert image.dtype == torch.float32 and image.shape == (3, 7, 9)
    assert label.dtype == torch.int64 and torch.equal(label, torch.from_numpy(stripes()).long())
    # pixel (0, 6): label 2 -> red 80, green 7, blue 200
    expected = [
        (80 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        (7 / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
        (200 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
    ]
    assert image[:, 0, 6].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("preload", [True, False])
def test_preloaded_and_lazy_datasets_agree(tmp_path, preload):
    write_split(tmp_path, {"x": stripes(), "y": stripes(5, 11)}, image_suffix=".jpg")
    dataset = SegmentationDataset(tmp_path, "train", preload=preload)
    assert (dataset.samples is not None) == preload
    assert [dataset.image_size(i) for i in range(2)] == [(7, 9), (5, 11)]
    assert [f.stem for f in dataset.files] == ["x", "y"]
    assert dataset.class_names == ["a", "b", "c"] and dataset.num_classes == 3


def test_listing_names_the_file_without_a_partner(tmp_path):
    write_split(tmp_path, {"x": stripes(), "y": stripes()})
    (tmp_path / "train" / "images" / "y.png").unlink()
    with pytest.raises(DataError, match=r"labels/y\.png: label without an image"):
        list_split(tmp_path, "train")
    Image.new("RGB", (9, 7)).save(tmp_path / "train" / "images" / "y.png")
    Image.new("RGB", (9, 7)).save(tmp_path / "train" / "images" / "z.jpg")
    with pytest.raises(DataError, match=r"images/z\.jpg: image without a label"):
        list_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"val/images: folder not found"):
        list_split(tmp_path, "val")


def test_a_bad_label_is_named(tmp_path):
    bad = stripes()
    bad[2, 2] = 3  # K = 3: ids 0..2 or 255
    write_split(tmp_path, {"x": stripes(), "y": bad})
    with pytest.raises(DataError, match=r"labels/y\.png: label value 3 out of range: expected a class id 0\.\.2"):
        SegmentationDataset(tmp_path, "train")
    write_split(tmp_path / "other", {"x": stripes()})
    Image.new("RGB", (4, 4)).save(tmp_path / "other" / "train" / "images" / "x.png")
    with pytest.raises(DataError, match=r"labels/x\.png: label is 9x7 but its image x\.png is 4x4"):
        SegmentationDataset(tmp_path / "other", "train")[0]


def red_label(image: torch.Tensor) -> torch.Tensor:
    """The label a ``write_split`` image encodes (red = 40 * label), from the normalised image."""
    red = (image[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255
    return torch.round(red / 40).long()


def test_flip_and_crop_move_image_and_mask_together(tmp_path):
    write_split(tmp_path, {"x": stripes()})
    augment = AugmentConfig(hflip=True, scale=(1.0, 1.0), rotate=0.0, base_size=None)
    dataset = SegmentationDataset(tmp_path, "train", train_transform(augment, 11), seed=3)
    flipped = 0
    for epoch in range(8):
        image, label = dataset[(0, epoch)]
        assert image.shape == (3, 11, 11) and label.shape == (11, 11)
        inside = label != 255
        assert int(inside.sum()) == 7 * 9  # padded to 11 x 11 with the ignore index, nothing cut
        assert torch.equal(red_label(image)[inside], label[inside])
        rows = label[inside].view(7, 9)
        flipped += torch.equal(rows, torch.from_numpy(stripes()[:, ::-1].copy()).long())
    assert 0 < flipped < 8  # both outcomes occur over the epochs


def test_scale_and_rotation_keep_mask_values_and_fill_255(tmp_path):
    write_split(tmp_path, {"x": stripes(15, 17)})
    augment = AugmentConfig(hflip=True, scale=(0.5, 2.0), rotate=30.0, base_size=None)
    dataset = SegmentationDataset(tmp_path, "train", train_transform(augment, 13), seed=0)
    ignored = []
    for epoch in range(6):
        _, label = dataset[(0, epoch)]
        assert label.shape == (13, 13)
        assert set(label.unique().tolist()) <= {0, 1, 2, 255}  # nearest neighbour: no blended ids
        ignored.append(float((label == 255).float().mean()))
    assert max(ignored) > 0  # rotation corners / padding are ignored


def test_augmentation_depends_on_seed_epoch_index_only(tmp_path):
    write_split(tmp_path, {"x": stripes(15, 17), "y": stripes(15, 17)})
    augment = AugmentConfig(hflip=True, scale=(0.5, 2.0), rotate=10.0, base_size=None)
    dataset = SegmentationDataset(tmp_path, "train", train_transform(augment, 13), seed=5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = dataset[(1, 4)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    torch.manual_seed(999)
    again = dataset[(1, 4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other_epoch = dataset[(1, 5)]
    other_seed = SegmentationDataset(tmp_path, "train", train_transform(augment, 13), seed=6)[(1, 4)]
    assert not torch.equal(first[0], other_epoch[0]) and not torch.equal(first[0], other_seed[0])


def test_no_augmentation_is_a_crop_of_the_whole_image(tmp_path):
    write_split(tmp_path, {"x": stripes()})
    image, label = SegmentationDataset(tmp_path, "train", train_transform(NO_AUGMENT, 9), seed=0)[(0, 0)]
    assert label.shape == (9, 9) and int((label == 255).sum()) == 2 * 9  # two padded rows
    assert torch.equal(label[label != 255].view(7, 9), torch.from_numpy(stripes()).long())


def test_a_height_width_crop_takes_the_whole_strip(tmp_path):
    write_split(tmp_path, {"x": stripes()})  # 7 x 9
    image, label = SegmentationDataset(tmp_path, "train", train_transform(NO_AUGMENT, (7, 9)), seed=0)[(0, 0)]
    assert image.shape == (3, 7, 9) and torch.equal(label, torch.from_numpy(stripes()).long())
    _, padded = SegmentationDataset(tmp_path, "train", train_transform(NO_AUGMENT, (8, 9)), seed=0)[(0, 0)]
    assert padded.shape == (8, 9) and int((padded == 255).sum()) == 9  # one padded row, no column


def test_long_side_size_rounds_as_pytorch_encoding():
    # encoding/datasets/base.py _sync_transform: the long side given, the short one int(short x long / long' + 0.5)
    assert long_side_size((375, 500), 520) == (390, 520)  # int(375 x 520 / 500 + 0.5) = int(390.5)
    assert long_side_size((500, 333), 260) == (260, 173)  # portrait: int(333 x 260 / 500 + 0.5) = int(173.66)
    assert long_side_size((7, 9), 10) == (8, 10)  # int(7 x 10 / 9 + 0.5) = int(8.28)
    assert long_side_size((5, 5), 8) == (8, 8)  # square: the width takes the long side
    assert long_side_size((1, 100), 10) == (1, 10)  # int(0.6) = 0: at least one pixel


def test_a_base_size_draws_the_long_side_from_base_size_times_scale(tmp_path):
    """train.augment.base_size: the long side uniform over the integers [int(10 x 0.5), int(10 x 2)] = [5, 20],
    both ends included (Encoding's random.randint), whatever the image's own size."""
    scale = RandomScale(0.5, 2.0, base_size=10)
    torch.manual_seed(0)
    sizes = {tuple(scale.make_params([torch.zeros(3, 7, 9)])["size"]) for _ in range(2000)}
    assert {width for _, width in sizes} == set(range(5, 21))  # the long side: the width of a 7 x 9 image
    assert all((height, width) == long_side_size((7, 9), width) for height, width in sizes)
    # the same draws for an image of another size: only the aspect ratio of the image counts
    torch.manual_seed(0)
    tall = {tuple(scale.make_params([torch.zeros(3, 90, 30)])["size"]) for _ in range(2000)}
    assert {height for height, _ in tall} == set(range(5, 21)) and (20, 7) in tall  # int(30 x 20 / 90 + 0.5)


def test_a_base_size_with_scale_one_still_resizes_to_the_base_size(tmp_path):
    write_split(tmp_path, {"x": stripes()})  # 7 x 9
    augment = AugmentConfig(hflip=False, scale=(1.0, 1.0), rotate=0.0, base_size=10)
    # long side 10: 8 x 10 (long_side_size above), exactly the crop: nothing padded, the stripes stretched
    image, label = SegmentationDataset(tmp_path, "train", train_transform(augment, (8, 10)), seed=0)[(0, 0)]
    assert label.shape == (8, 10) and int((label == 255).sum()) == 0
    assert set(label.unique().tolist()) == {0, 1, 2}
    # without a base size the same crop pads the 7 x 9 image: one row and one column of 255
    _, padded = SegmentationDataset(tmp_path, "train", train_transform(NO_AUGMENT, (8, 10)), seed=0)[(0, 0)]
    assert int((padded == 255).sum()) == 8 + 10 - 1


def test_scale_range_and_base_size_are_checked():
    with pytest.raises(ValueError, match=r"base size 3 x scale 0.2 is under one pixel"):
        RandomScale(0.2, 1.0, base_size=3)
    with pytest.raises(pydantic.ValidationError, match=r"scale: \[2.0, 0.5\] must be \[low, high\]"):
        AugmentConfig(hflip=False, scale=(2.0, 0.5), rotate=0.0)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_is_distributed_sampler_with_drop_last(world_size):
    size, batch, seed = 23, 6, 7
    per_rank = batch // world_size
    for rank in range(world_size):
        sampler = EpochBatchSampler(size, batch, seed, rank=rank, world_size=world_size)
        for epoch in range(2):
            reference = DistributedSampler(range(size), world_size, rank, shuffle=True, seed=seed, drop_last=True)
            reference.set_epoch(epoch)
            order = list(reference)
            expected = [order[i : i + per_rank] for i in range(0, size // batch * per_rank, per_rank)]
            got = [sampler.batch(epoch * (size // batch) + i) for i in range(size // batch)]
            assert [[index for index, _ in b] for b in got] == expected
            assert {e for b in got for _, e in b} == {epoch}


def test_ranks_together_see_the_single_process_batch():
    single = EpochBatchSampler(20, 4, 0)
    ranks = [EpochBatchSampler(20, 4, 0, rank=r, world_size=2) for r in range(2)]
    for iteration in range(12):
        assert sorted(single.batch(iteration)) == sorted(ranks[0].batch(iteration) + ranks[1].batch(iteration))


def test_sampler_resumes_at_any_iteration():
    full = EpochBatchSampler(10, 3, 1)
    resumed = iter(EpochBatchSampler(10, 3, 1, start=5))
    assert [next(resumed) for _ in range(4)] == [full.batch(i) for i in range(5, 9)]
    with pytest.raises(ValueError, match="global batch 3 does not split evenly over 2 ranks"):
        EpochBatchSampler(10, 3, 1, world_size=2)
    with pytest.raises(ValueError, match="2 samples cannot fill one batch of 3"):
        EpochBatchSampler(2, 3, 1)


def test_loader_batches_do_not_depend_on_workers(tiny_project):
    config = tiny_project.train
    root = dataset_dir(tiny_project, "embedded")
    dataset = SegmentationDataset(root, "train", train_transform(config.augment, 33), 0)
    assert len(dataset) == TRAIN_IMAGES and dataset.image_size(0) == (IMAGE_SIZE, IMAGE_SIZE)
    batches = {}
    for workers in (0, 2):
        loader = iter(train_loader(dataset, EpochBatchSampler(len(dataset), 4, 0, start=3), workers))
        batches[workers] = [next(loader) for _ in range(3)]
    for (image0, label0), (image2, label2) in zip(batches[0], batches[2]):
        assert image0.shape == (4, 3, 33, 33) and label0.shape == (4, 33, 33)
        assert torch.equal(image0, image2) and torch.equal(label0, label2)


def test_a_preloaded_split_is_decoded_once_while_unchanged(tmp_path):
    write_split(tmp_path, {"x": stripes(), "y": stripes()})
    first = SegmentationDataset(tmp_path, "train")
    assert SegmentationDataset(tmp_path, "train").samples is first.samples
    changed = stripes()
    changed[0, 0] = 2
    Image.fromarray(changed, mode="L").save(tmp_path / "train" / "labels" / "y.png")
    os.utime(tmp_path / "train" / "labels" / "y.png", ns=(1, 1))  # a new modification time, whatever the clock
    again = SegmentationDataset(tmp_path, "train")
    assert again.samples is not first.samples and again[1][1][0, 0] == 2
