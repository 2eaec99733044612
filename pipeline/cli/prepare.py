"""`grar prepare NAME`: convert (or generate) a dataset into the canonical layout."""

from __future__ import annotations

import argparse

from pipeline.cli.main import require_params

HELP = "convert a downloaded dataset (or generate the embedded one) into data/NAME"
DESCRIPTION = """\
Write dataset NAME (embedded, ade20k, pascal_context, coco_stuff, or yours) into
<data.root>/NAME/ in the canonical layout:

  {train,val}/images/<stem>.jpg|png   RGB images
  {train,val}/labels/<stem>.png       8-bit labels: classes 0..K-1, 255 = ignore
  classes.csv                         id,name for ids 0..K-1

ade20k: 150 classes (0 -> 255, k -> k-1); pascal_context: the 59-class benchmark
(background -> 255); coco_stuff: 171 classes (0 and the 11 unused ids -> 255).
Real datasets must be downloaded first (`grar download NAME`), or named in
data.local (a copy already extracted, read in place, never written to);
conversion runs in data.workers processes.

A dataset of your own (data.folders.NAME: PATH, or {path, ignore, remap}) is
read in place, never written to. PATH holds classes.csv (id,name; ids 0..K-1)
and either train/ and val/, each with images/ and labels/, or images/, labels/
and splits/{train,val}.txt (one stem a line). Images JPEG or PNG; labels 8-bit
PNGs of class ids (mode L, or P read as indices); `ignore` (default 255) is the
"not labelled" value, `remap` maps other ids to 0..K-1. Every file is checked,
and any problem named on one line, before the layout is written.

The output is written to a temporary folder and renamed
into place only when complete: a bad file stops with its name and value, and
leaves the previous version, if any, untouched."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", help="dataset: embedded | ade20k | pascal_context | coco_stuff | a name of data.folders"
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets.prepare import prepare_dataset

    prepare_dataset(require_params(args), args.name)
    return 0
