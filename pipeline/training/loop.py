"""The training loop of one run (section 4.1): optimiser, schedule, data parallelism, the log and checkpoints.

Optimisation (section 4.1): SGD with ``train.momentum`` and
``train.weight_decay`` on every parameter (the model's and the SR-Loss
classifier's), the poly schedule lr = base (1 - it / total)^power with base lr
and total iterations from ``train.schedules[train.dataset]``, in two named
parameter groups (``optimizer_groups``): ``backbone`` at lr, ``head`` (heads,
auxiliary head, SR-Loss classifier) at the dataset's head multiple x lr
(``train.schedules[train.dataset].head_lr_mult``, else ``train.head_lr_mult``), as
PyTorch-Encoding's trainers do (``lr * 10`` for ``model.head``); the loss of
``pipeline.training.losses.Criterion`` (pixel CE + w_aux aux CE + w_coarse coarse CE +
w_sr SR-Loss, Eq. 6). On CUDA the forward runs under bf16 autocast
(``train.precision: bf16``) or in float32 (``fp32``); images and weights are
channels_last on every device (``pipeline.training.distributed``).

Data parallel (``pipeline.training.distributed``): in a job of W processes each rank
trains on batch_size / W samples of the global batch with BatchNorm over the
global batch; DDP averages the ranks' gradients, so the loss minimised is the
mean of the ranks' losses: the global batch's loss when the ranks hold as many
labelled pixels (always on the embedded data), the usual DDP approximation
otherwise. Rank 0 writes the files.

Randomness is a function of ``seed``: the model's initialisation
(``torch.manual_seed(seed)``), the batches and their augmentation
(``pipeline.training.data``), and dropout (the torch random state, saved in the
checkpoint with the other rank's states). Checkpoints, the log and preemption:
``pipeline.training.checkpoint``; the run around the loop (evaluation, metrics):
``pipeline.training.run``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.segmentor import Segmentor
from pipeline.config import Params
from pipeline.errors import ConfigError, DataError
from pipeline.lock import LockLost, check_run_lock, run_lock_lost
from pipeline.paths import dataset_dir
from pipeline.rundir import CHECKPOINT_FILE, LOG_FILE, TERMS
from pipeline.training.build import TrainingStep, build_criterion
from pipeline.training.checkpoint import (
    PREEMPTION_SIGNALS,
    Diverged,
    PreemptionSignals,
    TrainLog,
    restore,
    save_checkpoint,
)
from pipeline.training.data import EpochBatchSampler, SegmentationDataset, train_loader, train_transform
from pipeline.training.distributed import MEMORY_FORMAT, Ranks, all_sum, amp, resolve_device, sync_batchnorm
from pipeline.training.inputs import build_model, sr_class_weights


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    """The "poly" schedule of section 4.1: lr = base (1 - iteration / total)^power, iteration 0-based."""
    return base * (1 - iteration / total) ** power


def has_unused_parameters(params: Params) -> bool:
    """Whether some parameters get no gradient (DDP must then look for them every step).

    The auxiliary head when its loss weight is 0, and GRAr's coarse classifier
    with hard pooling (no gradient through the argmax) when the coarse CE is off.
    """
    loss, model = params.train.loss, params.model
    return (model.aux and loss.aux == 0) or (model.head == "grar" and model.grar.pooling == "hard" and loss.coarse == 0)


def optimizer_groups(step: TrainingStep, head_lr_mult: float) -> list[dict[str, Any]]:
    """SGD parameter groups: ``backbone`` (lr_mult 1) and ``head`` (everything else, lr_mult ``head_lr_mult``).

    "Everything else" is the context head, the auxiliary head and the SR-Loss
    classifier. The schedule sets each group's lr to poly_lr x ``lr_mult``;
    both keys travel in the optimizer's state dict, so a resumed run keeps them.
    PyTorch-Encoding (``experiments/segmentation/train.py``) trains
    ``model.head`` and ``model.auxlayer`` at 10 x lr, the pretrained backbone at lr.
    """
    backbone = list(step.model.backbone.parameters())
    ids = {id(parameter) for parameter in backbone}
    rest = [parameter for parameter in step.parameters() if id(parameter) not in ids]
    return [
        {"name": "backbone", "params": backbone, "lr_mult": 1.0},
        {"name": "head", "params": rest, "lr_mult": float(head_lr_mult)},
    ]


def train(params: Params, run_dir: Path, ranks: Ranks = Ranks(), stop_after: int | None = None) -> Segmentor:
    """Train ``params`` into ``run_dir`` (resuming from its checkpoint) and return the model (in eval mode).

    ``stop_after``: stop, with a checkpoint, once that many iterations are
    done, as a preemption would (the next call resumes from there).
    """
    run_dir = Path(run_dir)
    device = current_device(params)
    schedule, config = params.train.schedule, params.train
    dataset = SegmentationDataset(
        dataset_dir(params, config.dataset), "train", train_transform(config.augment, config.crop_size), params.seed
    )
    if config.batch_size % ranks.world_size:
        raise ConfigError(
            f"train.batch_size {config.batch_size} (the global batch) does not split evenly over the "
            f"{ranks.world_size} processes of this job"
        )
    if len(dataset) < config.batch_size:
        raise DataError(
            f"{dataset.root / 'train'}: {len(dataset)} images cannot fill one batch of train.batch_size "
            f"{config.batch_size}"
        )
    num_classes = dataset.num_classes
    model = sync_batchnorm(build_model(params, num_classes), device, ranks)
    criterion = build_criterion(
        config.loss, num_classes, model.head.feature_channels, sr_class_weights(params, num_classes)
    )
    step = TrainingStep(model, criterion).to(device, memory_format=MEMORY_FORMAT)
    optimizer = torch.optim.SGD(
        optimizer_groups(step, config.head_mult),
        lr=schedule.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.exists():
        start = restore(checkpoint, step, optimizer, params, ranks)
        if ranks.main:
            print(f"{run_dir}: resuming at iteration {start} of {schedule.iterations}", file=sys.stderr, flush=True)
    else:
        start = 0
        torch.manual_seed(params.seed + 1_000_003 * ranks.rank)  # dropout: one stream per rank
    end = schedule.iterations if stop_after is None else min(schedule.iterations, stop_after)
    if start < end:
        run_iterations(params, run_dir, step, optimizer, dataset, range(start, end), device, ranks)
    return model.eval()


def run_iterations(
    params: Params,
    run_dir: Path,
    step: TrainingStep,
    optimizer: torch.optim.Optimizer,
    dataset: SegmentationDataset,
    iterations: range,
    device: torch.device,
    ranks: Ranks,
) -> None:
    """The training loop over ``iterations`` (0-based steps), with its log, checkpoints and signal handling."""
    config, schedule = params.train, params.train.schedule
    sampler = EpochBatchSampler(
        len(dataset), config.batch_size, params.seed, iterations.start, ranks.rank, ranks.world_size
    )
    batches = iter(train_loader(dataset, sampler, config.workers, pin_memory=device.type == "cuda"))
    module: nn.Module = step
    if ranks.parallel:
        module = DistributedDataParallel(
            step,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=has_unused_parameters(params),
        )
    log = TrainLog(run_dir / LOG_FILE, iterations.start) if ranks.main else None
    checkpoint = run_dir / CHECKPOINT_FILE
    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=schedule.iterations,
        initial=iterations.start,
        unit="it",
        desc=f"train {params.model.head}",
        disable=not (ranks.main and interactive),
        dynamic_ncols=True,
    )
    step.train()
    session_start = time.perf_counter()
    saved = iterations.start if checkpoint.exists() else None  # iteration of the last good checkpoint
    with PreemptionSignals() as signals, bar:
        for iteration in iterations:
            started = time.perf_counter()
            images, target = next(batches)
            images = images.to(device, non_blocking=True, memory_format=MEMORY_FORMAT)  # (b, 3, S, S)
            target = target.to(device, non_blocking=True)  # (b, S, S)
            lr = poly_lr(schedule.lr, iteration, schedule.iterations, config.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            with amp(device, config.precision):
                terms = module(images, target)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            # One reduction per iteration: the terms (mean over ranks), the signal flags (any rank) and whether
            # rank 0 lost the run's lock (pipeline.lock): then every rank stops before anything is written.
            zero = terms["total"].new_zeros(())
            lost = float(ranks.main and run_lock_lost(run_dir))
            reduced = torch.cat(
                [
                    torch.stack([terms["total"], *(terms.get(k, zero) for k in TERMS)]).detach().float(),
                    torch.tensor([*signals.flags(), lost], device=device),
                ]
            )
            reduced = all_sum(reduced, ranks).tolist()
            values = {"loss": reduced[0] / ranks.world_size}
            values |= {k: v / ranks.world_size for k, v in zip(TERMS, reduced[1 : 1 + len(TERMS)]) if k in terms}
            flags = reduced[1 + len(TERMS) :]
            stopping = [signum for signum, flag in zip(PREEMPTION_SIGNALS, flags) if flag > 0]
            done = iteration + 1
            if flags[-1] > 0:  # the lock is lost: the run may be another process's now, write nothing
                if log is not None:
                    log.close()
                check_run_lock(run_dir)  # rank 0: LockLost naming the lock and its new holder
                raise LockLost(str(run_dir), run_dir, None)  # the other ranks
            if log is not None:
                log.append(done, lr, values | lambdas(step.model), time.perf_counter() - started)
            diverged = [
                (name, values[name]) for name in (*TERMS, "loss") if name in values and not math.isfinite(values[name])
            ]  # a term first: it names the cause
            if diverged:  # every rank sees the same reduced values: all stop here, none saves these weights
                if log is not None:
                    log.close()
                raise Diverged(run_dir, done, *diverged[0], lr, saved)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}", refresh=False)
            bar.update()
            if done % config.checkpoint_every == 0 or done == iterations.stop or stopping:
                save_checkpoint(checkpoint, step, optimizer, done, params, ranks, kept=saved)
                saved = done
                if ranks.main and not interactive:
                    rate = (done - iterations.start) / (time.perf_counter() - session_start)
                    print(
                        f"iteration {done}/{schedule.iterations} loss {values['loss']:.4f} lr {lr:.3g} {rate:.2f} it/s",
                        file=sys.stderr,
                        flush=True,
                    )
            if stopping:
                if log is not None:
                    log.close()
                signals.hand_over(stopping[0], done, checkpoint)
    if log is not None:
        log.close()


def lambdas(model: Segmentor) -> dict[str, float]:
    """GRAr's current λ (``lambda_pos``) and λ̂ (``lambda_neg``); only those the model has (none for other heads)."""
    reasoning = getattr(model.head, "reasoning", None)
    found = {
        "lambda_pos": getattr(reasoning, "lambda_positive", None),
        "lambda_neg": getattr(reasoning, "lambda_negative", None),
    }
    return {column: float(value.detach()) for column, value in found.items() if value is not None}


def current_device(params: Params) -> torch.device:
    """``train.device`` resolved; on CUDA the device this process was given (``torch.cuda.current_device``)."""
    device = resolve_device(params.train.device)
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


@contextlib.contextmanager
def cpu_threads(params: Params) -> Iterator[int]:
    """torch's CPU threads for one run: ``train.threads``; when null, inside a SLURM job the CPUs the task was
    given (torch would count the node's cores), else torch's own choice. Restored afterwards.

    ``train.threads`` is part of a run's identity (its config hash): float reductions (convolution weight
    gradients, BatchNorm statistics) split their sums by thread, so 1 and 2 threads give different, each
    reproducible, results. One thread per run is also the fastest way to use a small CPU: the embedded
    tensors are too small for two threads to share an operation well, so the local executor trains
    ``executor.parallel`` runs side by side instead (``benchmarks/run_cost.py``).
    """
    before = torch.get_num_threads()
    threads = params.train.threads
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if threads is None and cpus and os.environ.get("SLURM_JOB_ID"):
        threads = max(1, int(cpus))
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
