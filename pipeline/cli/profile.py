"""`grar profile`: list the parameter profiles or make one (plus override files) the active params.yaml."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DEFAULT_PARAMS, load_params, validate
from pipeline.errors import ConfigError
from pipeline.io import write_text_atomic
from pipeline.safe_yaml import read_yaml

HELP = "list profiles (embedded, paper) or switch params.yaml to one"
DESCRIPTION = """\
Profiles are complete parameter files in profiles/: `embedded` (the default:
synthetic data, tiny backbone, CPU, minutes) and `paper` (real datasets,
ResNet-101, 544 crops, batch 16, SLURM). `grar profile use NAME` validates the
profile and copies it over params.yaml; a params.yaml with edits of its own is
kept unless --force is given.

`--with FILE` (repeatable) lays override files over the profile: each is a
nested mapping of params (any subset of sections and keys), merged key by key
into the profile (a mapping merges into a mapping; any other value, a list
included, replaces the profile's). profiles/overrides/smoke.yaml, for
instance, shrinks the paper profile to a minutes-long check of the whole
pipeline on CPU nodes. The result is validated and written to params.yaml with a
first line naming the profile and the files, so that `grar profile list` and a
later `grar profile use` recognise it (an override file edited since counts as
an edit of params.yaml)."""

PROFILES_DIR = Path("profiles")
NO_PARAMS = True  # must work even when params.yaml is broken: it is how one resets it
HEADER = "# grar profile "  # first line of a composed params.yaml: "# grar profile NAME with FILE, FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the profiles and mark the active one")
    use = actions.add_parser("use", help="validate profile NAME (with override files) and write it to params.yaml")
    use.add_argument("name", help="profile name (a file profiles/NAME.yaml)")
    use.add_argument(
        "--with",
        dest="overrides",
        metavar="FILE",
        type=Path,
        action="append",
        default=[],
        help="a YAML file of params laid over the profile, key by key (repeatable, applied in order)",
    )
    use.add_argument("--force", action="store_true", help="overwrite a params.yaml that matches no profile")


def available() -> dict[str, Path]:
    """Profile name -> file, from ``profiles/*.yaml``."""
    return {path.stem: path for path in sorted(PROFILES_DIR.glob("*.yaml"))}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it: mappings merge key by key, every other value replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def compose(profile: Path, overrides: list[Path]) -> str:
    """The text of params.yaml for ``profile`` with ``overrides``: the profile's own text when there are none."""
    if not overrides:
        text = profile.read_text(encoding="utf-8")
        load_params(profile)  # validate before anyone writes it
        return text
    raw = read_yaml(profile)
    for path in overrides:
        raw = merge(raw, read_yaml(path))
    names = ", ".join(str(path) for path in overrides)
    validate(raw, source=f"{profile} with {names}")
    body = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)
    return (
        f"{HEADER}{profile.stem} with {names}\n"
        f"# Written by `grar profile use {profile.stem} {' '.join(f'--with {p}' for p in overrides)}`: "
        f"{profile} with those files laid over it.\n{body}"
    )


def composed_from(text: str, profiles: dict[str, Path]) -> str | None:
    """The ``NAME with FILES`` a composed params.yaml ``text`` still equals, else ``None`` (edited since)."""
    first = text.partition("\n")[0]
    if not first.startswith(HEADER) or " with " not in first:
        return None
    name, _, files = first[len(HEADER) :].partition(" with ")
    overrides = [Path(item) for item in files.split(", ")]
    if name not in profiles or not all(path.is_file() for path in overrides):
        return None
    try:
        return first[len(HEADER) :] if compose(profiles[name], overrides) == text else None
    except ConfigError:
        return None


def matching(text: str | None, profiles: dict[str, Path]) -> str | None:
    """What params.yaml ``text`` is: a profile's name, ``NAME with FILES``, or ``None`` (own edits)."""
    if text is None:
        return None
    for name, path in profiles.items():
        if text == path.read_text(encoding="utf-8"):
            return name
    return composed_from(text, profiles)


def run(args: argparse.Namespace) -> int:
    profiles = available()
    if not profiles:
        raise ConfigError(f"no profiles found in {PROFILES_DIR.resolve()}: run from the project root")
    params_path = args.params or DEFAULT_PARAMS
    current = params_path.read_text(encoding="utf-8") if params_path.exists() else None
    active = matching(current, profiles)
    if args.action == "list":
        for name, path in profiles.items():
            mark = "*" if active is not None and active.split(" with ")[0] == name else " "
            extra = f"  (with {active.partition(' with ')[2]})" if mark == "*" and " with " in active else ""
            print(f"{mark} {name:10s} {path}{extra}")
        if current is not None and active is None:
            print(f"  ({params_path} has edits of its own and matches no profile)")
        return 0
    if args.name not in profiles:
        raise ConfigError(f"profile {args.name!r} not found; allowed: {', '.join(profiles)}")
    for path in args.overrides:
        if not path.is_file():
            raise ConfigError(f"--with {path}: file not found")
    text = compose(profiles[args.name], args.overrides)  # validated before params.yaml is touched
    if current is not None and active is None and not args.force:
        raise ConfigError(
            f"{params_path} has edits that match no profile; save them (e.g. as profiles/mine.yaml) "
            f"or pass --force to overwrite"
        )
    write_text_atomic(params_path, text)
    what = f"profile {args.name!r}" + (f" with {', '.join(map(str, args.overrides))}" if args.overrides else "")
    print(f"{params_path} is now {what} ({profiles[args.name]}); check it with `grar config`")
    return 0
