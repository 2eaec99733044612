"""One measured run of ``pipeline.training.run.run_cell``: the per-phase split of its wall time, as JSON on stdout.

The worker behind ``benchmarks/run_cost.py``; it runs against whatever
``pipeline`` / ``model`` packages come first on ``PYTHONPATH`` (the "before"
tree or the "after" one), so it uses only what every version has:
``run_cell``, ``Segmentor.forward``, ``Criterion.forward``, the loop's
``train_loader`` and ``run_iterations``, the run's ``evaluate_model`` and
``infer`` (in ``pipeline.training.{loop,run,inference}``, or in a tree from
before that layout ``pipeline.train`` and ``pipeline.evaluation``). It wraps them (and ``Tensor.backward``,
``SGD.step`` / ``zero_grad``) with timers, then trains and evaluates one run
for real into a temporary folder. Phases (seconds per run):

- ``data``: drawing the training batches (``next`` on the loader);
- ``forward``, ``loss``, ``backward``, ``optimizer``: the training step's parts;
- ``trainer``: the rest of the training loop (log, checkpoints, reductions);
- ``eval_single``, ``eval_ms``: ``infer`` single scale and multi-scale + flip;
- ``eval_other``: the rest of the evaluation (reading the val split, confusions);
- ``fixed``: the rest of ``run_cell`` (model build, dataset, files);
- ``imports``: importing the trainer (once per process, not per run).

    PYTHONPATH=TREE python benchmarks/run_cost_worker.py --params TREE/params.yaml --data DIR --stats DIR
        [--iterations N] [--threads T] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

started_imports = time.perf_counter()
import torch  # noqa: E402

from model.segmentor import Segmentor  # noqa: E402
from pipeline.config import load_params, with_overrides  # noqa: E402

try:  # the layout of pipeline/training/
    from pipeline.training import inference as inference_module
    from pipeline.training import loop as loop_module
    from pipeline.training import run as run_module
    from pipeline.training.losses import Criterion
except ImportError:  # a tree from before it: pipeline/train.py held the loop and the run
    import pipeline.evaluation as inference_module
    import pipeline.train as loop_module
    from pipeline.losses import Criterion

    run_module = loop_module

IMPORT_SECONDS = time.perf_counter() - started_imports
TIMES: dict[str, float] = defaultdict(float)


def timed(name, fn):
    """``fn`` wrapped so that its calls add their wall time to ``TIMES[name]``."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start

    wrapper.__wrapped__ = fn
    return wrapper


def training_forward(fn):
    """``fn`` (a ``Segmentor`` method) timed into ``TIMES["forward"]`` in training mode, outermost call only."""

    def wrapper(self, *args, **kwargs):
        if not self.training or getattr(self, "_timing", False):
            return fn(self, *args, **kwargs)
        self._timing = True
        start = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            TIMES["forward"] += time.perf_counter() - start
            self._timing = False

    return wrapper


class TimedIterator:
    """An iterator whose ``next`` calls add their wall time to ``TIMES["data"]``."""

    def __init__(self, iterable) -> None:
        self.iterator = iter(iterable)

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            TIMES["data"] += time.perf_counter() - start


def instrument() -> None:
    """Wrap the phases' entry points with timers (this process only)."""
    Segmentor.forward = training_forward(Segmentor.forward)
    Segmentor.outputs = training_forward(Segmentor.outputs)  # what train.loss.resolution: feature calls
    Criterion.forward = timed("loss", Criterion.forward)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.optim.SGD.step = timed("optimizer", torch.optim.SGD.step)
    torch.optim.SGD.zero_grad = timed("optimizer", torch.optim.SGD.zero_grad)
    loader = loop_module.train_loader
    loop_module.train_loader = lambda *args, **kwargs: TimedIterator(loader(*args, **kwargs))
    infer = inference_module.infer

    def timed_infer(model, images, config, precision, multi=False):
        start = time.perf_counter()
        try:
            return infer(model, images, config, precision, multi)
        finally:
            TIMES["eval_ms" if multi else "eval_single"] += time.perf_counter() - start

    inference_module.infer = timed_infer
    run_module.evaluate_model = timed("evaluation", run_module.evaluate_model)
    loop_module.run_iterations = timed("training", loop_module.run_iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--data", required=True, help="data.root holding the prepared embedded dataset")
    parser.add_argument("--stats", required=True, help="stats.root holding its statistics")
    parser.add_argument("--iterations", type=int, default=None, help="default: the profile's schedule")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    overrides = {"data.root": args.data, "stats.root": args.stats, "train.device": "cpu"}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = (
            json.loads(value) if value[:1] in "[{0123456789-" or value in ("true", "false", "null") else value
        )
    params = with_overrides(params, overrides)
    if args.iterations is not None:
        schedule = params.train.schedules[params.train.dataset]
        params = with_overrides(
            params, {f"train.schedules.{params.train.dataset}": {"lr": schedule.lr, "iterations": args.iterations}}
        )
    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.time()  # epoch seconds: the parent lines up runs trained side by side
        start = time.perf_counter()
        metrics = run_module.run_cell(params, Path(tmp) / "run")
        total = time.perf_counter() - start
        ended = time.time()
    phases = {key: TIMES[key] for key in ("data", "forward", "loss", "backward", "optimizer")}
    phases["trainer"] = TIMES["training"] - sum(phases.values())
    phases["eval_single"], phases["eval_ms"] = TIMES["eval_single"], TIMES["eval_ms"]
    phases["eval_other"] = TIMES["evaluation"] - phases["eval_single"] - phases["eval_ms"]
    phases["fixed"] = total - TIMES["training"] - TIMES["evaluation"]
    phases["run"] = total
    phases["imports"] = IMPORT_SECONDS
    ms = metrics.get("ms") or {}
    json.dump(
        {
            "phases": phases,
            "began": began,
            "ended": ended,
            "miou": metrics["miou"],
            "ms_miou": ms.get("miou"),
            "threads": metrics["provenance"].get("threads", torch.get_num_threads()),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
