"""Errors that reach the user as one line.

Every user-facing failure raises a subclass of :class:`HFCompressError`. The CLI
prints ``error: <message>`` (one line, no traceback unless ``--debug``) and exits
with :attr:`HFCompressError.exit_code`. Messages name the problem and, where there
is one, the fix::

    raise UsageError("sparsity must be in [0, 1), got 1.5: pass e.g. --sparsity 0.5")
"""

from __future__ import annotations


class HFCompressError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is one line."""

    exit_code = 1

    def __init__(self, message: str):
        # Collapse to one line: the CLI contract is a single line per error.
        super().__init__(" ".join(str(message).split()))


class UsageError(HFCompressError):
    """Bad arguments, options or recipe content (exit code 2, like argparse)."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe that does not validate; the message names the key and its line."""


class ModelLoadError(HFCompressError):
    """The model cannot be found or loaded (unknown repo, not a model folder, ...)."""


class UnsupportedError(HFCompressError):
    """A method or feature does not support this architecture / environment."""


class NotImplementedStageError(UnsupportedError):
    """A recipe names a stage family or method that has no implementation yet."""


class OutputError(HFCompressError):
    """The output folder cannot be written (exists, inside the input, disk full, ...)."""


class HubError(HFCompressError):
    """A Hub operation failed (auth, missing repo/revision, repeated transient faults)."""
