"""`grar bench modules`: the Table 3 module benchmark; `grar bench train`: training throughput on one device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from pipeline.cli.main import require_params
from pipeline.config import BackboneName, HeadName
from pipeline.errors import ConfigError

HELP = "benchmark the Table 3 modules, or the training step on one GPU"
DESCRIPTION = """\
modules: measure the FCN, PPM, ASPP, DANet, OCR and GRAr heads on one input
of 1 x bench.channels x bench.height x bench.width (the paper's 1 x 2048 x 68
x 68) in one run, and print the figures beside the paper's Table 3. CUDA runs
in bfloat16 autocast; --compile wraps each head in torch.compile. The JSON
holds, per module, name, params (the module without its classifiers),
params_total, peak_memory_bytes, latency_ms_median and the paper's figures,
plus the device and how each figure was measured.

train: training throughput on one device (the GPU check of the paper setup):
--backbone + GRAr (model.grar, model.width, train.loss) at --crop x --crop,
--dtype (default bfloat16 autocast), channels_last, --batch images (default:
train.batch_size / executor.slurm.tasks_per_node, the batch of one GPU), SGD
on synthetic batches: images/s over --iterations steps after --warmup, peak
memory, and whether every loss term stayed finite (exit 1 if not).

examples:
  grar bench modules --device cpu --json out.json
  grar bench modules --heads ocr grar --set bench.repeats=20
  grar bench train --device cuda                 # ResNet-101 + GRAr, 544x544, bf16
  grar bench train --device cpu --backbone resnet50 --crop 65 --batch 1 --warmup 0 --iterations 1
  benchmarks/gpu_check.sh                        # every GPU figure, one script"""

TARGETS = ("modules", "train")
HEADS = get_args(HeadName)  # the order of pipeline.bench.modules.BENCH_HEADS; torch stays unimported for --help
BACKBONES = get_args(BackboneName)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", choices=TARGETS, help="what to benchmark (modules: the Table 3 heads; train: the training step)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="override bench.device")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE (atomically)")
    modules = parser.add_argument_group("modules")
    modules.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="override bench.compile"
    )
    modules.add_argument(
        "--heads",
        nargs="+",
        choices=HEADS,
        default=list(HEADS),
        metavar="NAME",
        help=f"heads to measure (default: all of {', '.join(HEADS)})",
    )
    train = parser.add_argument_group("train")
    train.add_argument("--backbone", choices=BACKBONES, default="resnet101", help="backbone (default: resnet101)")
    train.add_argument("--crop", type=int, default=544, metavar="PIXELS", help="square crop side (default: 544)")
    train.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="images per step (default: train.batch_size / executor.slurm.tasks_per_node)",
    )
    train.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="forward under bfloat16 autocast, or float32 (default: bfloat16)",
    )
    train.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed steps first (default: 5)")
    train.add_argument("--iterations", type=int, default=20, metavar="N", help="timed steps (default: 20)")


def run(args: argparse.Namespace) -> int:
    if args.target == "train":
        return run_train(args)
    from pipeline.bench.modules import BENCH_JSON, benchmark_modules, format_table, lowest_latency
    from pipeline.config import with_overrides
    from pipeline.io import check_new_output, write_text_atomic

    params = require_params(args)
    if args.json is not None:
        check_new_output(args.json, folder=False, ours=BENCH_JSON, what="--json")
    overrides = {"bench.device": args.device, "bench.compile": args.compile}
    params = with_overrides(params, {key: value for key, value in overrides.items() if value is not None})
    report = benchmark_modules(params.bench, params.model.grar, tuple(args.heads), params.model.danet)
    print(format_table(report))
    print("GFLOPs: a multiply-add counts 2 (twice what fvcore and mmcv print as FLOPs, which are MACs)")
    fastest = lowest_latency(report)
    if fastest is not None:
        print(f"lowest latency of the context modules measured: {fastest}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``grar bench train``: ``pipeline.bench.training.benchmark_training``; exit 1 when a loss was not finite."""
    params = require_params(args)
    for flag, value, least in (
        ("--crop", args.crop, 1),
        ("--batch", args.batch, 1),
        ("--warmup", args.warmup, 0),
        ("--iterations", args.iterations, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value}: must be >= {least}")
    from pipeline.bench.training import BENCH_TRAIN_JSON, benchmark_training, format_train_table, per_gpu_batch
    from pipeline.io import check_new_output, write_text_atomic

    if args.json is not None:
        check_new_output(args.json, folder=False, ours=BENCH_TRAIN_JSON, what="--json")
    report = benchmark_training(
        params,
        args.backbone,
        args.crop,
        args.batch or per_gpu_batch(params),
        args.device or params.bench.device,
        args.dtype,
        args.warmup,
        args.iterations,
        params.bench.num_classes,
    )
    print(format_train_table(report))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if report["losses_finite"] else 1
