"""DVC stage `stats@NAME`: co-occurrence statistics (Eq. 1) of prepared dataset NAME's train split.

Reads data.root/NAME, writes stats.root/NAME (the files: see ``pipeline.stats``).
Runs where ``executor.stages.stats`` says: here, or as one SLURM job (e.g. on a
CPU partition) waited for and collected (``pipeline.stage_jobs``).
"""

from __future__ import annotations

from pipeline.cli import dataset_stage_main
from pipeline.config import Params
from pipeline.paths import stats_dir
from pipeline.stats.build import build_dataset_stats

# The params keys the stage reads, as dvc.yaml lists them.
KEYS = ("data.root", "stats.root", "stats.normalisation", "stats.top_k", "stats.workers")


def run_stats(params: Params, name: str) -> None:
    """``build_dataset_stats(params, name)`` where ``executor.stages.stats.kind`` says."""
    from pipeline.stage_jobs import run_stage

    run_stage(params, "stats", build_dataset_stats, outputs=[stats_dir(params, name)], keys=KEYS, item=name,
              args=(name,))


def main() -> None:
    dataset_stage_main(run_stats, "stats")


if __name__ == "__main__":
    main()
