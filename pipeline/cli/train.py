"""`grar train`: train and evaluate one configuration into a run folder (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli.main import require_params

HELP = "train and evaluate one configuration into a run folder (resumes an interrupted run)"
DESCRIPTION = """\
Train the configuration of params.yaml (with any --set overrides) as section
4.1 describes (SGD, poly schedule, the loss terms of train.loss), evaluate it
on the val split (single scale, and multi-scale + flip when eval.multi_scale),
and write the run folder:

  config.yaml      the resolved parameters
  train_log.csv    one row per iteration: lr, total loss, each loss term, seconds
  checkpoint.pt    model, optimiser, iteration, random state, parameters
  metrics.json     mIoU, pixel accuracy, per-class IoU (single scale and MS), provenance
  confusion.npy    the dataset-level confusion matrix (confusion_ms.npy for MS)

Resuming: the checkpoint is written every train.checkpoint_every iterations,
at the end, and when SIGTERM or SIGUSR2 arrives (at the next iteration
boundary; the command then exits with status 128 + the signal number). Run the
same command again, with the same --out and the same parameters, and training
continues from the checkpoint's iteration: on CPU it ends with exactly the
weights an uninterrupted run has. A folder holding a checkpoint or a finished
run of different parameters is refused. A finished run (metrics.json present)
is not trained again: its scores are printed.

One process trains a run folder at a time (its lock, grar.lock.N, works on
NFS and Lustre too; docs/training.md, "Locks"): on a folder another process trains, the
command stops with "running elsewhere (host, pid, since ...)", or with --wait
waits for it to finish and then prints its scores (or resumes it, had it
stopped).

The default folder, <grid.runs>/adhoc-<hash10>, is named by the hash of the
parameters that change the model, so the same configuration always lands in
the same folder.

examples:
  grar train                                     the configuration of params.yaml
  grar train --set model.head=fcn --iterations 50
  grar train --out runs/my-grar --set stats.normalisation=conditional"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder (default: <grid.runs>/adhoc-<first 10 hex digits of the config hash>)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="total iterations of the poly schedule (sets train.schedules.<train.dataset>.iterations; "
        "part of the configuration, so it changes the hash and the default folder)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when another process trains the run folder, wait for it instead of stopping with an error",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.config import with_overrides
    from pipeline.errors import ConfigError
    from pipeline.io import check_new_output
    from pipeline.lock import run_lock
    from pipeline.paths import runs_dir
    from pipeline.rundir import config_hash, is_run_folder
    from pipeline.training.checkpoint import Interrupted
    from pipeline.training.run import run_cell

    params = require_params(args)
    if args.iterations is not None:
        if args.iterations < 1:
            raise ConfigError(f"--iterations: must be >= 1 (got {args.iterations})")
        params = with_overrides(params, {f"train.schedules.{params.train.dataset}.iterations": args.iterations})
    out = args.out if args.out is not None else runs_dir(params) / f"adhoc-{config_hash(params)[:10]}"
    print(f"run folder: {out}", flush=True)
    check_new_output(out, folder=True, ours=is_run_folder, what="run folder")  # before the lock writes there
    try:
        with run_lock(out, wait=args.wait):  # run_cell takes it too: here only to wait when asked
            metrics = run_cell(params, out)
    except Interrupted as stop:
        print(f"grar: {stop.message}", file=sys.stderr)
        return int(stop.code)
    line = f"mIoU {100 * metrics['miou']:.2f}  pixel accuracy {100 * metrics['pixel_accuracy']:.2f}"
    if metrics["ms"] is not None:
        line += f"  |  MS mIoU {100 * metrics['ms']['miou']:.2f}"
    print(f"{out}: {line}  ({metrics['iterations']} iterations)")
    return 0
