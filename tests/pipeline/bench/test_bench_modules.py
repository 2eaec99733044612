"""The module benchmark: memory measurement, report fields, the command and the stage (tiny inputs)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from model.heads import module_parameters
from pipeline.bench.modules import (
    BENCH_HEADS,
    benchmark_modules,
    count_flops,
    cpu_peak_memory,
    format_table,
    lowest_latency,
    paper_figures,
    synthetic_affinity,
)
from pipeline.cli.main import main
from pipeline.config import load_params, with_overrides
from pipeline.errors import ConfigError
from pipeline.training.build import build_head
from stages.bench import bench

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "bench.channels": 32,
    "bench.height": 9,
    "bench.width": 11,
    "bench.head_width": 16,
    "bench.num_classes": 5,
    "bench.warmup": 0,
    "bench.repeats": 2,
}


@pytest.fixture
def params():
    return with_overrides(load_params(ROOT / "params.yaml"), TINY)


def test_cpu_peak_memory_counts_live_tensor_bytes():
    assert cpu_peak_memory(lambda: torch.ones(3, 5, 7)) == 3 * 5 * 7 * 4

    def allocate_then_free():
        big = torch.ones(1000)
        del big
        return torch.ones(10)

    assert cpu_peak_memory(allocate_then_free) == 4000  # the peak, not the end state


def test_flops_of_a_tiny_conv_are_two_per_multiply_add():
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    # output 4 x 5 x 6 = 120 values, each 3 x 3 x 3 = 27 multiply-adds: 3240 MACs = 6480 FLOPs
    assert count_flops(lambda: conv(torch.randn(1, 3, 5, 6))) == 6480
    linear = torch.nn.Linear(7, 2, bias=False)  # 3 rows x 2 outputs x 7 = 42 MACs
    assert count_flops(lambda: linear(torch.randn(3, 7))) == 84


def test_bfloat16_is_stated_and_does_not_change_flops(params):
    float32 = benchmark_modules(params.bench, params.model.grar, heads=("fcn",))
    bf16 = benchmark_modules(
        with_overrides(params, {"bench.dtype": "bfloat16"}).bench, params.model.grar, heads=("fcn",)
    )
    assert (float32["dtype"], bf16["dtype"]) == ("float32", "bfloat16 autocast")
    assert bf16["modules"][0]["flops"] == float32["modules"][0]["flops"] > 0


def test_report_holds_every_module_with_its_figures(params):
    report = benchmark_modules(params.bench, params.model.grar)
    assert (report["device"], report["dtype"], report["input"]) == ("cpu", "float32", [1, 32, 9, 11])
    assert "profiler" in report["memory_method"]
    assert [module["name"] for module in report["modules"]] == list(BENCH_HEADS)
    affinity = synthetic_affinity(5)
    for module in report["modules"]:
        head = build_head(module["name"], 32, 5, 16, params.model.grar, affinity)
        assert module["params"] == module_parameters(head)
        assert module["params_total"] == sum(p.numel() for p in head.parameters())
        assert module["flops"] == count_flops(functools.partial(head.eval(), torch.randn(1, 32, 9, 11)))
        assert module["peak_memory_bytes"] >= 5 * 9 * 11 * 4  # at least the logits it returns
        assert len(module["latency_ms"]) == 2 and module["latency_ms_median"] > 0
    # FCN: 3x3 conv 32 -> 16 (no bias) and 1x1 classifier 16 -> 5 on 9 x 11: 2 x 99 x (16 x 288 + 5 x 16) FLOPs
    assert report["modules"][0]["flops"] == 2 * 99 * (16 * 288 + 5 * 16)
    assert report["modules"][0]["paper"] is None  # FCN is not in Table 3
    assert report["modules"][-1]["paper"]["latency_ms"] == 42
    assert lowest_latency(report) in {"ppm", "aspp", "danet", "ocr", "grar"}
    table = format_table(report)
    for name in BENCH_HEADS:
        assert f"\n{name} " in table


def test_paper_figures_are_table_3():
    figures = paper_figures()
    assert figures["ppm"] == {"params": 23.2e6, "memory_mb": 226, "latency_ms": 75, "miou": 49.2}
    assert set(figures) == {"ppm", "aspp", "danet", "ocr", "grar"}


def test_synthetic_affinity_is_deterministic_with_unit_diagonal():
    torch.testing.assert_close(synthetic_affinity(7), synthetic_affinity(7))
    assert torch.diagonal(synthetic_affinity(7)).eq(1).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_cuda_without_a_device_is_a_clear_error(params):
    with pytest.raises(ConfigError, match="bench.device: cuda requested but no CUDA device"):
        benchmark_modules(with_overrides(params, {"bench.device": "cuda"}).bench, params.model.grar)


def test_command_writes_the_json_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench" / "modules.json"
    overrides = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    code = main(
        [
            "bench",
            "modules",
            "--params",
            str(ROOT / "params.yaml"),
            *overrides,
            "--device",
            "cpu",
            "--heads",
            "ocr",
            "grar",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [module["name"] for module in report["modules"]] == ["ocr", "grar"]
    printed = capsys.readouterr().out
    assert "lowest latency of the context modules measured:" in printed and f"wrote {out}" in printed
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_command_rejects_an_unknown_head(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "modules", "--heads", "psp"])
    assert info.value.code == 2
    assert "invalid choice: 'psp'" in capsys.readouterr().err


def test_stage_writes_bench_out(params, tmp_path, capsys):
    out = tmp_path / "modules.json"
    bench(with_overrides(params, {"bench.out": str(out)}))
    assert len(json.loads(out.read_text())["modules"]) == len(BENCH_HEADS)
    assert "grar" in capsys.readouterr().out


def test_kineto_quiet_drops_only_kineto_status_lines(capfd):
    import os

    from pipeline.bench.modules import kineto_quiet

    with kineto_quiet():
        os.write(2, b"USDT:2026-11-24 10:49:34 22663:22663 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"ERROR:2026-11-24 10:49:31 22657:22657 DeviceProperties.cpp:56] gpuGetDeviceCount failed\n")
        os.write(2, b"a real warning\n")
    assert capfd.readouterr().err == "a real warning\n"
