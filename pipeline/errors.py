"""Errors a user can act on, and how they are shown.

Every failure caused by input (a params key, a label file, an archive) raises a
``GrarError`` whose message names the offending file, key or value. The CLI and
the DVC stages run their work through ``run_guarded``, which turns it (and any
``OSError``: a full disk, a permission) into one line on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
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
    escape_unencodable_output()
    try:
        code = fn()
        sys.stdout.flush()  # a reader that went away shows here, not as a warning at exit
    except GrarError as err:
        print(f"{prog}: error: {str(err) if err.multiline else one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # the reader went away (`grar ... | head`): stop quietly with SIGPIPE's status, like other Unix tools;
        # stdout goes to /dev/null so that the interpreter's last flush finds no broken pipe either
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # disk full, permission denied, read-only file system, a folder for a file...
        print(f"{prog}: error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def describe_os_error(err: OSError) -> str:
    """One line naming the file(s) and what the system said, e.g. ``out/x.json: No space left on device``."""
    names = [str(name) for name in (err.filename, err.filename2) if name is not None]
    reason = err.strerror or str(err) or type(err).__name__
    return one_line(f"{' -> '.join(names)}: {reason}" if names else reason)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters shown escaped, not printed; the bytes of
    a file name that is not UTF-8 as ``\\xNN`` (``escaped``)."""
    text = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in escaped(text))
    return REPR_SURROGATE.sub(r"\\x\1", text)  # a name that a library's message shows as repr(): '\udce9'


REPR_SURROGATE = re.compile(r"\\udc([89a-f][0-9a-f])")


def escaped(text: str) -> str:
    """``text`` with each byte of a file name that is not UTF-8 shown as ``\\xNN``: Python decodes such a byte
    to a lone surrogate U+DC80..U+DCFF (``os.fsdecode``), which no UTF-8 output can hold."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return "".join(f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else ch for ch in text)


def _escape_unencodable(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler ``grar-escape``: what an output cannot encode, escaped (``escaped``, else ``\\uXXXX``)."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start : err.end]
    return "".join(
        escaped(ch) if escaped(ch) != ch else ch.encode("ascii", "backslashreplace").decode() for ch in text
    ), err.end


codecs.register_error("grar-escape", _escape_unencodable)


def escape_unencodable_output() -> None:
    """Make stdout and stderr print a name that is not UTF-8 escaped (``\\xe9``) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="grar-escape")
