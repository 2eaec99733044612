"""Train and evaluate one run into its run folder (section 4.1; the run-folder contract).

``run_cell(params, run_dir)`` is what a grid cell, ``grar train`` and a
submitit job call: train the resolved config (resuming from
``run_dir/checkpoint.pt``), evaluate on the val split, write ``metrics.json``
last. Files of a run folder:

- ``config.yaml``: the resolved params, written at start;
- ``train_log.csv``: one row per iteration: ``iteration`` (1-based: the row of
  iteration i is written after i steps), ``lr``, ``loss`` (the weighted total
  that is minimised), the unweighted terms ``ce``, ``aux``, ``coarse``, ``sr``, ``danet``
  (empty when the run has no such term), ``seconds`` (wall time of the
  iteration, data loading included), ``lambda_pos`` and ``lambda_neg``
  (GRAr's learnt λ of Eq. 2 and λ̂ of Eq. 3 after the iteration's step; empty
  for other heads and for a disabled direction; logs written before these
  columns existed simply lack them); a resumed run first cuts the file back
  to the checkpoint's iteration, so no iteration appears twice;
- ``checkpoint.pt``: see ``save_checkpoint``; written atomically every
  ``train.checkpoint_every`` iterations, at the end, and when a preemption
  signal arrives;
- ``metrics.json``, ``confusion.npy``, ``confusion_ms.npy``,
  ``confusion_images.npz``, ``confusion_images_ms.npz``: see ``run_cell``.

Optimisation (section 4.1): SGD with ``train.momentum`` and
``train.weight_decay`` on every parameter (the model's and the SR-Loss
classifier's), the poly schedule lr = base (1 - it / total)^power with base lr
and total iterations from ``train.schedules[train.dataset]``, in two named
parameter groups (``optimizer_groups``): ``backbone`` at lr, ``head`` (heads,
auxiliary head, SR-Loss classifier) at ``train.head_lr_mult`` x lr, as
PyTorch-Encoding's trainers do (``lr * 10`` for ``model.head``); the loss of
``pipeline.losses.Criterion`` (pixel CE + w_aux aux CE + w_coarse coarse CE +
w_sr SR-Loss, Eq. 6). On CUDA the forward runs under bf16 autocast; images and
weights are channels_last on every device (``pipeline.distributed``).

Data parallel (``pipeline.distributed``): in a job of W processes each rank
trains on batch_size / W samples of the global batch with BatchNorm over the
global batch; DDP averages the ranks' gradients, so the loss minimised is the
mean of the ranks' losses: the global batch's loss when the ranks hold as many
labelled pixels (always on the embedded data), the usual DDP approximation
otherwise. Rank 0 writes the files.

Randomness is a function of ``seed``: the model's initialisation
(``torch.manual_seed(seed)``), the batches and their augmentation
(``pipeline.data``), and dropout (the torch random state, saved in the
checkpoint with the other rank's states). On CPU an interrupted and resumed
run ends bit-identical to an uninterrupted one.

Preemption. While training, SIGUSR2 (SLURM's warning before a time limit or a
preemption, which submitit asks for) and SIGTERM (``scontrol requeue``,
``scancel``, a shutdown) only set a flag; at the next iteration boundary
every rank agrees on it, the checkpoint is written, and then the signal is
handed over: to submitit's own SIGUSR2 handler when there is one (it calls
the job's ``checkpoint()`` and requeues the job, which calls ``run_cell``
again and resumes), otherwise ``Interrupted`` (a ``SystemExit``) ends the
process, after saying where the checkpoint is.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.segmentor import Segmentor
from pipeline.build import build_criterion, build_segmentor
from pipeline.config import ALL_LOCAL, Params, validate
from pipeline.data import EpochBatchSampler, SegmentationDataset, train_loader, train_transform
from pipeline.distributed import (
    MEMORY_FORMAT, Ranks, all_gather, all_sum, amp, distributed, resolve_device, sync_batchnorm,
)
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation import evaluate_model, scores
from pipeline.io import atomic_path, check_new_output, write_text_atomic
from pipeline.lock import locked_run
from pipeline.losses import Criterion
from pipeline.paths import dataset_dir, stats_dir
from pipeline.per_image import write_image_confusions
from pipeline.rundir import (
    CHECKPOINT_FILE, CONFIG_FILE, CONFUSION_FILE, CONFUSION_IMAGES_FILE, CONFUSION_IMAGES_MS_FILE, CONFUSION_MS_FILE,
    LAMBDAS, LOG_COLUMNS, LOG_FILE, METRICS_FILE, RUN_MARKER, TERMS,
    config_hash, finished_metrics, is_run_folder, read_log, source_commit,
)
from pipeline.stats.affinity import frequency
from pipeline.stats.io import load_counts, read_classes

PREEMPTION_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    """The "poly" schedule of section 4.1: lr = base (1 - iteration / total)^power, iteration 0-based."""
    return base * (1 - iteration / total) ** power


# ---------------------------------------------------------------- the parts of a run, from params


def class_names(params: Params) -> list[str]:
    """The class names of ``train.dataset`` (its ``classes.csv``)."""
    return read_classes(dataset_dir(params, params.train.dataset) / "classes.csv")


def affinity_matrix(params: Params, num_classes: int) -> Tensor | None:
    """GRAr's f (K, K) for ``edges: graph``: the t counts of the statistics under ``stats.normalisation`` (Eq. 1).

    f is recomputed from t, not read from the file's f column, so a run whose
    ``stats.normalisation`` differs from the one the statistics were written
    with gets its own. ``None`` for other heads and for ``edges: conv``.
    """
    if params.model.head != "grar" or params.model.grar.edges != "graph":
        return None
    path = stats_dir(params, params.train.dataset) / "cooccurrence.parquet"
    t = load_counts(path, num_classes)  # (K, K)
    return torch.from_numpy(frequency(t, params.stats.normalisation)).float()


def frequency_class_weights(images: np.ndarray) -> np.ndarray:
    """The SR-Loss weights w_k of Eq. 6 for ``sr_class_weights: frequency``, from images holding each class.

    The paper leaves w_k open. Each image contributes one SR-Loss term per
    class it holds, so a class's share of the terms is its image count n_k
    (``classes.parquet``'s ``images``); median frequency balancing (Eigen and
    Fergus, ICCV 2015) over these counts gives

        w_k = median_j(n_j) / n_k        over the classes with n_k > 0,

    so a class as frequent as the median class weighs 1, rarer ones more. A
    class that never occurs forms no region, and gets 1.
    """
    images = np.asarray(images, np.float64)  # (K,)
    present = images > 0
    weights = np.ones_like(images)
    if present.any():
        weights[present] = np.median(images[present]) / images[present]
    return weights


def sr_class_weights(params: Params, num_classes: int) -> Tensor | None:
    """w_k for the SR-Loss: ``None`` (uniform) unless ``train.loss.sr_class_weights`` is ``frequency``."""
    if params.train.loss.sr_class_weights != "frequency" or params.train.loss.sr == 0:
        return None
    path = stats_dir(params, params.train.dataset) / "classes.parquet"
    try:
        table = pq.read_table(path, columns=["id", "images"])
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `grar stats {params.train.dataset}` (or `dvc repro`) first") from None
    except Exception as err:  # pyarrow raises several types for a foreign file
        raise DataError(f"{path}: not a classes.parquet with columns id, images ({err})") from None
    ids = table.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(num_classes)):
        raise DataError(f"{path}: ids are not 0..{num_classes - 1} in order: the statistics of another dataset?")
    return torch.from_numpy(frequency_class_weights(table.column("images").to_numpy())).float()


def build_model(params: Params, num_classes: int) -> Segmentor:
    """The segmentor of ``params.model`` initialised from ``seed`` (GRAr's affinity from the statistics)."""
    affinity = affinity_matrix(params, num_classes)
    torch.manual_seed(params.seed)
    source = str(stats_dir(params, params.train.dataset) / "cooccurrence.parquet")
    return build_segmentor(params.model, num_classes, affinity, affinity_source=source, weights=params.weights)


def has_unused_parameters(params: Params) -> bool:
    """Whether some parameters get no gradient (DDP must then look for them every step).

    The auxiliary head when its loss weight is 0, and GRAr's coarse classifier
    with hard pooling (no gradient through the argmax) when the coarse CE is off.
    """
    loss, model = params.train.loss, params.model
    return (model.aux and loss.aux == 0) or (
        model.head == "grar" and model.grar.pooling == "hard" and loss.coarse == 0
    )


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


class TrainingStep(nn.Module):
    """Model and criterion as one module, so DDP all-reduces the SR-Loss classifier's gradients with the model's."""

    def __init__(self, model: Segmentor, criterion: Criterion) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: Tensor, target: Tensor) -> dict[str, Tensor]:
        if self.criterion.resolution == "feature":  # logits left at 1/8: the CEs resize the target instead
            return self.criterion(self.model.outputs(images), target)
        return self.criterion(self.model(images), target)


