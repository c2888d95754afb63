"""Errors that users see: one line naming the problem and the fix.

Every error raised on bad input (config, task, language, file, checkpoint) derives from
``FastXLTError`` so that the command line can print it as a single line without a traceback.
"""

from __future__ import annotations


class FastXLTError(Exception):
    """Base class for errors caused by the user's input; printed as one line by the CLI."""


class ConfigError(FastXLTError):
    """A config file is malformed or holds an invalid value."""


class UnknownTaskError(FastXLTError):
    """A task name is not in the registry."""


class UnknownLanguageError(FastXLTError):
    """A language is not available for a task."""


class DataNotFoundError(FastXLTError):
    """A data file is missing or unreadable."""


class CorruptDataError(FastXLTError):
    """A data file exists but does not have the expected layout."""


class CheckpointError(FastXLTError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file would need arbitrary pickled objects to load; refused, since loading could run code."""


class RunLockedError(FastXLTError):
    """Another live process holds the directory lock (a run directory, an evaluation output, a phase)."""
