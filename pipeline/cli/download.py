"""`grar download NAME`: fetch, verify and safely extract a real dataset's archives."""

from __future__ import annotations

import argparse

from pipeline.cli.main import require_params

HELP = "download a real dataset's archives (resumable, checksum-verified), then extract them safely"
DESCRIPTION = """\
Fetch the archives of dataset NAME (ade20k, pascal_context, coco_stuff) into
<data.downloads>/NAME/, verify each checksum before use, and extract the zip /
tar archives next to them. The embedded dataset is generated: it has no download.

  resumable    an interrupted transfer continues where it stopped (HTTP Range)
  verified     a corrupt file is deleted and reported with expected/actual checksums
  idempotent   a verified archive is not fetched again, nor re-extracted
  mirror       data.mirror (https://..., file:///...) replaces the official host;
               the file name is kept: --set data.mirror=file:///shared/datasets
  local copy   data.local.NAME: PATH names a folder already holding the dataset
               as the official archive unpacks (ade20k: ADEChallengeData2016/;
               pascal_context: VOCdevkit/VOC2010/ and trainval_merged.json;
               coco_stuff: images/, annotations/, imageLists/): nothing is
               fetched, the layout is checked, prepare reads it in place
  safe         an archive with an absolute path, '..' or a link out is refused whole

COCO-Stuff-10k publishes no checksum: the first download records its SHA-256 in
cocostuff-10k-v1.1.zip.sha256 beside the archive (trust on first use), and every
later run verifies against it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="dataset: ade20k | pascal_context | coco_stuff")
    parser.add_argument("--force", action="store_true", help="download and extract again even if verified")


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets.download import download_dataset

    for path in download_dataset(require_params(args), args.name, force=args.force):
        print(f"ready: {path}")
    return 0
