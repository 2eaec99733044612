"""DVC stage `bench`: the Table 3 module benchmark, written to ``bench.out`` (JSON)."""

from __future__ import annotations

import json

from pipeline.cli import stage_main
from pipeline.config import Params
from pipeline.io import write_text_atomic


def bench(params: Params) -> None:
    """Measure every head (``pipeline.bench.benchmark_modules``), write the JSON, print the table."""
    from pipeline.bench import BENCH_JSON, benchmark_modules, format_table
    from pipeline.io import check_new_output

    check_new_output(params.bench.out, folder=False, ours=BENCH_JSON, what="bench.out")
    report = benchmark_modules(params.bench, params.model.grar, danet=params.model.danet)
    write_text_atomic(params.bench.out, json.dumps(report, indent=2) + "\n")
    print(format_table(report))


def main() -> None:
    stage_main(bench, "bench")


if __name__ == "__main__":
    main()
