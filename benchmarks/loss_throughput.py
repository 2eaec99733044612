"""The pixel cross-entropy path of one training step: the trainer's rows form against the plain 4-D call.

For channels-last logits at 1/8 resolution, times forward + backward of
bilinear upsampling to the label size and the mean cross-entropy over
labelled pixels, two ways, side by side in one run:

- ``4-D``: ``F.cross_entropy(logits (B, K, H, W), target)``, which copies the
  full-resolution channels-last logits to make the class axis strided;
- ``rows``: ``pipeline.training.losses.pixel_cross_entropy``, the same loss on the
  (B*H*W, K) rows of the channels-last tensor (no copy).

Prints ms per call (median of ``--repeats``) and rows / 4-D, for the embedded
shape (8 x 24 x 32 x 192) and an ADE20K-like one (2 x 150 x 128 x 128), on
the CPU with the current torch thread count; both losses agree to 1e-5.

    .venv/bin/python benchmarks/loss_throughput.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.datasets.layout import IGNORE_INDEX
from pipeline.training.losses import pixel_cross_entropy

SHAPES = {"embedded 8x24x32x192": (8, 24, 32, 192), "ADE20K-like 2x150x128x128": (2, 150, 128, 128)}


def four_d(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def timed(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...], repeats: int) -> float:
    """Median ms of upsample + ``loss`` forward and backward on random channels-last logits."""
    batch, classes, height, width = shape
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(batch, classes, height // 8, width // 8, generator=generator)
    low = low.contiguous(memory_format=torch.channels_last).requires_grad_()
    target = torch.randint(0, classes, (batch, height, width), generator=generator)
    times = []
    for index in range(repeats + 3):  # 3 warm-up calls
        started = time.perf_counter()
        logits = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
        loss(logits, target).backward()
        if index >= 3:
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, forward + backward with upsampling")
    for name, shape in SHAPES.items():
        logits = torch.randn(shape[0], shape[1], 8, 8).contiguous(memory_format=torch.channels_last)
        target = torch.randint(0, shape[1], (shape[0], 8, 8))
        torch.testing.assert_close(pixel_cross_entropy(logits, target), four_d(logits, target), rtol=1e-5, atol=1e-5)
        plain, rows = timed(four_d, shape, args.repeats), timed(pixel_cross_entropy, shape, args.repeats)
        print(f"  {name:28s} 4-D {plain:7.2f} ms   rows {rows:7.2f} ms   rows / 4-D {rows / plain:.2f}")


if __name__ == "__main__":
    main()
