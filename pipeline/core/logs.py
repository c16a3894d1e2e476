"""Logging set-up for the CLI: rich handler on stderr, one format for every stage."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.INFO) -> None:
    """Route library logging through rich (idempotent: safe to call from every command)."""
    from rich.console import Console
    from rich.logging import RichHandler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mma", False):
            root.removeHandler(handler)
    # stderr: stdout stays clean for results (--json output of commands).
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False)
    handler._mma = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("distributed", "bokeh", "tornado", "matplotlib", "PIL", "fsspec", "numcodecs"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