# ---------------------------------------------------------------- checkpoints and the log


def save_checkpoint(
    path: Path, step: TrainingStep, optimizer: torch.optim.Optimizer, iteration: int, params: Params, ranks: Ranks
) -> None:
    """Write ``checkpoint.pt`` atomically (rank 0; every rank must call it, the RNG states are gathered).

    Content (all loadable with ``torch.load(weights_only=True)``): ``model``,
    ``criterion`` (the SR-Loss classifier) and ``optimizer`` state dicts,
    ``iteration`` (steps done; the schedule is a function of it), ``rng``
    (``{"torch": [per rank], "cuda": [per rank]}`` uint8 tensors), ``params``
    (the resolved params as JSON types), ``config_hash``, ``num_classes`` and
    ``class_names`` (what ``load_run_model`` needs to rebuild the model).
    """
    rng = all_gather(
        (torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0)), ranks
    )
    if not ranks.main:
        return
    names = class_names(params)
    state = {
        "model": step.model.state_dict(),
        "criterion": step.criterion.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "rng": {"torch": [cpu for cpu, _ in rng], "cuda": [cuda for _, cuda in rng]},
        "params": params.model_dump(mode="json"),
        "config_hash": config_hash(params),
        "num_classes": len(names),
        "class_names": names,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def check_checkpoint_config(path: Path, digest: str) -> None:
    """Refuse a ``checkpoint.pt`` of another configuration before anything in its folder is written.

    Reads only the checkpoint's ``config_hash`` (memory-mapped: the weights are not loaded).
    """
    if path.exists():
        check_config_hash(path, load_checkpoint(path, mmap=True), digest)


def check_config_hash(path: Path, state: dict[str, Any], digest: str) -> None:
    """``DataError`` unless the checkpoint ``state`` read from ``path`` is of the config ``digest``."""
    stored = state.get("config_hash")
    if stored != digest:
        raise DataError(
            f"{path}: checkpoint of another configuration (config hash {str(stored)[:10]}, this run {digest[:10]}); "
            "delete it or train into another folder"
        )


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint written by ``save_checkpoint``, read safely (``weights_only=True``) onto the CPU.

    ``mmap``: map the file instead of reading it, so tensors are only read when touched.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


def restore(
    path: Path, step: TrainingStep, optimizer: torch.optim.Optimizer, params: Params, ranks: Ranks
) -> int:
    """Load ``checkpoint.pt`` into the model, criterion, optimiser and RNG; return its iteration."""
    state = load_checkpoint(path)
    check_config_hash(path, state, config_hash(params))
    try:
        step.model.load_state_dict(state["model"])
        step.criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
    except (KeyError, RuntimeError, ValueError) as err:
        raise DataError(f"{path}: does not fit the model ({type(err).__name__}: {err}); code changed?") from None
    if len(rng["torch"]) == ranks.world_size:
        torch.set_rng_state(rng["torch"][ranks.rank])
        if torch.cuda.is_available() and rng["cuda"][ranks.rank].numel():
            torch.cuda.set_rng_state(rng["cuda"][ranks.rank])
    elif ranks.main:
        print(
            f"note: {path} was written by {len(rng['torch'])} processes, this job has {ranks.world_size}: "
            "dropout draws restart from the seed",
            file=sys.stderr,
        )
    return int(state["iteration"])


class TrainLog:
    """``train_log.csv`` (columns ``LOG_COLUMNS``), kept up to ``start`` iterations and appended row by row."""

    def __init__(self, path: Path, start: int) -> None:
        kept: list[list[str]] = []
        if start > 0 and path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1:]
            kept = [row for row in rows if row and row[0].isdigit() and int(row[0]) <= start]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([LOG_COLUMNS, *kept])
        self.handle = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)

    def append(self, iteration: int, lr: float, values: dict[str, float | None], seconds: float) -> None:
        """One row; ``values`` holds ``loss``, the ``TERMS`` and the ``LAMBDAS`` the run has."""
        row = [iteration, f"{lr:.7g}"] + ["" if values.get(k) is None else f"{values[k]:.7g}" for k in ("loss", *TERMS)]
        row += [f"{seconds:.4f}"] + ["" if values.get(k) is None else f"{values[k]:.7g}" for k in LAMBDAS]
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------- preemption


