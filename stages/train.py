"""DVC stage `train`: every run of every grid in grid.grids, through executor.kind, waited for and collected.

Submits what is neither done nor queued (local: trains it here), waits for the
runs queued by earlier `grar grid submit` calls too, and writes the grid indexes
grid.runs/grids/<grid>.json. Fails, naming each failed run and its log, when a
run failed (see ``pipeline.cluster.grids``).
"""

from __future__ import annotations

from pipeline.cluster.submit import train_grids
from stages import stage_main


def main() -> None:
    stage_main(train_grids, "train")


if __name__ == "__main__":
    main()
