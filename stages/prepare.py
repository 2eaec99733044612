"""DVC stage `prepare@NAME`: write dataset NAME into the canonical layout under data.root/NAME.

Runs where ``executor.stages.prepare`` says: here, or as one SLURM job (e.g. on a
CPU partition) waited for and collected (``pipeline.cluster.stage_jobs``).
"""

from __future__ import annotations

from pipeline.cluster.stage_jobs import dataset_stage
from pipeline.datasets.prepare import prepare_dataset
from pipeline.paths import dataset_dir
from stages import dataset_stage_main

# The params keys the stage reads, as dvc.yaml lists them.
KEYS = ("data.root", "data.downloads", "data.workers", "data.embedded", "data.folders")


def main() -> None:
    dataset_stage_main(dataset_stage("prepare", prepare_dataset, dataset_dir, KEYS), "prepare")


if __name__ == "__main__":
    main()
