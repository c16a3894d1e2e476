"""What a stage returns: a small frozen dataclass with the numbers a caller reads, its text, and an exit status.

Every stage function (`run_prep`, `run_shard`, `run_cache`, `train_fold`, `evaluate_checkpoint`,
`make_report`, `predict_videos`, `fetch_all`, the sweep actions, ...) returns a `StageResult`
subclass. The same object serves a Python caller (typed fields), the terminal (`text()`), a
script (`to_json()`, what `--json` prints) and the shell (`exit_code`, with `errors` printed as
`error: ...` lines). The CLI has one helper that prints a result and exits with its status.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclass(frozen=True)
class StageResult:
    """Base of every stage's result. Subclasses add their fields and override `text` where plain JSON
    is not what a person wants to read."""

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data (what `--json` prints): every field, paths as strings."""
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def text(self) -> str:
        """What the terminal shows (by default the JSON, indented)."""
        return json.dumps(self.to_json(), indent=2, default=str)

    @property
    def errors(self) -> tuple[str, ...]:
        """One line per reason the stage could not do all of its job (printed on stderr as `error: ...`)."""
        return ()

    @property
    def exit_code(self) -> int:
        """0 when the stage did its job; 1 when it refused or could not finish (see `errors`)."""
        return 1 if self.errors else 0


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_json() if isinstance(value, StageResult) else _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def render(renderable: Any, width: int = 120) -> str:
    """A rich renderable (a Table) as plain text, for a result's `text()`."""
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(renderable)
    return buf.getvalue().rstrip("\n")
