"""DVC stage `weights`: fetch and verify the ImageNet weight files that the base config and the grid cells load.

Writes into ``weights.root`` only, and creates it even when nothing is needed
(the embedded profile: model.pretrained null everywhere), since DVC expects the out.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.weights import fetch_weights
from stages import stage_main


def fetch_all(params: Params) -> list[Path]:
    """Create ``weights.root``, then fetch what ``params`` load (``pipeline.weights.fetch_weights``)."""
    Path(params.weights.root).mkdir(parents=True, exist_ok=True)
    return fetch_weights(params)


def main() -> None:
    stage_main(fetch_all, "weights")


if __name__ == "__main__":
    main()
