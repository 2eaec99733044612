"""DVC stages: each ``python -m stages.<name>`` loads params.yaml, calls one function, writes its outputs.

``stage_main`` (and ``dataset_stage_main`` for a ``foreach`` stage) is every
stage's entry: params validated first, any ``GrarError`` or ``OSError`` one line
on stderr and a non-zero exit (``pipeline.errors.run_guarded``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.errors import run_guarded


def stage_main(work: Callable[[Params], object], stage: str) -> None:
    """Entry of a DVC stage: validate ``params.yaml``, run ``work``, exit with its status."""

    def run() -> None:
        work(load_params(DEFAULT_PARAMS))  # a stage's result is its files; the return value is ignored

    sys.exit(run_guarded(run, prog=f"stages.{stage}"))


def dataset_stage_main(work: Callable[[Params, str], object], stage: str) -> None:
    """Entry of a per-dataset DVC stage, ``python -m stages.<stage> NAME`` (one per item of a ``foreach``)."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=sys.modules["__main__"].__doc__)
    parser.add_argument("name", metavar="NAME", help="dataset name (checked by the stage, which lists valid ones)")
    name = parser.parse_args().name
    stage_main(lambda params: work(params, name), stage)
