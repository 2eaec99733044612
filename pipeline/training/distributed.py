"""Devices and processes: the device of a run, and data-parallel training across the tasks of a SLURM job.

``resolve_device(train.device)`` picks the device; ``amp(device, precision)``
is the autocast of a forward pass (``train.precision``: bf16 on CUDA, or none;
nothing on CPU) and ``MEMORY_FORMAT``
the layout of images and weights: channels_last, faster for convolutions on
CUDA and on our CPU runs too (embedded profile, 2 cores, one training step of
batch 8 at 64 x 64: fcn 52 -> 45 ms, grar 59 -> 45 ms, aspp 78 -> 51 ms).

``distributed(device)`` is the one entry: inside a submitit job with more than
one task it exports the rendezvous environment with
``submitit.helpers.TorchDistributedEnvironment().export()`` and initialises
``torch.distributed`` (NCCL on GPU, gloo on CPU); launched by ``torchrun``
(``WORLD_SIZE`` > 1 in the environment) it initialises from that; anywhere else
it is a single process and needs no SLURM at all. It yields a ``Ranks`` saying
who this process is.

Batch normalisation over the global batch: on GPU the model's BatchNorm layers
become ``torch.nn.SyncBatchNorm``. torch's SyncBatchNorm refuses CPU tensors,
so on CPU with more than one process they become ``AllReduceBatchNorm2d``
instead: the same statistics (mean and biased variance of the global batch,
two differentiable all-reduces), so a CPU job of W tasks computes the very
update one process computes on the whole batch (up to float rounding; tested
in ``tests/pipeline/training/test_ddp.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pipeline.errors import ConfigError

MEMORY_FORMAT = torch.channels_last


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda, but no GPU is visible here (use auto or cpu)")
    return torch.device(name)


def amp(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward's autocast of ``train.precision``: ``bf16``, bfloat16 autocast on CUDA (the losses cast logits to
    float32); ``fp32``, none. CPU runs are always float32 (they never used autocast, whatever the precision).

    ``fp32`` leaves PyTorch's math defaults as they are: on Ampere and later GPUs cuDNN may run convolutions
    in TF32 (``torch.backends.cudnn.allow_tf32``, true by default), matrix products stay float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: global rank, world size, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes the run's files."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def job_world_size() -> int:
    """Processes of this job: the submitit job's tasks, ``torchrun``'s WORLD_SIZE, else 1."""
    if os.environ.get("SUBMITIT_FOLDER") and os.environ.get("SLURM_JOB_ID"):
        import submitit

        return submitit.JobEnvironment().num_tasks
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[Ranks]:
    """Set up the process group of a multi-process job for the block, tear it down after (see module docstring).

    A process group that already exists is used as it is and left alone.
    """
    if dist.is_available() and dist.is_initialized():
        yield Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        return
    if job_world_size() <= 1:
        yield Ranks()
        return
    if os.environ.get("SUBMITIT_FOLDER"):
        from submitit.helpers import TorchDistributedEnvironment

        # Devices are chosen below by local rank, so CUDA_VISIBLE_DEVICES stays as SLURM set it.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


class AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the sum over the ranks of the output gradients (each rank's output
    depends on every rank's input)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d normalising with the statistics of the global batch of all ranks (SyncBatchNorm for CPU).

    In training with an initialised process group of more than one rank, the
    per-channel mean and biased variance are those of the union of the ranks'
    batches (sums all-reduced with ``AllReduceSum``, whose backward all-reduces
    the gradients, so every rank gets the gradient of the global normalisation);
    the running statistics are updated exactly as ``nn.BatchNorm2d`` does with
    the global batch. Otherwise it is BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = (0, 2, 3)
        count = x.new_full((1,), x.numel() // x.shape[1])
        sums = AllReduceSum.apply(torch.cat([x.sum(dims), count]))  # (C + 1,): Σx per channel, N
        total = sums[-1]
        mean = sums[:-1] / total  # (C,)
        centred = x - mean[None, :, None, None]  # (B, C, H, W)
        variance = AllReduceSum.apply((centred * centred).sum(dims)) / total  # (C,), biased
        out = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return out


def convert_batchnorm(module: nn.Module, cls: type[nn.BatchNorm2d]) -> nn.Module:
    """Replace every plain ``nn.BatchNorm2d`` in ``module`` by ``cls`` with the same parameters and buffers."""
    if type(module) is nn.BatchNorm2d:
        converted = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child, cls))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device, ranks: Ranks) -> nn.Module:
    """BatchNorm over the global batch when there are several ranks: SyncBatchNorm on GPU, AllReduce on CPU."""
    if not ranks.parallel:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_batchnorm(model, AllReduceBatchNorm2d)


def all_sum(values: Tensor, ranks: Ranks) -> Tensor:
    """The sum over ranks of ``values`` (returned as is in a single process)."""
    if ranks.parallel:
        values = values.clone()
        dist.all_reduce(values)
    return values


def all_gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` in a single process."""
    if not ranks.parallel:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ranks.parallel:
        dist.barrier()
