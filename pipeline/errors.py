"""Errors a user can act on.

Every failure caused by input (a params key, a label file, an archive) raises a
``GrarError`` whose message names the offending file, key or value. The CLI and
the DVC stages turn it into one line on stderr and a non-zero exit code, never a
traceback (see ``pipeline.cli.run_guarded``).
"""


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
