"""`grar bench modules`: the Table 3 module benchmark (parameters, peak memory, latency)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from pipeline.cli import require_params
from pipeline.config import HeadName

HELP = "benchmark the Table 3 modules: parameters, peak forward memory, median latency"
DESCRIPTION = """\
Measure the FCN, PPM, ASPP, DANet, OCR and GRAr heads on one input of
1 x bench.channels x bench.height x bench.width (the paper's 1 x 2048 x 68 x 68)
in one run, and print the figures beside the paper's Table 3. CUDA runs in
bfloat16 autocast; --compile wraps each head in torch.compile. The JSON holds,
per module, name, params (the module without its classifiers), params_total,
peak_memory_bytes, latency_ms_median and the paper's figures, plus the device
and how each figure was measured.

examples:
  grar bench modules --device cpu --json out.json
  grar bench modules --heads ocr grar --set bench.repeats=20"""

TARGETS = ("modules",)
HEADS = get_args(HeadName)  # the order of pipeline.bench.BENCH_HEADS; torch stays unimported for --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS, help="what to benchmark (modules: the Table 3 heads)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="override bench.device")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="override bench.compile"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE (atomically)")
    parser.add_argument(
        "--heads", nargs="+", choices=HEADS, default=list(HEADS), metavar="NAME",
        help=f"heads to measure (default: all of {', '.join(HEADS)})",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.bench import benchmark_modules, format_table, lowest_latency
    from pipeline.config import with_overrides
    from pipeline.bench import BENCH_JSON
    from pipeline.io import check_new_output, write_text_atomic

    params = require_params(args)
    if args.json is not None:
        check_new_output(args.json, folder=False, ours=BENCH_JSON, what="--json")
    overrides = {"bench.device": args.device, "bench.compile": args.compile}
    params = with_overrides(params, {key: value for key, value in overrides.items() if value is not None})
    report = benchmark_modules(params.bench, params.model.grar, tuple(args.heads), params.model.danet)
    print(format_table(report))
    fastest = lowest_latency(report)
    if fastest is not None:
        print(f"lowest latency of the context modules measured: {fastest}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
