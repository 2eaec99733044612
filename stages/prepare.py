"""DVC stage `prepare@NAME`: write dataset NAME into the canonical layout under data.root/NAME.

Runs where ``executor.stages.prepare`` says: here, or as one SLURM job (e.g. on a
CPU partition) waited for and collected (``pipeline.stage_jobs``).
"""

from __future__ import annotations

from pipeline.cli import dataset_stage_main
from pipeline.config import Params
from pipeline.datasets.prepare import prepare_dataset
from pipeline.paths import dataset_dir

# The params keys the stage reads, as dvc.yaml lists them.
KEYS = ("data.root", "data.downloads", "data.workers", "data.embedded", "data.folders")


def run_prepare(params: Params, name: str) -> None:
    """``prepare_dataset(params, name)`` where ``executor.stages.prepare.kind`` says."""
    from pipeline.stage_jobs import run_stage

    run_stage(params, "prepare", prepare_dataset, outputs=[dataset_dir(params, name)], keys=KEYS, item=name,
              args=(name,))


def main() -> None:
    dataset_stage_main(run_prepare, "prepare")


if __name__ == "__main__":
    main()
