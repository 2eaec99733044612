"""DVC stage `bench`: the Table 3 module benchmark, written to ``bench.out`` (JSON).

Runs where ``executor.stages.bench`` says: here (``local``), or as one SLURM job
waited for and collected (``slurm``, ``pipeline.cluster.stage_jobs``): the paper
profile's ``bench.device: cuda`` needs no GPU on the login node.
"""

from __future__ import annotations

import json

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.io import write_text_atomic
from stages import stage_main

# The params keys the stage reads, as dvc.yaml lists them: a SLURM job of other values is not collected.
KEYS = (
    "bench",
    "model.danet",
    "model.grar.positive",
    "model.grar.negative",
    "model.grar.edges",
    "model.grar.pooling",
    "model.grar.combine",
)


def bench(params: Params) -> None:
    """Measure every head (``pipeline.bench.modules.benchmark_modules``), write the JSON, print the table."""
    from pipeline.bench.modules import BENCH_JSON, benchmark_modules, format_table
    from pipeline.io import check_new_output

    check_new_output(params.bench.out, folder=False, ours=BENCH_JSON, what="bench.out")
    report = benchmark_modules(params.bench, params.model.grar, danet=params.model.danet)
    write_text_atomic(params.bench.out, json.dumps(report, indent=2) + "\n")
    print(format_table(report))


def run_bench(params: Params) -> None:
    """``bench`` where ``executor.stages.bench.kind`` says; a CUDA benchmark asked of a machine without CUDA in
    this process is one line naming the key that sends it to a GPU node."""
    from pipeline.cluster.stage_jobs import run_stage

    if params.executor.stages.bench.kind == "local" and params.bench.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "bench.device=cuda but this machine has no CUDA device: run the stage on a GPU "
                "node through the executor (executor.stages.bench.kind: slurm, resources in "
                "executor.stages.bench.slurm) or set bench.device: cpu"
            )
    run_stage(params, "bench", bench, outputs=[params.bench.out], keys=KEYS)


def main() -> None:
    stage_main(run_bench, "bench")


if __name__ == "__main__":
    main()
