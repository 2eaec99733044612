"""Errors a user can act on, and how they are shown.

Every failure caused by input (a params key, a label file, an archive) raises a
``GrarError`` whose message names the offending file, key or value. The CLI and
the DVC stages run their work through ``run_guarded``, which turns it (and any
``OSError``: a full disk, a permission) into one line on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class GrarError(Exception):
    """An error caused by the user's input; ``exit_code`` is what the process returns."""

    exit_code = 1
    multiline = False  # a summary listing several items (one per line); otherwise shown on one line


class ConfigError(GrarError):
    """Invalid configuration: unknown key, wrong type or out-of-range value."""

    exit_code = 2


class DataError(GrarError):
    """Invalid data on disk: unreadable file, bad label value, size mismatch."""

    exit_code = 1


class ClusterError(GrarError):
    """The local SLURM test cluster cannot start, or a SLURM command failed; names the log to read."""

    exit_code = 1


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
