"""The ``grar`` command: one subcommand per module in ``pipeline/commands/``.

Every subcommand accepts ``--params FILE`` (default ``params.yaml``) and any
number of ``--set KEY=VALUE`` overrides. When the params file exists (or is named
explicitly) it is validated before the command does any work, so a typo stops
every command with exit code 2 and one line naming the key. Errors caused by
input print one ``grar: error: ...`` line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pipeline import __version__
from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.errors import ConfigError, GrarError

# Subcommand name -> module. A module defines HELP (one line), DESCRIPTION,
# add_arguments(parser) and run(args) -> int | None. Heavy imports (torch)
# belong inside run(), so `grar --help` stays fast.
COMMANDS: dict[str, str] = {
    "config": "pipeline.commands.config",
    "bench": "pipeline.commands.bench",
    "download": "pipeline.commands.download",
    "weights": "pipeline.commands.weights",
    "prepare": "pipeline.commands.prepare",
    "evaluate": "pipeline.commands.evaluate",
    "predict": "pipeline.commands.predict",
    "profile": "pipeline.commands.profile",
    "stats": "pipeline.commands.stats",
    "cluster": "pipeline.commands.cluster",
    "train": "pipeline.commands.train",
    "grid": "pipeline.commands.grid",
    "report": "pipeline.commands.report",
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
        "--params", type=Path, default=None, metavar="FILE",
        help=f"parameters file (default: {DEFAULT_PARAMS})",
    )
    common.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one parameter, e.g. --set model.head=fcn (repeatable; validated like params.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, parents=[common], help=module.HELP,
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
        raise ConfigError(f"{DEFAULT_PARAMS} not found in {Path.cwd()}: run from the project root or pass --params FILE")
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


def run_guarded(fn: Callable[[], int | None], prog: str) -> int:
    """Run ``fn``; a ``GrarError`` becomes one stderr line and its exit code."""
    try:
        code = fn()
    except GrarError as err:
        print(f"{prog}: error: {str(err) if err.multiline else one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # disk full, permission denied, read-only file system, a folder for a file...
        print(f"{prog}: error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`grar ... | head`): stop quietly, like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(code or 0)


def describe_os_error(err: OSError) -> str:
    """One line naming the file(s) and what the system said, e.g. ``out/x.json: No space left on device``."""
    names = [str(name) for name in (err.filename, err.filename2) if name is not None]
    reason = err.strerror or str(err) or type(err).__name__
    return one_line(f"{' -> '.join(names)}: {reason}" if names else reason)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters shown escaped, not printed."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


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


if __name__ == "__main__":
    sys.exit(main())
