"""`grar bench train`: the training step on synthetic batches (CPU, tiny sizes; the GPU figures come from
benchmarks/gpu_check.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.bench.training import per_gpu_batch
from pipeline.cli.main import main
from pipeline.config import load_params

ROOT = Path(__file__).resolve().parents[3]


def test_the_default_batch_is_the_paper_batch_of_one_gpu():
    assert per_gpu_batch(load_params(ROOT / "profiles" / "paper.yaml")) == 16 // 4
    assert per_gpu_batch(load_params(ROOT / "params.yaml")) == 8


def test_one_training_step_of_resnet50_grar_on_the_cpu(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            [
                "bench",
                "train",
                "--params",
                str(ROOT / "params.yaml"),
                "--device",
                "cpu",
                "--backbone",
                "resnet50",
                "--crop",
                "33",
                "--batch",
                "1",
                "--dtype",
                "float32",
                "--warmup",
                "0",
                "--iterations",
                "1",
                "--json",
                str(tmp_path / "train.json"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert {
        key: report[key]
        for key in (
            "backbone",
            "head",
            "crop",
            "batch",
            "device",
            "dtype",
            "channels_last",
            "warmup",
            "iterations",
            "num_classes",
            "losses_finite",
        )
    } == {
        "backbone": "resnet50",
        "head": "grar",
        "crop": 33,
        "batch": 1,
        "device": "cpu",
        "dtype": "float32",
        "channels_last": True,
        "warmup": 0,
        "iterations": 1,
        "num_classes": 59,
        "losses_finite": True,
    }
    assert report["images_per_s"] == 1 / report["seconds"] and report["loss_first"] == report["loss_last"] > 0
    assert report["peak_memory_bytes"] > 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training step: resnet50 + grar, 33x33, batch 1, float32, channels_last, cpu (")
    assert lines[0].endswith("), 1 iterations after 0 warm-up")
    assert lines[2].startswith("losses finite: yes (total ") and lines[3] == f"wrote {tmp_path / 'train.json'}"


@pytest.mark.parametrize(("flag", "value"), [("--crop", "0"), ("--iterations", "0"), ("--warmup", "-1")])
def test_bad_sizes_are_one_line(flag, value, capsys):
    assert main(["bench", "train", "--params", str(ROOT / "params.yaml"), flag, value]) == 2
    assert capsys.readouterr().err == f"grar: error: {flag} {value}: must be >= {0 if flag == '--warmup' else 1}\n"


def test_cuda_without_a_device_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for machines without")
    assert main(["bench", "train", "--params", str(ROOT / "params.yaml"), "--device", "cuda"]) == 2
    assert "--device cuda but this machine has no CUDA device" in capsys.readouterr().err
