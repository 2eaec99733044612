"""DVC stage `sources@NAME`: fingerprint what prepare@NAME reads from outside the pipeline (a data.folders folder).

``python -m stages.sources NAME OUT`` writes ``OUT`` (JSON) atomically. The
stage is ``always_changed``: it runs on every ``dvc repro``, and DVC re-runs
``prepare@NAME`` only when the fingerprint differs, so an edited label in the
user's folder is picked up and an unchanged folder costs one listing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.datasets.prepare import source_fingerprint
from pipeline.io import write_text_atomic
from stages import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.sources", description=__doc__)
    parser.add_argument("name", metavar="NAME", help="dataset name")
    parser.add_argument("out", metavar="OUT", type=Path, help="the fingerprint file (JSON)")
    args = parser.parse_args()

    def work(params) -> None:
        fingerprint = source_fingerprint(params, args.name)
        write_text_atomic(args.out, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")

    stage_main(work, "sources")


if __name__ == "__main__":
    main()
