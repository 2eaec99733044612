"""The ``grar`` command: one subcommand per module of ``pipeline.cli``.

Every subcommand accepts ``--params FILE`` (default ``params.yaml``) and any
number of ``--set KEY=VALUE`` overrides. When the params file exists (or is named
explicitly) it is validated before the command does any work, so a typo stops
every command with exit code 2 and one line naming the key. Errors caused by
input print one ``grar: error: ...`` line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from pipeline import __version__
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.errors import ConfigError, run_guarded

# Subcommand name -> module. A module defines HELP (one line), DESCRIPTION,
# add_arguments(parser) and run(args) -> int | None. Heavy imports (torch)
# belong inside run(), so `grar --help` stays fast.
COMMANDS: dict[str, str] = {
    "config": "pipeline.cli.config",
    "bench": "pipeline.cli.bench",
    "download": "pipeline.cli.download",
    "weights": "pipeline.cli.weights",
    "prepare": "pipeline.cli.prepare",
    "evaluate": "pipeline.cli.evaluate",
    "predict": "pipeline.cli.predict",
    "profile": "pipeline.cli.profile",
    "stats": "pipeline.cli.stats",
    "cluster": "pipeline.cli.cluster",
    "train": "pipeline.cli.train",
    "grid": "pipeline.cli.grid",
    "report": "pipeline.cli.report",
}

EPILOG = """\
typical session:
  grar config                      check the resolved, validated parameters
  grar profile use paper           switch params.yaml to the full paper setup
  dvc repro                        rebuild everything (or: make repro)

every subcommand takes --params FILE and --set KEY=VALUE (repeatable), e.g.
  grar config --set train.crop_size=512 --set model.head=fcn
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one subparser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="grar",
        description="Scene parsing with GRAr (ICCV 2021): class-affinity statistics, "
        "the GRAr model, training grids on SLURM, and reports reproducing Tables 1-6.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"grar {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"parameters file (default: {DEFAULT_PARAMS})",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set model.head=fcn (repeatable; validated like params.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            parents=[common],
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def resolve_params(args: argparse.Namespace) -> Params | None:
    """Validated params when a params file exists or was named; ``None`` when there is none."""
    path = args.params if args.params is not None else DEFAULT_PARAMS
    if args.params is None and not path.exists():
        if args.overrides:
            raise ConfigError(f"--set given but {path} does not exist (use --params FILE)")
        return None
    return load_params(path, tuple(args.overrides))


def require_params(args: argparse.Namespace) -> Params:
    """The validated params, or a clear error when this command needs a params file and has none."""
    if args.resolved_params is None:
        raise ConfigError(
            f"{DEFAULT_PARAMS} not found in {Path.cwd()}: run from the project root or pass --params FILE"
        )
    return args.resolved_params


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grar`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module: ModuleType = args.module

    def run() -> int | None:
        args.resolved_params = None if getattr(module, "NO_PARAMS", False) else resolve_params(args)
        return module.run(args)

    return run_guarded(run, prog="grar")


if __name__ == "__main__":
    sys.exit(main())
