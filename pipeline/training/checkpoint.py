"""A run's durable state while it trains: ``checkpoint.pt``, ``train_log.csv``, divergence and preemption.

The files' contents are part of the run-folder contract (``pipeline.rundir``).
The checkpoint is written atomically every ``train.checkpoint_every``
iterations, at the end, and when a preemption signal arrives; a resumed run
first cuts the log back to the checkpoint's iteration, so no iteration
appears twice. On CPU an interrupted and resumed run ends bit-identical to an
uninterrupted one.

Preemption. While training, SIGUSR2 (SLURM's warning before a time limit or a
preemption, which submitit asks for) and SIGTERM (``scontrol requeue``,
``scancel``, a shutdown) only set a flag (``PreemptionSignals``); at the next
iteration boundary every rank agrees on it, the checkpoint is written, and
then the signal is handed over: to submitit's own SIGUSR2 handler when there
is one (it calls the job's ``checkpoint()`` and requeues the job, which calls
``run_cell`` again and resumes), otherwise ``Interrupted`` (a ``SystemExit``)
ends the process, after saying where the checkpoint is.

A NaN or infinite loss term raises ``Diverged`` before anything is saved: the
last good checkpoint stays and no metrics are written.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.config import ALL_LOCAL, Params
from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.lock import check_run_lock
from pipeline.rundir import CHECKPOINT_FILE, LAMBDAS, LOG_COLUMNS, TERMS, config_hash
from pipeline.training.build import TrainingStep
from pipeline.training.distributed import Ranks, all_gather
from pipeline.training.inputs import class_names

PREEMPTION_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def save_checkpoint(
    path: Path,
    step: TrainingStep,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    params: Params,
    ranks: Ranks,
    kept: int | None = None,
) -> None:
    """Write ``checkpoint.pt`` atomically (rank 0; every rank must call it, the RNG states are gathered).

    Content (all loadable with ``torch.load(weights_only=True)``): ``model``,
    ``criterion`` (the SR-Loss classifier) and ``optimizer`` state dicts,
    ``iteration`` (steps done; the schedule is a function of it), ``rng``
    (``{"torch": [per rank], "cuda": [per rank]}`` uint8 tensors), ``params``
    (the resolved params as JSON types), ``config_hash``, ``num_classes`` and
    ``class_names`` (what ``load_run_model`` needs to rebuild the model).

    A write that fails (a full disk, above all) leaves the previous checkpoint as it was and raises
    ``CheckpointNotWritten`` naming the file, the reason and ``kept``, the iteration of that checkpoint.
    torch writes through a Python file object, which reports a failed large write as the ``OSError`` itself;
    a failed small one torch turns into a ``RuntimeError`` ("unexpected pos"), read as a full disk when the
    checkpoint's tensors outweigh the space left.
    """
    rng = all_gather(
        (torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0)), ranks
    )
    failed: CheckpointNotWritten | None = None
    if ranks.main:
        try:
            write_checkpoint(path, step, optimizer, iteration, params, rng, kept)
        except CheckpointNotWritten as err:
            failed = err
    if ranks.parallel:  # every rank stops when rank 0 could not write (else they would wait for it forever)
        flag = all_gather(failed is not None, ranks)[0]
        if flag and failed is None:
            raise DataError(f"{path}: checkpoint not written by rank 0 (its error says why); stopped")
    if failed is not None:
        raise failed


def write_checkpoint(
    path: Path,
    step: TrainingStep,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    params: Params,
    rng: list[Any],
    kept: int | None,
) -> None:
    """Rank 0's part of ``save_checkpoint``: the state, written atomically through a file object."""
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
    check_run_lock(path.parent)  # never over a run another process took over
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save(state, handle)
    except OSError as err:
        raise CheckpointNotWritten(path, err, kept, sum(t.nbytes for t in iter_tensors(state))) from None
    except RuntimeError as err:  # torch's writer: a small write that failed shows as "unexpected pos" (measured)
        if not any(sign in str(err) for sign in ("unexpected pos", "file write failed", "PytorchStreamWriter")):
            raise
        needed = sum(t.nbytes for t in iter_tensors(state))
        free = shutil.disk_usage(path.parent).free
        cause = (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if free < needed + (1 << 20)  # what the zip container adds
            else OSError(errno.EIO, f"the write failed ({str(err).splitlines()[0]})")
        )
        raise CheckpointNotWritten(path, cause, kept, needed) from None


def iter_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested state of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_tensors(item)


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


def restore(path: Path, step: TrainingStep, optimizer: torch.optim.Optimizer, params: Params, ranks: Ranks) -> int:
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
        check_run_lock(path.parent)
        kept: list[list[str]] = []
        if start > 0 and path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1:]
            kept = [row for row in rows if row and row[0].isdigit() and int(row[0]) <= start]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([LOG_COLUMNS, *kept])
        self.path = path
        self.handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - appended to row by row, closed by close()
        self.writer = csv.writer(self.handle)

    def append(self, iteration: int, lr: float, values: dict[str, float | None], seconds: float) -> None:
        """One row; ``values`` holds ``loss``, the ``TERMS`` and the ``LAMBDAS`` the run has."""
        row = [iteration, f"{lr:.7g}"] + ["" if values.get(k) is None else f"{values[k]:.7g}" for k in ("loss", *TERMS)]
        row += [f"{seconds:.4f}"] + ["" if values.get(k) is None else f"{values[k]:.7g}" for k in LAMBDAS]
        check_run_lock(self.path.parent)
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class CheckpointNotWritten(DataError):
    """A checkpoint could not be written (a full disk...): the previous one is kept, training stops."""

    def __init__(self, path: Path, err: OSError, kept: int | None, needed: int | None = None) -> None:
        reason = err.strerror or str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(path.parent).free
                reason += f" (it needs about {megabytes(needed)}, {megabytes(free)} free there)" if needed else ""
        previous = (
            f"the checkpoint of iteration {kept} is kept: free some space and run the same command again to resume "
            "from it"
            if kept
            else "no checkpoint was written yet: free some space and run the same command again"
        )
        super().__init__(f"{path}: checkpoint not written: {reason}; {previous}")
        self.errno = err.errno


def megabytes(size: int | None) -> str:
    """``12.3 MB`` (10^6 bytes)."""
    return f"{(size or 0) / 1e6:,.1f} MB"


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


LATER_KEYS: dict[str, Any] = {
    "data.folders": {},
    "data.max_images": None,
    "model.stem": "standard",
    "model.danet": "matched",
    "train.head_lr_mult": 1.0,
    "train.loss.danet": 1.0,
    "eval.base_size": None,
    "bench.dtype": "float32",
    "grid.details": "artifacts/scores",
    "grid.bootstrap": 1000,
    "data.local": {},
    "executor.stages": ALL_LOCAL,
    "weights.root": "weights",
    "weights.mirror": None,
    "weights.files": {
        "resnet50": "weights/resnet50-0676ba61.pth",
        "resnet101": "weights/resnet101-63fe2227.pth",
        "resnest101": "weights/resnest101-22405ba7.pth",
    },
    "train.threads": None,
    "train.loss.resolution": "full",
    "executor.parallel": 1,
}  # later keys with a schema default (pipeline.config.ADDED_KEYS) need no entry here


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
