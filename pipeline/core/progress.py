"""The one progress bar every stage shows: rich, on stderr, with items/s and ETA columns."""

from __future__ import annotations

from typing import Any


def progress_bar(description: str, total: int, unit: str = "clips") -> Any:
    """A rich Progress with rate (items/s) and ETA columns, transient off so the last state stays."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task: Any) -> Any:  # noqa: D401 - rich API
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(""),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
