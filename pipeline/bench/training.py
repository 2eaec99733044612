"""Training throughput on one device (``grar bench train``): the GPU check of the paper setup.

One training step as ``pipeline.training.loop`` runs it (``TrainingStep``: the segmentor
of ``model`` with the backbone asked for, the GRAr head and no pretrained weights, the loss of
Eq. 6 from ``pipeline.training.losses`` with ``train.loss``'s weights, SGD with momentum,
channels_last images and weights), on synthetic batches: images from
``torch.randn`` and labels uniform over ``num_classes`` from seed 0, GRAr's
affinity ``pipeline.bench.modules.synthetic_affinity`` (the timing does not depend on
the data). ``warmup`` steps first, then ``iterations`` timed steps:

- ``images_per_s``: batch x iterations / wall time of the timed steps (CUDA:
  synchronised before and after);
- ``peak_memory_bytes``: CUDA: ``torch.cuda.max_memory_allocated`` over the
  warm-up and timed steps (model, optimiser state, activations, everything);
  CPU: the process's peak resident set size (``getrusage``), which includes
  everything the process held before;
- ``losses_finite``: every term of every step (warm-up included) is finite;
  ``loss_first`` / ``loss_last``: the total of the first and last step.

``dtype: bfloat16`` runs the forward under bfloat16 autocast (what training does
on CUDA), ``float32`` as built.
"""

from __future__ import annotations

import math
import platform
import resource
import sys
import time

import torch

from pipeline.bench.modules import autocast, synthetic_affinity
from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.io import json_with_keys
from pipeline.training.build import build_criterion, build_segmentor
from pipeline.training.distributed import MEMORY_FORMAT

# What makes an existing JSON file one of ours (``grar bench train --json``), so it may be replaced.
BENCH_TRAIN_JSON = json_with_keys("backbone", "images_per_s", "memory_method")
MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated() over warm-up and timed steps (everything on the device)",
    "cpu": "peak resident set size of the process (getrusage ru_maxrss), everything it held included",
}


def per_gpu_batch(params: Params) -> int:
    """``train.batch_size`` (the global batch) over the job's processes (``executor.slurm.tasks_per_node``)."""
    return max(1, params.train.batch_size // params.executor.slurm.tasks_per_node)


def benchmark_training(
    params: Params,
    backbone: str,
    crop: int,
    batch: int,
    device_name: str,
    dtype: str,
    warmup: int,
    iterations: int,
    num_classes: int,
) -> dict:
    """Measure ``iterations`` training steps after ``warmup`` on synthetic batches; the JSON-ready report."""
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda but this machine has no CUDA device: run it on a GPU node "
            "(benchmarks/gpu_check.sh through srun or sbatch) or use --device cpu"
        )
    model_config = params.model.model_copy(update={"backbone": backbone, "head": "grar", "pretrained": None})
    torch.manual_seed(0)
    model = build_segmentor(model_config, num_classes, synthetic_affinity(num_classes))
    criterion = build_criterion(
        params.train.loss.model_copy(update={"sr_class_weights": "uniform"}), num_classes, model.head.feature_channels
    )
    from pipeline.training.build import TrainingStep

    step = TrainingStep(model, criterion).to(device, memory_format=MEMORY_FORMAT).train()
    optimizer = torch.optim.SGD(
        step.parameters(), lr=1e-4, momentum=params.train.momentum, weight_decay=params.train.weight_decay
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, crop, crop, generator=generator).to(
        device, memory_format=MEMORY_FORMAT
    )  # (B, 3, S, S)
    target = torch.randint(0, num_classes, (batch, crop, crop), generator=generator).to(device)  # (B, S, S)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    totals: list[float] = []
    finite = True

    def one_step() -> None:
        nonlocal finite
        with autocast(device, dtype):
            terms = step(images, target)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        values = [float(value.detach()) for value in terms.values()]
        finite = finite and all(math.isfinite(value) for value in values)
        totals.append(float(terms["total"].detach()))

    for _ in range(warmup):
        one_step()
    synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        one_step()
    synchronize()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {
        "backbone": backbone,
        "head": model_config.head,
        "crop": crop,
        "batch": batch,
        "num_classes": num_classes,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": "bfloat16 autocast" if dtype == "bfloat16" else "float32",
        "channels_last": True,
        "warmup": warmup,
        "iterations": iterations,
        "seconds": seconds,
        "images_per_s": batch * iterations / seconds,
        "seconds_per_iteration": seconds / iterations,
        "peak_memory_bytes": int(peak),
        "memory_method": MEMORY_METHOD[device.type],
        "losses_finite": finite,
        "loss_first": totals[0],
        "loss_last": totals[-1],
    }


def format_train_table(report: dict) -> str:
    """The report in three lines: setup, figures, and whether the losses stayed finite."""
    return "\n".join(
        [
            f"training step: {report['backbone']} + {report['head']}, {report['crop']}x{report['crop']}, batch "
            f"{report['batch']}, {report['dtype']}, channels_last, {report['device']} ({report['device_name']}), "
            f"{report['iterations']} iterations after {report['warmup']} warm-up",
            f"{report['images_per_s']:.2f} images/s  {report['seconds_per_iteration'] * 1000:.1f} ms/iteration  "
            f"peak memory {report['peak_memory_bytes'] / 2**30:.2f} GiB",
            f"losses finite: {'yes' if report['losses_finite'] else 'NO'} (total {report['loss_first']:.4f} first, "
            f"{report['loss_last']:.4f} last)",
        ]
    )
