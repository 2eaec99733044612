"""`grar profile`: list the parameter profiles or make one the active params.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from pipeline.errors import ConfigError
from pipeline.io import write_text_atomic

HELP = "list profiles (embedded, paper) or switch params.yaml to one"
DESCRIPTION = """\
Profiles are complete parameter files in profiles/: `embedded` (the default:
synthetic data, tiny backbone, CPU, minutes) and `paper` (real datasets,
ResNet-101, 544 crops, batch 16, SLURM). `grar profile use NAME` validates the
profile and copies it over params.yaml; a params.yaml with edits of its own is
kept unless --force is given."""

PROFILES_DIR = Path("profiles")
NO_PARAMS = True  # must work even when params.yaml is broken: it is how one resets it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the profiles and mark the active one")
    use = actions.add_parser("use", help="validate profile NAME and copy it to params.yaml")
    use.add_argument("name", help="profile name (a file profiles/NAME.yaml)")
    use.add_argument("--force", action="store_true", help="overwrite a params.yaml that matches no profile")


def available() -> dict[str, Path]:
    """Profile name -> file, from ``profiles/*.yaml``."""
    return {path.stem: path for path in sorted(PROFILES_DIR.glob("*.yaml"))}


def run(args: argparse.Namespace) -> int:
    profiles = available()
    if not profiles:
        raise ConfigError(f"no profiles found in {PROFILES_DIR.resolve()}: run from the project root")
    params_path = args.params or DEFAULT_PARAMS
    current = params_path.read_text(encoding="utf-8") if params_path.exists() else None
    if args.action == "list":
        for name, path in profiles.items():
            mark = "*" if current == path.read_text(encoding="utf-8") else " "
            print(f"{mark} {name:10s} {path}")
        if current is not None and not any(current == p.read_text(encoding="utf-8") for p in profiles.values()):
            print(f"  ({params_path} has edits of its own and matches no profile)")
        return 0
    if args.name not in profiles:
        raise ConfigError(f"profile {args.name!r} not found; allowed: {', '.join(profiles)}")
    source = profiles[args.name]
    load_params(source)  # validate before touching params.yaml
    text = source.read_text(encoding="utf-8")
    edited = current is not None and not any(current == p.read_text(encoding="utf-8") for p in profiles.values())
    if edited and not args.force:
        raise ConfigError(
            f"{params_path} has edits that match no profile; save them (e.g. as profiles/mine.yaml) "
            f"or pass --force to overwrite"
        )
    write_text_atomic(params_path, text)
    print(f"{params_path} is now profile {args.name!r} ({source}); check it with `grar config`")
    return 0