class Diverged(DataError):
    """A loss term became NaN or infinite: training stopped before saving, the last good checkpoint is kept."""

    def __init__(self, run_dir: Path, iteration: int, term: str, value: float, lr: float, saved: int | None) -> None:
        kept = f"{CHECKPOINT_FILE} of iteration {saved} is kept" if saved else "no checkpoint was written yet"
        super().__init__(
            f"{run_dir}: training diverged at iteration {iteration}: loss term {term} is {value} (lr {lr:.4g}); "
            f"{kept}, no metrics written; lower the learning rate or check the data, then train again"
        )
        self.iteration, self.term = iteration, term


class Interrupted(SystemExit):
    """Training stopped by a signal after writing its checkpoint; exit status 128 + signal number."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.message = (
            f"{signal.Signals(signum).name} received: stopped after iteration {iteration} with a checkpoint in "
            f"{checkpoint}; run the same command again to resume"
        )
        super().__init__(128 + signum)


class PreemptionSignals:
    """Note SIGUSR2 / SIGTERM during the block instead of dying mid-iteration (see the module docstring).

    Handlers can only be installed from the main thread; elsewhere the block
    runs without them. The handlers found on entry (submitit's) are restored
    on exit and called by ``hand_over``.
    """

    def __init__(self) -> None:
        self.received: set[int] = set()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _note(self, signum: int, _frame: object) -> None:
        self.received.add(signum)

    def flags(self) -> list[float]:
        """One 0/1 flag per signal of ``PREEMPTION_SIGNALS`` (summed over ranks so that all of them stop)."""
        return [float(signum in self.received) for signum in PREEMPTION_SIGNALS]

    def hand_over(self, signum: int, iteration: int, checkpoint: Path) -> None:
        """After the checkpoint: the previous handler (submitit requeues and exits), then ``Interrupted``."""
        previous = self.previous.get(signum)
        self.__exit__()
        if callable(previous):
            previous(signum, None)
        raise Interrupted(signum, iteration, checkpoint)


# ---------------------------------------------------------------- training


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
        optimizer_groups(step, config.head_lr_mult), lr=schedule.lr,
        momentum=config.momentum, weight_decay=config.weight_decay,
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
        total=schedule.iterations, initial=iterations.start, unit="it", desc=f"train {params.model.head}",
        disable=not (ranks.main and interactive), dynamic_ncols=True,
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
            with amp(device):
                terms = module(images, target)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            # One reduction per iteration: the terms (mean over ranks) and the signal flags (any rank).
            zero = terms["total"].new_zeros(())
            reduced = torch.cat([
                torch.stack([terms["total"], *(terms.get(k, zero) for k in TERMS)]).detach().float(),
                torch.tensor(signals.flags(), device=device),
            ])
            reduced = all_sum(reduced, ranks).tolist()
            values = {"loss": reduced[0] / ranks.world_size}
            values |= {k: v / ranks.world_size for k, v in zip(TERMS, reduced[1 : 1 + len(TERMS)]) if k in terms}
            stopping = [signum for signum, flag in zip(PREEMPTION_SIGNALS, reduced[1 + len(TERMS) :]) if flag > 0]
            done = iteration + 1
            if log is not None:
                log.append(done, lr, values | lambdas(step.model), time.perf_counter() - started)
            diverged = [(name, values[name]) for name in (*TERMS, "loss") if name in values
                        and not math.isfinite(values[name])]  # a term first: it names the cause
            if diverged:  # every rank sees the same reduced values: all stop here, none saves these weights
                if log is not None:
                    log.close()
                raise Diverged(run_dir, done, *diverged[0], lr, saved)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}", refresh=False)
            bar.update()
            if done % config.checkpoint_every == 0 or done == iterations.stop or stopping:
                save_checkpoint(checkpoint, step, optimizer, done, params, ranks)
                saved = done
                if ranks.main and not interactive:
                    rate = (done - iterations.start) / (time.perf_counter() - session_start)
                    print(f"iteration {done}/{schedule.iterations} loss {values['loss']:.4f} lr {lr:.3g} "
                          f"{rate:.2f} it/s", file=sys.stderr, flush=True)
            if stopping:
                if log is not None:
                    log.close()
                signals.hand_over(stopping[0], done, checkpoint)
    if log is not None:
        log.close()


def lambdas(model: Segmentor) -> dict[str, float]:
    """GRAr's current λ (``lambda_pos``) and λ̂ (``lambda_neg``); only those the model has (none for other heads)."""
    reasoning = getattr(model.head, "reasoning", None)
    found = {"lambda_pos": getattr(reasoning, "lambda_positive", None),
             "lambda_neg": getattr(reasoning, "lambda_negative", None)}
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


# ---------------------------------------------------------------- the run


def run_cell(params: Params, run_dir: Path) -> dict[str, Any]:
    """Train ``params`` into ``run_dir`` (resuming), evaluate on the val split, write ``metrics.json`` last.

    Returns the metrics: ``miou``, ``pixel_accuracy``, ``mean_accuracy``,
    ``per_class_iou`` {class name: IoU or None} (single scale; fractions in
    [0, 1]), ``ms`` (the same four, multi-scale + flip) or ``None``,
    ``iterations``, ``train_seconds`` (sum of the log's per-iteration times,
    over every resume), ``eval_seconds``, ``provenance`` {profile, dataset,
    backbone, head, seed, commit, config_hash, run_dir, device, threads, torch}. Also
    writes ``confusion.npy`` (and ``confusion_ms.npy``), the (K, K) int64
    dataset-level confusion matrices, rows = ground truth, and
    ``confusion_images.npz`` (and ``confusion_images_ms.npz``), the same
    counts per val image, sparse (schema: ``pipeline.per_image``; their sum
    is the dataset-level matrix).

    A ``run_dir`` whose ``metrics.json`` has this config's hash is returned as
    is. In a multi-task SLURM job every task calls this: the tasks train one
    model data-parallel and rank 0 writes the files.
    """
    run_dir = Path(run_dir)
    digest = config_hash(params)
    done = finished_metrics(run_dir, digest)
    if done is not None:
        return done
    check_new_output(run_dir, folder=True, ours=is_run_folder, what="run folder")  # before the lock writes there
    return train_and_evaluate(params, run_dir, digest)


@locked_run  # one trainer per run folder (pipeline.lock): pipeline.lock.Locked when another process trains it
def train_and_evaluate(params: Params, run_dir: Path, digest: str) -> dict[str, Any]:
    """``run_cell``'s work on config ``digest``, under the run folder's lock (see ``run_cell``)."""
    done = finished_metrics(run_dir, digest)  # finished by the process whose lock we waited for
    if done is not None:
        return done
    check_checkpoint_config(run_dir / CHECKPOINT_FILE, digest)
    with cpu_threads(params), distributed(resolve_device(params.train.device)) as ranks:
        if ranks.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / RUN_MARKER).touch()
            write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        model = train(params, run_dir, ranks)
        device = current_device(params)
        val = SegmentationDataset(dataset_dir(params, params.train.dataset), "val")
        evaluation = evaluate_model(model, val, params.eval, device, ranks, desc=f"eval {params.model.head}")
        metrics = {
            **scores(evaluation.single, val.class_names),
            "ms": scores(evaluation.multi, val.class_names) if evaluation.multi is not None else None,
            "iterations": params.train.schedule.iterations,
            "train_seconds": sum(float(row["seconds"]) for row in read_log(run_dir / LOG_FILE)) if ranks.main else None,
            "eval_seconds": evaluation.seconds,
            "provenance": {
                "profile": params.profile,
                "dataset": params.train.dataset,
                "backbone": params.model.backbone,
                "head": params.model.head,
                "danet": params.model.danet,
                "seed": params.seed,
                "commit": source_commit(),
                "config_hash": digest,
                "run_dir": str(run_dir),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
        }
        if ranks.main:
            write_matrix(run_dir / CONFUSION_FILE, evaluation.single)
            write_image_confusions(run_dir / CONFUSION_IMAGES_FILE, evaluation.single_images)
            if evaluation.multi is not None:
                write_matrix(run_dir / CONFUSION_MS_FILE, evaluation.multi)
                write_image_confusions(run_dir / CONFUSION_IMAGES_MS_FILE, evaluation.multi_images)
            write_text_atomic(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_matrix(path: Path, matrix: np.ndarray) -> None:
    """Save a confusion matrix as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, matrix.astype(np.int64))


# Params keys added after checkpoints were first written, with the value that reproduces the older behaviour:
# a checkpoint without them still loads.
LATER_KEYS: dict[str, Any] = {
    "data.folders": {}, "data.max_images": None, "model.stem": "standard", "model.danet": "matched", "train.head_lr_mult": 1.0,
    "train.loss.danet": 1.0, "eval.base_size": None, "bench.dtype": "float32", "grid.details": "artifacts/scores",
    "grid.bootstrap": 1000, "data.local": {},
    "executor.stages": ALL_LOCAL,
    "weights.root": "weights", "weights.mirror": None,
    "weights.files": {"resnet50": "weights/resnet50-0676ba61.pth", "resnet101": "weights/resnet101-63fe2227.pth",
                      "resnest101": "weights/resnest101-22405ba7.pth"},
    "train.threads": None, "train.loss.resolution": "full", "executor.parallel": 1,
}


def with_later_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of checkpoint params ``raw`` with every missing key of ``LATER_KEYS`` set to its default."""
    raw = json.loads(json.dumps(raw))
    for key, value in LATER_KEYS.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node.setdefault(last, value)
    return raw


@dataclass(frozen=True)
class RunModel:
    """A trained run as ``load_run`` rebuilds it: the model (CPU, eval mode), its params and class names."""

    model: Segmentor
    params: Params
    class_names: tuple[str, ...]


def load_run(run_dir: str | os.PathLike) -> RunModel:
    """The model of ``run_dir/checkpoint.pt`` (on the CPU, in eval mode), the params and class names it was trained with.

    Needs nothing but the checkpoint: the architecture comes from its params,
    the number of classes, their names and GRAr's affinity from the checkpoint
    itself, so neither the dataset, the statistics nor the pretrained weight
    file must still exist. Inputs are normalised images, ``pipeline.data.image_tensor``.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise DataError(f"{path}: no checkpoint; train the run first (`grar train --out {run_dir}`)")
    state = load_checkpoint(path)
    try:
        params = validate(with_later_keys(state["params"]), source=f"{path} (params)")
        num_classes = int(state["num_classes"])
        names = tuple(str(name) for name in state["class_names"])
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        placeholder = torch.zeros(num_classes, num_classes)  # the real affinity is a buffer of the state dict
        model_config = params.model.model_copy(update={"pretrained": None})
        model = build_segmentor(model_config, num_classes, placeholder)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise DataError(f"{path}: checkpoint does not rebuild its model ({type(err).__name__}: {err})") from None
    return RunModel(model.eval(), params, names)


def load_run_model(run_dir: str | os.PathLike) -> tuple[Segmentor, Params]:
    """The model of ``run_dir/checkpoint.pt`` and its params (``load_run`` without the class names)."""
    run = load_run(run_dir)
    return run.model, run.params
