"""`grar weights`: fetch and list the backbones' ImageNet weight files (weights.files)."""

from __future__ import annotations

import argparse

from pipeline.cli.main import require_params

HELP = "fetch (resumable, verified) or list the ImageNet weight files the configured backbones load"
DESCRIPTION = """\
The backbones' published ImageNet weights are declared once, in params.yaml,
one file per backbone and stem (model.backbone, model.stem):

  weights.files.resnet50       resnet50, standard   torchvision IMAGENET1K_V1 (resnet50-0676ba61.pth)
  weights.files.resnet101      resnet101, standard  torchvision IMAGENET1K_V1 (resnet101-63fe2227.pth)
  weights.files.resnet50s      resnet50, deep       PyTorch-Encoding resnet50s (resnet50s-a75c83cf.pth)
  weights.files.resnet101s     resnet101, deep      PyTorch-Encoding resnet101s (resnet101s-03a0f310.pth)
  weights.files.resnet50_v1c   resnet50, deep_v1c   mmsegmentation resnet50_v1c (resnet50_v1c-2cccc1ad.pth)
  weights.files.resnet101_v1c  resnet101, deep_v1c  mmsegmentation resnet101_v1c (resnet101_v1c-e67eebb6.pth)
  weights.files.resnest101     resnest101           the file timm's resnest101e loads (resnest101-22405ba7.pth)

and model.pretrained: imagenet loads the file of the run's backbone and stem
(null: random initialisation; any other value: the path of a weight file of yours).

  fetch [NAME...]  download every file that the base config and the cells of
                   grid.grids load (what the DVC stage `weights` runs), or the
                   files NAME (keys of weights.files); nothing when
                   model.pretrained is null everywhere. Resumable (HTTP Range),
                   verified: the SHA-256 prefix published in the file name is
                   checked, then the full digest is recorded in <file>.sha256
                   (trust on first use) and checked at every later call;
                   PyTorch-Encoding's files come in a zip, and the .pth in it is
                   checked against its published full SHA-1. A file at the
                   expected path that does not match is named and never replaced.
  list             each file, its source and URL, and whether it is present

Offline clusters: weights.mirror replaces the official hosts, keeping the file
name: a folder (--set weights.mirror=/shared/weights), file:///... or https://...;
or copy the files into weights.root yourself (they are verified the same way)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("fetch", "list"), help="what to do (see above)")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="files of weights.files to fetch (default: what the params load)"
    )
    parser.add_argument("--force", action="store_true", help="download again even if present and verified")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.download import tofu_record
    from pipeline.errors import ConfigError
    from pipeline.weights import PUBLISHED, SOURCES, fetch_weights, needed_files, served_url

    params = require_params(args)
    if args.action == "fetch":
        for path in fetch_weights(params, tuple(args.names), force=args.force):
            print(f"ready: {path}")
        return 0
    if args.names or args.force:
        raise ConfigError("grar weights list takes no NAME or --force")
    users = {}
    for item in needed_files(params):
        users.setdefault(item.path, item.where)
    width = max(len(name) for name in (*params.weights.files, "(yours)"))
    for name, file in params.weights.files.items():
        path, archive = Path(file), PUBLISHED[name]
        mine = path.name != archive.filename  # declared under another name: a file of yours (pipeline.weights)
        if not path.is_file():
            state = "missing"
        elif mine:
            state = "present, a file of yours (not verified)"
        elif not archive.trusted_on_first_use:
            state = f"present (checked against the published {archive.algorithm} at every fetch)"
        elif tofu_record(path).exists():
            state = "present, verified (sha256 recorded)"
        else:
            state = "present, not verified yet"
        needed = f"needed by {users[path]}" if path in users else "not needed by these params"
        origin = (
            f"yours, in place of {archive.filename}"
            if mine
            else f"{SOURCES[name]}, from {served_url(archive, params.weights)}"
        )
        print(f"{name:<{width}} {path}  {state}; {needed}\n{'':<{width}} {origin}")
    for path, where in users.items():
        if path not in {Path(file) for file in params.weights.files.values()}:
            print(f"{'(yours)':<{width}} {path}  {'present' if path.is_file() else 'missing'}; needed by {where}")
    return 0
