"""The module benchmark of Table 3: parameters, peak forward memory and latency of each head.

Every head of ``BENCH_HEADS`` is built as the paper compares them (``bench.head_width``,
512; ``bench.num_classes`` classes) on the same random input of
``1 x bench.channels x bench.height x bench.width`` (the paper's 1 x 2048 x 68 x 68),
in eval mode, under ``torch.inference_mode``, one after another in one process.

- ``params``: ``model.heads.module_parameters``: the head without its classifiers,
  what Table 3 counts as "the module"; ``params_total`` includes them.
- ``peak_memory_bytes``: the peak of the bytes allocated during one forward
  pass beyond what was allocated before it (input, parameters), output included.
  CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before
  the pass. CPU: every allocation and free through PyTorch's CPU allocator is
  recorded by ``torch.profiler`` (``profile_memory=True``) and replayed in time
  order; the peak of the running total is reported. Memory a library allocates
  outside PyTorch's allocator (e.g. oneDNN scratch pads) is not seen.
- ``latency_ms_median``: median wall time of ``bench.repeats`` forward passes
  after ``bench.warmup`` passes (CUDA: synchronised before and after each pass).
  ``bench.dtype``: ``float32`` runs as built, ``bfloat16`` under bfloat16
  autocast (on either device); ``bench.compile`` wraps each head in
  ``torch.compile`` first (compilation happens in the warm-up).
- ``flops``: floating-point operations of one forward pass as
  ``torch.utils.flop_counter.FlopCounterMode`` counts them (a multiply-add is
  2 FLOPs; convolutions, matrix products and attention, not elementwise ops,
  norms or pooling), before any compilation; they do not depend on the dtype.
- GRAr's affinity is ``synthetic_affinity`` (timing does not depend on its
  values); GRAr's switches are those of ``model.grar``, DANet's build that of
  ``model.danet``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import get_args

import torch
from torch import Tensor
from tqdm import tqdm

from model.heads import module_parameters
from pipeline.config import BenchConfig, GrarConfig, HeadName
from pipeline.errors import ConfigError
from pipeline.io import json_with_keys
from pipeline.paper import load_paper_tables
from pipeline.training.build import build_head, lookup

# What makes an existing JSON file one of ours (``grar bench --json``, ``bench.out``), so it may be replaced.
BENCH_JSON = json_with_keys("device", "input", "params_method", "memory_method")
BENCH_HEADS: tuple[str, ...] = get_args(HeadName)  # fcn, ppm, aspp, danet, ocr, grar
CONTEXT_HEADS = ("ppm", "aspp", "danet", "ocr", "grar")  # the five modules of Table 3

# Head name -> its row ("method") in the paper's Table 3 (reports/paper_tables.yaml).
TABLE3_METHODS = {"ppm": "PPM", "aspp": "ASPP", "danet": "DANet", "ocr": "OCR", "grar": "GRAr (ours)"}

MEMORY_METHOD = {
    "cpu": "torch.profiler(profile_memory=True): peak of the running total of CPU-allocator "
    "allocations and frees during one forward pass (input and parameters excluded, output included)",
    "cuda": "torch.cuda.max_memory_allocated() minus memory_allocated() before one forward pass "
    "(input and parameters excluded, output included)",
}


def paper_figures() -> dict[str, dict[str, float]]:
    """Head name -> the paper's Table 3 figures (GPU, ResNet-50): params, memory_mb, latency_ms, miou."""
    table = load_paper_tables()[3]
    rows = {name: table.find(method=method) for name, method in TABLE3_METHODS.items()}
    return {
        name: {
            "params": row["parameters"] * 1e6,
            "memory_mb": row["memory"],
            "latency_ms": row["time"],
            "miou": row["miou"],
        }
        for name, row in rows.items()
    }


def synthetic_affinity(num_classes: int) -> Tensor:
    """A deterministic stand-in for the Eq. 1 matrix: uniform [0, 1) from seed 0, diagonal 1."""
    generator = torch.Generator().manual_seed(0)
    affinity = torch.rand(num_classes, num_classes, generator=generator)
    return affinity.fill_diagonal_(1.0)


def benchmark_modules(
    bench: BenchConfig, grar: GrarConfig, heads: tuple[str, ...] = BENCH_HEADS, danet: str = "matched"
) -> dict:
    """Measure ``heads`` on one input in this process (DANet in the ``danet`` build); returns the JSON-ready report."""
    for name in heads:
        lookup(dict.fromkeys(BENCH_HEADS), name, "bench head")
    device = torch.device(bench.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench.device: cuda requested but no CUDA device is available (use --device cpu)")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, bench.channels, bench.height, bench.width, generator=generator).to(device)  # (1, C, H, W)
    affinity = synthetic_affinity(bench.num_classes)
    paper = paper_figures()
    modules = [
        measure_head(name, bench, grar, danet, x, affinity, paper.get(name), device)
        for name in tqdm(heads, desc="bench modules", unit="module")
    ]
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": "bfloat16 autocast" if bench.dtype == "bfloat16" else "float32",
        "compile": bench.compile,
        "input": [1, bench.channels, bench.height, bench.width],
        "head_width": bench.head_width,
        "num_classes": bench.num_classes,
        "warmup": bench.warmup,
        "repeats": bench.repeats,
        "params_method": "model.heads.module_parameters: the head without its final and coarse classifiers",
        "flops_method": FLOPS_METHOD,
        "memory_method": MEMORY_METHOD[device.type],
        "latency_method": "median wall time of forward passes after warm-up"
        + (", CUDA-synchronised" if device.type == "cuda" else ""),
        "affinity": "synthetic: uniform [0, 1) from torch.Generator seed 0, diagonal 1",
        "grar": grar.model_dump(),
        "danet": danet,
        "modules": modules,
    }


