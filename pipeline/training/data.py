"""Training and validation data: a prepared split as tensors, joint augmentation, an endless seeded sampler.

A split of the canonical layout (``data/<name>/{train,val}/{images,labels}``,
``classes.csv``) becomes a ``SegmentationDataset`` of (image, label) pairs:
images ImageNet-normalised float32 (3, H, W), labels int64 (H, W) with class ids
0..K-1 and 255 = ignore.

Training augmentation (section 4.1) is ``torchvision.transforms.v2`` applied to
the image and its mask together (``tv_tensors.Image`` + ``tv_tensors.Mask``:
the mask is resized and rotated by nearest neighbour, filled with 255):
horizontal flip, random scale in ``train.augment.scale`` (of the image's own
size, or with ``train.augment.base_size`` of that base size, as
PyTorch-Encoding: ``RandomScale``), rotation uniform in
±``train.augment.rotate`` degrees, pad to the crop (mask 255), random crop of
``train.crop_size``, normalisation. Steps that cannot change anything (scale
[1, 1] of the image's own size, rotation 0) are left out.

Determinism. Training batches come from ``EpochBatchSampler``: per epoch a
permutation of the split seeded by ``seed + epoch``, cut into consecutive global
batches (an incomplete last batch is dropped), rank ``r`` of ``W`` taking the
items ``r::W`` of each: exactly what ``DistributedSampler(seed=seed,
drop_last=True)`` with per-rank batches of ``batch_size / W`` gives, so the
ranks of a DDP job together see the single-process batch. The sampler yields
(index, epoch) keys, and the augmentation of a sample draws from a generator
seeded by (seed, epoch, index) alone, so iteration ``i`` always gets the same
batch, whatever the number of loader workers, the world size, or where a run
was resumed.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2._utils import query_size

from pipeline.config import AugmentConfig, hw
from pipeline.datasets.layout import (
    CLASSES_FILE,
    IGNORE_INDEX,
    IMAGE_SUFFIXES,
    check_pixels,
    read_classes,
    read_label_png,
    upright,
)
from pipeline.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BLACK = tuple(-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD))  # a black pixel, normalised
# A split whose files total at most this many bytes is decoded once into memory
# (the embedded dataset: 20 MB); larger ones are decoded per sample.
PRELOAD_BYTES = 128 * 2**20


@dataclass(frozen=True)
class SampleFiles:
    """One sample of a split: its stem, image file and label file."""

    stem: str
    image: Path
    label: Path


def list_split(root: Path, split: str) -> list[SampleFiles]:
    """The samples of ``root/split`` sorted by stem: every ``labels/<stem>.png`` with ``images/<stem>.{jpg,png}``.

    ``DataError`` naming the folder or file when a folder is missing or empty,
    a label has no image, or an image has no label.
    """
    images, labels = root / split / "images", root / split / "labels"
    for folder in (images, labels):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found; prepare the dataset first (`grar prepare NAME`)")
    label_files = sorted(p for p in labels.iterdir() if p.suffix.lower() == ".png")
    if not label_files:
        raise DataError(f"{labels}: no label PNGs: empty split")
    image_files = {p.stem: p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    samples = []
    for label in label_files:
        image = image_files.pop(label.stem, None)
        if image is None:
            raise DataError(f"{label}: label without an image (expected {images / label.stem}.jpg or .png)")
        samples.append(SampleFiles(label.stem, image, label))
    if image_files:
        extra = image_files[min(image_files)]
        raise DataError(f"{extra}: image without a label (expected {labels / extra.stem}.png)")
    return samples


def read_image(path: Path, displayed: bool = False) -> np.ndarray:
    """An RGB image as a (H, W, 3) uint8 array; ``DataError`` naming the file when it cannot be read or has more
    than ``MAX_IMAGE_PIXELS``. ``displayed``: as a viewer shows it (its EXIF orientation applied: a new photo
    given to ``grar predict``); else as stored (the prepared layout: ``pipeline.datasets.layout``, Orientation).
    """
    try:
        with Image.open(path) as image:
            check_pixels(image, path)
            return np.array((upright(image) if displayed else image).convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def read_sample(files: SampleFiles, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and label (H, W) uint8 of one sample, checked: same size, values 0..K-1 or 255."""
    image = read_image(files.image)
    label = read_label_png(files.label)
    if image.shape[:2] != label.shape:
        raise DataError(
            f"{files.label}: label is {label.shape[1]}x{label.shape[0]} but its image {files.image.name} is "
            f"{image.shape[1]}x{image.shape[0]} (width x height)"
        )
    bad = label[(label >= num_classes) & (label != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{files.label}: label value {int(bad.max())} out of range: expected a class id 0..{num_classes - 1} "
            f"or the ignore index {IGNORE_INDEX}"
        )
    return image, label


def normalise(image: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of uint8 (..., 3, H, W) images: float32, per-channel (x / 255 - mean) / std."""
    image = TF.to_dtype(image, torch.float32, scale=True)
    return TF.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A (H, W, 3) uint8 array as the model's input (3, H, W): what evaluation and inference feed the model."""
    return normalise(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))


class RandomScale(v2.Transform):
    """Resize by a random scale in [low, high] (section 4.1: "resize the images between 0.5 and 2").

    ``base_size`` None: the image's own size times a factor uniform in [low,
    high]. A number: the size reference is ``base_size``, as PyTorch-Encoding's
    ``BaseDataset._sync_transform`` (encoding/datasets/base.py): the long side
    is an integer uniform in [int(base_size x low), int(base_size x high)]
    (both ends included, its ``random.randint``), the short side
    int(short x long / old long + 0.5), the width taking the long side when
    the image is square (``long_side_size``). Bilinear (antialiased) for
    images; ``tv_tensors.Mask`` is resized by nearest neighbour by
    torchvision's mask kernel.
    """

    def __init__(self, low: float, high: float, base_size: int | None = None) -> None:
        super().__init__()
        if not 0 < low <= high:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got [{low}, {high}]")
        if base_size is not None and int(base_size * low) < 1:
            raise ValueError(f"base size {base_size} x scale {low} is under one pixel")
        self.low, self.high, self.base_size = low, high, base_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        if self.base_size is not None:
            low, high = int(self.base_size * self.low), int(self.base_size * self.high)
            long = int(torch.randint(low, high + 1, ()))
            return {"size": list(long_side_size((height, width), long))}
        factor = float(torch.empty(()).uniform_(self.low, self.high))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, params["size"], antialias=True)


