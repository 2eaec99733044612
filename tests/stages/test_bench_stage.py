"""The `bench` stage on a login node without CUDA: one line naming the key that sends it through the executor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_a_cuda_bench_run_here_without_cuda_names_executor_stages_bench(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for login nodes without")
    raw = yaml.safe_load((REPO / "profiles" / "embedded.yaml").read_text())
    raw["bench"]["device"] = "cuda"
    raw["bench"]["out"] = str(tmp_path / "bench.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "stages.bench"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "stages.bench: error: bench.device=cuda but this machine has no CUDA device: run the stage on a GPU node "
        "through the executor (executor.stages.bench.kind: slurm, resources in executor.stages.bench.slurm) or "
        "set bench.device: cpu\n"
    )
    assert not (tmp_path / "bench.json").exists()