def measure_head(
    name: str,
    bench: BenchConfig,
    grar: GrarConfig,
    danet: str,
    x: Tensor,
    affinity: Tensor,
    paper: dict[str, float] | None,
    device: torch.device,
) -> dict:
    """One head's entry of the report (its module is freed when this returns, before the next is built)."""
    torch.manual_seed(0)
    head = build_head(name, bench.channels, bench.num_classes, bench.head_width, grar, affinity, danet=danet)
    head = head.to(device).eval()
    flops = count_flops(lambda: head(x))
    run = torch.compile(head) if bench.compile else head
    with torch.inference_mode(), autocast(device, bench.dtype):
        peak, latencies = _measure(lambda: run(x), device, bench.warmup, bench.repeats)
    return {
        "name": name,
        "params": module_parameters(head),
        "params_total": sum(p.numel() for p in head.parameters()),
        "flops": flops,
        "peak_memory_bytes": peak,
        "latency_ms_median": statistics.median(latencies),
        "latency_ms": latencies,
        "paper": paper,
    }


def autocast(device: torch.device, dtype: str):
    """bfloat16 autocast for ``dtype`` bfloat16 (``bench.dtype``, ``grar bench train --dtype``); else float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


FLOPS_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over one forward pass, the whole head (classifiers "
    "included); a multiply-add counts 2 FLOPs; convolutions, matrix products and attention only"
)


def count_flops(forward: Callable[[], object]) -> int:
    """FLOPs of one call of ``forward`` as ``FlopCounterMode`` counts them (a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward()
    return int(counter.get_total_flops())


def _measure(forward: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[int, list[float]]:
    """(peak forward memory in bytes, latencies in ms) of ``forward``."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        forward()
    synchronize()
    peak = cuda_peak_memory(forward) if device.type == "cuda" else cpu_peak_memory(forward)
    latencies = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        forward()
        synchronize()
        latencies.append((time.perf_counter() - start) * 1000)
    return peak, latencies


def cuda_peak_memory(forward: Callable[[], object]) -> int:
    """Peak CUDA bytes allocated by ``forward`` beyond those allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    forward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def cpu_peak_memory(forward: Callable[[], object]) -> int:
    """Peak CPU-allocator bytes allocated by ``forward`` beyond those allocated before it (see module docstring)."""
    from torch._C._profiler import _EventType  # the profiler's event tree: no public accessor for allocations

    activities = [torch.profiler.ProfilerActivity.CPU]
    with kineto_quiet(), torch.profiler.profile(activities=activities, profile_memory=True) as profile:
        forward()
    allocations = []
    pending = list(profile.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))  # frees are negative
        pending.extend(event.children)
    running = peak = 0
    for _, size in sorted(allocations):
        running += size
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def kineto_quiet() -> Iterator[None]:
    """Drop the status lines libkineto writes straight to file descriptor 2 (``USDT:``, ``STAGE:``...).

    They bypass Python's ``sys.stderr``, so fd 2 is pointed at a temporary file
    for the duration and every other line is written back to stderr afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not KINETO_LINE.match(line)]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))


KINETO_LINE = re.compile(rb"^(USDT|STAGE|ERROR|WARNING|INFO):\d{4}-\d\d-\d\d [\d:]+ \d+:\d+ \w+\.cpp:\d+\]")


def format_table(report: dict) -> str:
    """The measured figures beside the paper's Table 3, with latency relative to GRAr."""
    grar = next((m for m in report["modules"] if m["name"] == "grar"), None)
    lines = [
        f"modules on 1x{report['input'][1]}x{report['input'][2]}x{report['input'][3]}, {report['device']} "
        f"({report['device_name']}, {report['threads']} threads, {report['dtype']}"
        f"{', compiled' if report['compile'] else ''}), median of {report['repeats']} after {report['warmup']} warm-up",
        f"{'module':<7}{'params':>9}{'paper':>8}{'GFLOPs':>9}{'memory':>11}{'paper':>8}{'latency':>11}{'paper':>8}"
        f"{'/GRAr':>7}",
    ]
    for module in report["modules"]:
        paper = module["paper"] or {}
        ratio = f"{module['latency_ms_median'] / grar['latency_ms_median']:.2f}" if grar else "-"
        lines.append(
            f"{module['name']:<7}{module['params'] / 1e6:>8.2f}M"
            f"{_paper(paper.get('params'), 1e6, 'M'):>8}{module['flops'] / 1e9:>9.2f}"
            f"{module['peak_memory_bytes'] / 2**20:>9.1f}MB{_paper(paper.get('memory_mb'), 1, 'MB'):>8}"
            f"{module['latency_ms_median']:>9.1f}ms{_paper(paper.get('latency_ms'), 1, 'ms'):>8}{ratio:>7}"
        )
    return "\n".join(lines)


def _paper(value: float | None, scale: float, unit: str) -> str:
    return "-" if value is None else f"{value / scale:g}{unit}"


def lowest_latency(report: dict, names: tuple[str, ...] = CONTEXT_HEADS) -> str | None:
    """The name of the fastest of ``names`` in ``report`` (``None`` when none was measured)."""
    measured = [m for m in report["modules"] if m["name"] in names]
    return min(measured, key=lambda m: m["latency_ms_median"])["name"] if measured else None
