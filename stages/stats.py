"""DVC stage `stats@NAME`: co-occurrence statistics (Eq. 1) of prepared dataset NAME's train split.

Reads data.root/NAME, writes stats.root/NAME (the files: see ``pipeline.stats``).
Runs where ``executor.stages.stats`` says: here, or as one SLURM job (e.g. on a
CPU partition) waited for and collected (``pipeline.cluster.stage_jobs``).
"""

from __future__ import annotations

from pipeline.cluster.stage_jobs import dataset_stage
from pipeline.paths import stats_dir
from pipeline.stats.compute import build_dataset_stats
from stages import dataset_stage_main

# The params keys the stage reads, as dvc.yaml lists them.
KEYS = ("data.root", "stats.root", "stats.normalisation", "stats.top_k", "stats.workers")


def main() -> None:
    dataset_stage_main(dataset_stage("stats", build_dataset_stats, stats_dir, KEYS), "stats")


if __name__ == "__main__":
    main()
