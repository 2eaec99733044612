"""`grar config`: print the resolved, validated configuration."""

from __future__ import annotations

import argparse
import sys

import yaml

from pipeline.cli.main import require_params
from pipeline.errors import ConfigError

HELP = "print the resolved, validated parameters (exit 2 naming the key if invalid)"
DESCRIPTION = """\
Validate params.yaml (plus any --set overrides) and print the result as YAML.
Check this before `dvc repro` or a cluster submission: an unknown key, a wrong
type or an out-of-range value exits with code 2 and names the key path and the
allowed values."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--section", metavar="NAME", help="print only this top-level section (e.g. train)")


def run(args: argparse.Namespace) -> int:
    resolved = require_params(args).model_dump(mode="json")
    if args.section:
        if args.section not in resolved:
            raise ConfigError(f"--section {args.section}: no such section; allowed: {', '.join(resolved)}")
        resolved = {args.section: resolved[args.section]}
    sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None))
    return 0
