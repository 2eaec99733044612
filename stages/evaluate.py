"""DVC stage `evaluate`: per grid cell its metrics (grid.metrics/<grid>/<cell>.json: mIoU, MS, interval vs FCN),
per-seed details (grid.details/<grid>.json) and training curves (grid.plots/<grid>/).

Reads the grid indexes and run folders the train stage wrote (see ``pipeline.scores.grid_scores``).
"""

from __future__ import annotations

from pipeline.scores.grid_scores import collect_grids
from stages import stage_main


def main() -> None:
    stage_main(collect_grids, "evaluate")


if __name__ == "__main__":
    main()
