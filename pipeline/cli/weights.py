"""`grar weights`: fetch and list the backbones' ImageNet weight files (weights.files)."""

from __future__ import annotations

import argparse

from pipeline.cli.main import require_params

HELP = "fetch (resumable, verified) or list the ImageNet weight files the configured backbones load"
DESCRIPTION = """\
The backbones' published ImageNet weights are declared once, in params.yaml:

  weights.files.resnet50    torchvision's ResNet-50  IMAGENET1K_V1 (resnet50-0676ba61.pth)
  weights.files.resnet101   torchvision's ResNet-101 IMAGENET1K_V1 (resnet101-63fe2227.pth)
  weights.files.resnest101  ResNeSt-101, the file timm's resnest101e loads (resnest101-22405ba7.pth)

and model.pretrained: imagenet loads the file of the run's backbone (null: random
initialisation; any other value: the path of a weight file of yours).

  fetch [NAME...]  download every file that the base config and the cells of
                   grid.grids load (what the DVC stage `weights` runs), or the
                   files of backbones NAME; nothing when model.pretrained is
                   null everywhere. Resumable (HTTP Range), verified: the SHA-256
                   prefix published in the file name is checked, then the full
                   digest is recorded in <file>.sha256 (trust on first use) and
                   checked at every later call. A file at the expected path that
                   does not match is named and never replaced.
  list             each backbone's file, its source, and whether it is present

Offline clusters: weights.mirror replaces the official hosts, keeping the file
name: a folder (--set weights.mirror=/shared/weights), file:///... or https://...;
or copy the files into weights.root yourself (they are verified the same way)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("fetch", "list"), help="what to do (see above)")
    parser.add_argument("names", nargs="*", metavar="NAME", help="backbones to fetch (default: what the params load)")
    parser.add_argument("--force", action="store_true", help="download again even if present and verified")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.download import resolve_url, tofu_record
    from pipeline.errors import ConfigError
    from pipeline.weights import PUBLISHED, fetch_weights, needed_files

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
    for name, file in params.weights.files.items():
        path, archive = Path(file), PUBLISHED[name]
        url = resolve_url(archive, params.weights.mirror, key="weights.mirror", local_folders=True)
        state = (
            ("present, verified (sha256 recorded)" if tofu_record(path).exists() else "present, not verified yet")
            if path.is_file()
            else "missing"
        )
        needed = f"needed by {users[path]}" if path in users else "not needed by these params"
        print(f"{name:<11} {path}  {state}; {needed}\n            from {url}")
    for path, where in users.items():
        if path not in {Path(file) for file in params.weights.files.values()}:
            print(f"{'(yours)':<11} {path}  {'present' if path.is_file() else 'missing'}; needed by {where}")
    return 0
