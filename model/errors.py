"""The model package's one exception type: a checkpoint or configuration the user can fix.

`model/` depends on torch and timm only, so it does not share the pipeline's error class;
the command line maps both to the same one-line `error: ...` message and exit code.
"""

from __future__ import annotations


class ModelError(Exception):
    """A bad checkpoint file or model configuration; the message is one line naming the problem."""

    exit_code = 2


class ModelConfigError(ModelError, ValueError):
    """A ModelConfig value the network does not support (also a ValueError, as bad values are)."""
