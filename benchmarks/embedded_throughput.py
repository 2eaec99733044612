"""Throughput of the embedded dataset's generator (``pipeline.datasets.embedded.prepare``).

Writes the dataset of ``params.yaml`` (default 2000 + 200 strips of 32 x 192)
into a temporary folder with 1 and with ``--workers`` processes, and prints
images/s for each beside the generation-only rate (drawing the image and label
arrays, no PNG written), and the speed-up.

    .venv/bin/python benchmarks/embedded_throughput.py [--params params.yaml] [--workers 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from prepare_throughput import timed  # beside this script: best wall time of `repeats` calls

from pipeline.config import hw, load_params, with_overrides
from pipeline.datasets import embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = params.data.embedded
    total = cfg.train_images + cfg.val_images
    height, width = hw(cfg.image_size)
    print(f"embedded: {cfg.train_images} + {cfg.val_images} images of {height} x {width}")

    def arrays_only() -> None:
        for split, count in (("train", cfg.train_images), ("val", cfg.val_images)):
            for index in range(count):
                embedded.generate(cfg.seed, split, index, (height, width))

    rates = {"generate only (1 process)": total / timed(arrays_only, args.repeats)}
    for workers in sorted({1, args.workers}):
        run_params = with_overrides(params, {"data.workers": workers})

        def write(run_params=run_params) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                embedded.prepare(run_params, Path(tmp) / "embedded")

        rates[f"prepare, {workers} process(es)"] = total / timed(write, args.repeats)
    base = rates["prepare, 1 process(es)"]
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:8.0f} images/s  ({rate / base:.2f}x prepare on 1 process)")


if __name__ == "__main__":
    main()
