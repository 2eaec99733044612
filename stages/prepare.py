"""DVC stage `prepare@NAME`: write dataset NAME into the canonical layout under data.root/NAME."""

from __future__ import annotations

from pipeline.cli import dataset_stage_main
from pipeline.datasets.prepare import prepare_dataset


def main() -> None:
    dataset_stage_main(prepare_dataset, "prepare")


if __name__ == "__main__":
    main()
