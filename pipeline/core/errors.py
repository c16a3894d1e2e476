"""The pipeline's exception type for user-facing failures, and the set the CLI maps to one line.

An MMAError (or the model package's ModelError) is a failure the user can fix: a bad path, a
bad file, a mismatched config. The CLI turns those into a one-line `error: ...` message and a
non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from model.errors import ModelError


class MMAError(Exception):
    """A failure the user can fix (bad path, bad file, mismatched config); message is one line."""

    exit_code = 2


USER_ERRORS: tuple[type[Exception], ...] = (MMAError, ModelError)


class ConfigError(MMAError, ValueError):
    """A bad configuration value, key or file (also a ValueError, as bad values are)."""


class IncompleteResultError(MMAError):
    """A number would cover less data than it claims (an evaluation missing test clips, a stage
    that could not finish every item): refused, exit status 1."""

    exit_code = 1
