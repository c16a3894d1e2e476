"""The one exception type that stages raise for user-facing failures.

The CLI turns an MMAError into a one-line `error: ...` message and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MMAError(Exception):
    """A failure the user can fix (bad path, bad file, mismatched config); message is one line."""

    exit_code = 2


class StageNotImplemented(MMAError):
    """A CLI stage whose implementation is missing from this installation."""

    exit_code = 3
