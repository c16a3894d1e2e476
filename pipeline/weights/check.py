"""What a checkpoint file is, and whether it fits the encoder architecture it is given for.

The description comes from `model.inspect` (kind, ViT geometry of any supported family, MAE
leftovers). The geometry an encoder *needs* comes from the timm architecture it is named by
(`model.vision_encoder` / `model.audio_encoder`) under the run's config
(`model.inspect.Expected.from_model_config`, read from the timm model): a file whose width,
depth, patch size or prefix tokens differ from it is refused before any work starts, in one
line naming the file, what it holds and the architecture (`check_encoder_file`, which
`pipeline.weights.resolve` calls for every stage). A file in a layout the loader does not read
(safetensors, OpenAI's CLIP names) is described, and for a stage refused with the
`mma weights add` command that installs it converted.

`mma weights check FILE` (`check_weights_file`): with `as_` (vision | audio | mma | authors)
the file must be that kind, with the geometry of the preset's encoder of that role (or of
`encoder`, a timm name); without it, an encoder or an authors' model must have the preset's
geometry and a file of no known kind is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import ModelConfig
from model.errors import ModelError
from model.inspect import AS_KINDS, CheckpointInfo, Expected, inspect_checkpoint, require
from pipeline.core.config import check_choice, preset
from pipeline.core.errors import ConfigError, MMAError
from pipeline.core.results import StageResult
from pipeline.weights.convert import encoder_tensors
from pipeline.weights.registry import weight_spec, weights_for_encoder

# `--as` -> the flag a stage takes that kind of file with (named in the one-line errors).
AS_FLAGS = {"vision": "--vision-ckpt", "audio": "--audio-ckpt", "mma": "--checkpoint",
            "authors": "--checkpoint --official"}
ROLE_OF_KIND = {"vision-encoder": "vision", "audio-encoder": "audio"}


def expected_geometry(preset_name: str = "paper", *, which: str = "vision", encoder: str | None = None) -> Expected:
    """The encoder geometry a preset's runs need (with the timm name `encoder` as its `which` encoder)."""
    model_cfg = preset(preset_name).model
    if encoder is not None:
        model_cfg = dataclasses.replace(model_cfg, **{f"{which}_encoder": encoder})
    return Expected.from_model_config(model_cfg)


def expected_for_weights(name: str, preset_name: str = "paper") -> Expected:
    """The geometry checkpoint `name` of `mma weights list` must have: its encoder's architecture under the
    preset's geometry overrides (the preset's own encoders for MAE-Face, AudioMAE and the authors' models)."""
    spec = weight_spec(name)
    if spec.role is None or not spec.encoders:
        return expected_geometry(preset_name)
    return expected_geometry(preset_name, which=spec.role, encoder=spec.encoders[0])


def check_encoder_file(path: str | Path, which: str, model_cfg: ModelConfig, flag: str) -> CheckpointInfo:
    """ModelError / MMAError (one line naming `path` and the architecture) unless `path` is a `which`
    encoder that `model_cfg`'s `which` encoder can load as it is."""
    path = Path(path)
    name = getattr(model_cfg, f"{which}_encoder")
    expected = Expected.from_model_config(model_cfg)
    obj, conversion = encoder_tensors(path)
    info = inspect_checkpoint(obj, path=path, audio_mel_bins=expected.audio_mel_bins)
    require(f"{which}-encoder", info, flag, expected, needs=f"model.{which}_encoder={name}")
    if conversion:
        spec = weights_for_encoder(name, which)
        raise MMAError(f"{path}: stored as {conversion.split(' -> ')[0]}, which {flag} cannot load; "
                       f"`mma weights add {spec.name if spec else 'NAME'} {path}` installs it converted")
    return info


@dataclass(frozen=True)
class CheckFileResult(StageResult):
    """What a file is (`info`) and, when it does not fit, why (`problem`, one line; exit status 2)."""

    info: CheckpointInfo
    problem: str | None = None
    conversion: str | None = None  # what installing it would convert (safetensors, OpenAI CLIP names)

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_dict(), "problem": self.problem, "conversion": self.conversion}

    def text(self) -> str:
        note = f"\n  note: installed converted by `mma weights add` ({self.conversion})" if self.conversion else ""
        return self.info.describe() + note + ("" if self.problem else "\nok")

    @property
    def errors(self) -> tuple[str, ...]:
        return (self.problem,) if self.problem else ()

    @property
    def exit_code(self) -> int:
        return 2 if self.problem else 0


def check_weights_file(file: str | Path, *, as_: str | None = None, preset_name: str = "paper",
                       encoder: str | None = None) -> CheckFileResult:
    """Inspect `file`; with `as_`, require that kind (see the module docstring); `encoder` names the
    timm architecture an encoder file must fit (default: the preset's encoder of its role)."""
    if as_ is not None:
        check_choice("--as", as_, tuple(AS_KINDS))
    obj, conversion = encoder_tensors(file)
    role = as_ if as_ in ("vision", "audio") else None
    info = inspect_checkpoint(obj, path=Path(file), audio_mel_bins=preset(preset_name).model.audio_mel_bins)
    role = role or ROLE_OF_KIND.get(info.kind)
    if encoder and role is None:
        raise ConfigError(f"--encoder {encoder}: {file} is {info.short()}, not an encoder file "
                          "(--encoder names the architecture a vision or audio encoder must fit)")
    needs = f"model.{role}_encoder={encoder}" if encoder and role else f"--preset {preset_name}"
    try:
        expected = expected_geometry(preset_name, which=role or "vision", encoder=encoder if role else None)
        if as_ is not None:
            require(AS_KINDS[as_], info, AS_FLAGS[as_], None if as_ == "mma" else expected, needs=needs)
        elif info.kind == "unknown":
            raise ModelError(f"{file}: {info.short()}")
        elif info.kind in ("vision-encoder", "audio-encoder", "authors-trained"):
            require(info.kind, info, "", expected, needs=needs)
    except ModelError as exc:
        return CheckFileResult(info, str(exc).splitlines()[0], conversion)
    return CheckFileResult(info, None, conversion)
