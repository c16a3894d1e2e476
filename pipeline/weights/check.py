"""`mma weights check FILE`: what a checkpoint file is, and whether it fits the role and geometry asked for.

The description comes from `model.inspect` (kind, ViT geometry, MAE leftovers). With `as_`
(vision | audio | mma | authors) the file must be that kind, with the preset's encoder
geometry where it holds encoders; without it, an encoder or an authors' model must have the
preset's geometry and a file of no known kind is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.inspect import AS_KINDS, CheckpointInfo, Expected, inspect_checkpoint, require
from pipeline.core.config import check_choice, preset
from pipeline.core.results import StageResult

# `--as` -> the flag a stage takes that kind of file with (named in the one-line errors).
AS_FLAGS = {"vision": "--vision-ckpt", "audio": "--audio-ckpt", "mma": "--checkpoint",
            "authors": "--checkpoint --official"}


def expected_geometry(preset_name: str) -> Expected:
    """The encoder geometry a preset's runs need (paper: ViT-B/16; tiny: the small test ViT)."""
    return Expected.from_model_config(preset(preset_name).model)


@dataclass(frozen=True)
class CheckFileResult(StageResult):
    """What a file is (`info`) and, when it does not fit, why (`problem`, one line; exit status 2)."""

    info: CheckpointInfo
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "problem": self.problem}

    def text(self) -> str:
        return self.info.describe() + ("" if self.problem else "\nok")

    @property
    def errors(self) -> tuple[str, ...]:
        return (self.problem,) if self.problem else ()

    @property
    def exit_code(self) -> int:
        return 2 if self.problem else 0


def check_weights_file(file: str | Path, *, as_: str | None = None, preset_name: str = "paper") -> CheckFileResult:
    """Inspect `file`; with `as_`, require that kind (see the module docstring)."""
    expected = expected_geometry(preset_name)
    info = inspect_checkpoint(file, audio_mel_bins=expected.audio_mel_bins)
    needs = f"--preset {preset_name}"
    try:
        if as_ is not None:
            check_choice("--as", as_, tuple(AS_KINDS))
            require(AS_KINDS[as_], info, AS_FLAGS[as_], None if as_ == "mma" else expected, needs=needs)
        elif info.kind == "unknown":
            raise ModelError(f"{file}: {info.short()}")
        elif info.kind in ("vision-encoder", "audio-encoder", "authors-trained"):
            require(info.kind, info, "", expected, needs=needs)
    except ModelError as exc:
        return CheckFileResult(info, str(exc).splitlines()[0])
    return CheckFileResult(info)