def long_side_size(size: tuple[int, int], long: int) -> tuple[int, int]:
    """(height, width) of an image of ``size`` whose long side becomes ``long``, as PyTorch-Encoding rounds it.

    encoding/datasets/base.py ``_sync_transform``: height > width: (long, int(width x long / height + 0.5)),
    otherwise (square included) (int(height x long / width + 0.5), long); at least 1 pixel.
    """
    height, width = size
    if height > width:
        return long, max(1, int(width * long / height + 0.5))
    return max(1, int(height * long / width + 0.5)), long


def train_transform(augment: AugmentConfig, crop_size: int | tuple[int, int]) -> v2.Compose:
    """The joint geometric augmentation of ``augment`` on uint8 images, ending in a ``crop_size`` crop."""
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    steps: list[v2.Transform] = []
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    low, high = augment.scale
    if augment.base_size is not None or (low, high) != (1.0, 1.0):
        steps.append(RandomScale(low, high, augment.base_size))
    if augment.rotate > 0:
        steps.append(v2.RandomRotation(augment.rotate, interpolation=v2.InterpolationMode.BILINEAR, fill=fill))
    steps.append(v2.RandomCrop(hw(crop_size), pad_if_needed=True, fill=fill))
    return v2.Compose(steps)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` (independent streams via ``SeedSequence``)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


@functools.lru_cache(maxsize=4)
def decode_split(
    files: tuple[SampleFiles, ...], signature: tuple[tuple[int, int], ...], num_classes: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Every sample of ``files`` decoded and checked (``read_sample``); read-only by convention.

    Cached on the files and their sizes and modification times (``signature``),
    so an unchanged split is decoded once per process.
    """
    return tuple(read_sample(f, num_classes) for f in files)


class SegmentationDataset(Dataset):
    """One split of a prepared dataset: (image (3, H, W) float32, label (H, W) int64) pairs.

    ``dataset[index]`` gives the sample unaugmented (validation);
    ``dataset[(index, epoch)]`` applies ``transform`` with randomness seeded by
    (``seed``, epoch, index) (training, see the module docstring). The torch
    random state of the caller is left untouched.

    ``preload``: decode every sample once into memory (default: when the
    split's files total at most ``PRELOAD_BYTES``); otherwise each access
    decodes its files. Preloaded splits are shared by the datasets of one
    process while their files are unchanged (``decode_split``): a grid run
    in-process decodes the embedded dataset once, not once per cell.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: v2.Transform | None = None,
        seed: int = 0,
        preload: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = read_classes(self.root / CLASSES_FILE)
        self.num_classes = len(self.class_names)
        self.files = list_split(self.root, split)
        self.transform = transform
        self.seed = seed
        self.samples = None
        if preload is not False:
            stats = [(f.image.stat(), f.label.stat()) for f in self.files]
            if preload or sum(image.st_size + label.st_size for image, label in stats) <= PRELOAD_BYTES:
                signature = tuple((stat.st_size, stat.st_mtime_ns) for pair in stats for stat in pair)
                self.samples = decode_split(tuple(self.files), signature, self.num_classes)

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label (H, W) uint8 of sample ``index``."""
        if self.samples is not None:
            return self.samples[index]
        return read_sample(self.files[index], self.num_classes)

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of sample ``index``, from its label file's header when the split is not preloaded."""
        if self.samples is not None:
            return self.samples[index][1].shape
        try:
            with Image.open(self.files[index].label) as label:
                return label.height, label.width
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{self.files[index].label}: unreadable label image ({err})") from None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        image, label = self.raw(index)
        image = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) uint8
        label = torch.from_numpy(label)  # (H, W) uint8
        if epoch is not None and self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                image, label = self.transform(tv_tensors.Image(image), tv_tensors.Mask(label))
            image, label = image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)
        return normalise(image), label.long()


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless (index, epoch) batches of one rank, from iteration ``start`` on (see the module docstring).

    ``batch_size`` is the GLOBAL batch; each of the ``world_size`` ranks gets
    ``batch_size / world_size`` items of it.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__()
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} does not split evenly over {world_size} ranks")
        if size < batch_size:
            raise ValueError(f"{size} samples cannot fill one batch of {batch_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.batches_per_epoch = size // batch_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of ``epoch``: ``DistributedSampler``'s ``randperm`` seeded by ``seed + epoch``."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.size, generator=generator)
        return self._order

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's share of the global batch of ``iteration`` (0-based)."""
        epoch, position = divmod(iteration, self.batches_per_epoch)
        chunk = self.permutation(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        return [(int(index), epoch) for index in chunk[self.rank :: self.world_size]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start
        while True:
            yield self.batch(iteration)
            iteration += 1


def ignore_preemption_signals(_worker_id: int) -> None:
    """Loader workers leave SIGTERM / SIGUSR2 to the trainer, which checkpoints and stops them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def train_loader(
    dataset: SegmentationDataset, sampler: EpochBatchSampler, workers: int, pin_memory: bool = False
) -> DataLoader:
    """An endless loader of (images (b, 3, S, S), labels (b, S, S)) batches from ``sampler``.

    The loader gets its own generator: starting an iteration draws a base seed
    from it, which must not advance the global torch stream (dropout's, saved
    in checkpoints) or a resumed run would diverge.
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        generator=torch.Generator().manual_seed(sampler.seed),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=ignore_preemption_signals if workers > 0 else None,
    )
