"""DVC stage `stats@NAME`: co-occurrence statistics (Eq. 1) of prepared dataset NAME's train split.

Reads data.root/NAME, writes stats.root/NAME (the files: see ``pipeline.stats``).
"""

from __future__ import annotations

from pipeline.cli import dataset_stage_main
from pipeline.stats.build import build_dataset_stats


def main() -> None:
    dataset_stage_main(build_dataset_stats, "stats")


if __name__ == "__main__":
    main()
