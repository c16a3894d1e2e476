"""A stage's configuration from everything the user said: the one resolution the CLI and Python callers share.

What a command line says about a run's config is a `ConfigRequest`: the preset, the stage's
`--config` file, `--set` overrides, explicit flags (as dotted keys), the global `--seed` and the
dataset named. `resolve_stage_config(request, project, workspace)` turns it into the validated
`RunConfig` the stage runs, applying, lowest first:

    preset function < project file (mma.yaml) < the stage's --config file < --set < explicit flags

and the derived rules: the global seed wins for `train.seed` over files and --set (a stage's own
`--seed` flag over both); `--prompt-introductions N` implies
`model.num_prompts = 3 N` (the authors' sizing) unless `--set model.num_prompts` says otherwise.
Which preset: `--preset`, else the `--config` file's, else the project file's, else `paper`. Which
dataset: named, else the `--config` file's, else the project file's, else the only one prepared
(`pipeline.core.project.resolve_dataset`).

`CONFIG_FLAGS` is the one table of command-line flags that set config fields: each entry names
the option, the dotted key it sets, its type and help. The CLI builds every stage's options from
it, so `mma cache`, `mma train`, `mma eval` and `mma model summary` spell a flag one way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import TOKENS_PER_INTRODUCTION
from pipeline.core.config import RunConfig, parse_override, resolve_config
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile, load_stage_config, resolve_dataset

DEFAULT_PRESET = "paper"


@dataclass(frozen=True)
class ConfigFlag:
    """A command-line flag that sets one config field (`key`, dotted; "" for a run field like vision_ckpt)."""

    param: str  # the Python parameter name, e.g. "image_size"
    option: str  # the option as typed, e.g. "--image-size" ("--compile/--no-compile" for a switch)
    key: str  # the dotted config key it sets, e.g. "model.image_size"
    type: type
    help: str


CONFIG_FLAGS: dict[str, ConfigFlag] = {f.param: f for f in (
    # model
    ConfigFlag("image_size", "--image-size", "model.image_size", int, "Face crop size S (112/160/224)."),
    ConfigFlag("latent_dim", "--latent-dim", "model.latent_dim", int, "Fusion bottleneck width d."),
    ConfigFlag("fusion", "--fusion", "model.fusion", str, "bottleneck | add | mult | mult-concat | none."),
    ConfigFlag("temporal", "--temporal", "model.temporal", str, "mtt | ita | both | none."),
    ConfigFlag("ita_dim", "--ita-dim", "model.ita_dim", int, "Width of intermediate temporal adaptors."),
    ConfigFlag("prompts", "--prompts", "model.prompts", str, "none | static | progressive."),
    ConfigFlag("prompt_introductions", "--prompt-introductions", "model.prompt_introductions", int,
               "Progressive prompts: times new prompts enter (3 tokens each, as the authors')."),
    ConfigFlag("modality", "--modality", "model.modality", str, "both | vision | audio."),
    ConfigFlag("vision_encoder", "--vision-encoder", "model.vision_encoder", str,
               "Face encoder, a timm name ARCH.TAG (default vit_base_patch16_224.mae_face: MAE-Face)."),
    ConfigFlag("audio_encoder", "--audio-encoder", "model.audio_encoder", str,
               "Spectrogram encoder, a timm name ARCH.TAG (default vit_base_patch16_224.audiomae_as2m: AudioMAE)."),
    # encoders
    ConfigFlag("vision_ckpt", "--vision-ckpt", "vision_ckpt", Path,
               "Face encoder checkpoint: a file ({'model': ...}) or a name from `mma weights list`."),
    ConfigFlag("audio_ckpt", "--audio-ckpt", "audio_ckpt", Path,
               "Spectrogram encoder checkpoint: a file ({'model': ...}) or a name from `mma weights list`."),
    # training
    ConfigFlag("epochs", "--epochs", "train.epochs", int, "Training epochs."),
    ConfigFlag("batch_size", "--batch-size", "train.batch_size", int, "Clips per optimisation step."),
    ConfigFlag("lr", "--lr", "train.lr", float, "AdamW learning rate."),
    ConfigFlag("source", "--from", "train.source", str, "shards | cache."),
    ConfigFlag("precision", "--precision", "train.precision", str,
               "auto (fp32 under data.compat=authors, else bf16 on GPU) | bf16 | fp32."),
    ConfigFlag("compile", "--compile/--no-compile", "train.compile", bool, "torch.compile the model."),
    ConfigFlag("checkpointing", "--checkpointing/--no-checkpointing", "train.checkpointing", bool,
               "Recompute encoder-block activations in backward (less memory for large batches)."),
    ConfigFlag("drop_last", "--drop-last/--no-drop-last", "train.drop_last", bool,
               "Drop each epoch's last partial batch (always on under torchrun)."),
    ConfigFlag("log_every", "--log-every", "train.log_every", int,
               "Steps between reads of the running loss (the only per-step host sync); 0: never."),
    ConfigFlag("workers", "--workers", "data.num_workers", int, "DataLoader workers."),
    ConfigFlag("seed", "--seed", "train.seed", int,
               "Training seed; each seed's run lives in runs/<name>/seed<s>/ (default: the global --seed, else 1)."),
    # cache
    ConfigFlag("views", "--views", "data.cache_views", int, "Pre-augmented views per training clip."),
    # prep
    ConfigFlag("faces", "--faces", "data.faces", str, "detect | official (DFEW frames); default: data.compat decides."),
    ConfigFlag("face_select", "--face-select", "data.face_select", str,
               "track | union (authors'); default: data.compat decides."),
    ConfigFlag("audio_rate", "--audio-rate", "data.audio_rate", str,
               "16k | native (authors'); default: data.compat decides."),
    ConfigFlag("jpeg_quality", "--jpeg-quality", "data.jpeg_quality", int, "JPEG quality of crops."),
    # shards
    ConfigFlag("max_clips", "--max-clips", "data.shard_max_clips", int, "Clips per shard at most."),
    ConfigFlag("max_bytes", "--max-bytes", "data.shard_max_bytes", int, "Bytes per shard at most."),
    # sweeps: the SLURM parameters of a project file's `sweep:` section (defaults in pipeline.experiments.jobs)
    ConfigFlag("partition", "--partition", "sweep.partition", str, "SLURM partition."),
    ConfigFlag("gpus", "--gpus", "sweep.gpus", int, "GPUs per job [1]."),
    ConfigFlag("cpus", "--cpus", "sweep.cpus", int, "CPUs per job [8]."),
    ConfigFlag("mem_gb", "--mem-gb", "sweep.mem_gb", int, "Memory per job in GB [64]."),
    ConfigFlag("time_min", "--time", "sweep.time_min", int, "Minutes per job before requeue [600]."),
    ConfigFlag("array_parallelism", "--array-parallelism", "sweep.array_parallelism", int,
               "Array tasks running at once [16]."),
)}

# The flag groups stages share.
MODEL_FLAGS = ("image_size", "latent_dim", "fusion", "temporal", "ita_dim", "prompts", "prompt_introductions",
               "modality", "vision_encoder", "audio_encoder")
ENCODER_FLAGS = ("vision_ckpt", "audio_ckpt")
SWEEP_FLAGS = tuple(name for name, flag in CONFIG_FLAGS.items() if flag.key.startswith("sweep."))


@dataclass(frozen=True)
class ConfigRequest:
    """What a command line (or a Python caller) says about a stage's config; see the module docstring.

    `flags` maps a `CONFIG_FLAGS` parameter name (e.g. "image_size") or a dotted key (e.g.
    "model.image_size", "fold", "name") to its value; None means the flag was not given.
    """

    preset: str | None = None
    config_file: Path | None = None
    set_overrides: Sequence[str] = ()
    flags: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    dataset: str | None = None

    def stage_file(self) -> ProjectFile:
        """The parsed --config file (an empty ProjectFile when none was given)."""
        return load_stage_config(self.config_file) if self.config_file is not None else ProjectFile()

    def dotted_flags(self) -> dict[str, Any]:
        """The run-config flags that were given, by dotted key (paths as strings); not the `sweep.` ones."""
        out: dict[str, Any] = {}
        for name, value in self.flags.items():
            if value is None:
                continue
            flag = CONFIG_FLAGS.get(name)
            key = flag.key if flag is not None else name
            if not key.startswith("sweep."):
                out[key] = str(value) if isinstance(value, Path) else value
        return out

    def sweep_flags(self) -> dict[str, Any]:
        """The SLURM parameters given as flags, by their `sweep:` section key (e.g. {"gpus": 2})."""
        keys = {name: CONFIG_FLAGS[name].key for name in SWEEP_FLAGS}
        return {keys[n].split(".", 1)[1]: v for n, v in self.flags.items() if n in keys and v is not None}


def preset_name(request: ConfigRequest, project: ProjectFile, stage_file: ProjectFile | None = None) -> str:
    """--preset, else the --config file's `preset`, else the project file's, else paper."""
    stage_file = stage_file if stage_file is not None else request.stage_file()
    return request.preset or stage_file.preset or project.preset or DEFAULT_PRESET


def preset_was_given(request: ConfigRequest, project: ProjectFile) -> bool:
    """Whether any layer names a preset (else `paper` is only the default)."""
    return bool(request.preset or request.stage_file().preset or project.preset)


def stage_dataset(request: ConfigRequest, project: ProjectFile, workspace: Workspace,
                  stage_file: ProjectFile | None = None) -> str:
    """The dataset named, else the --config file's `dataset`, else mma.yaml's, else the only one prepared."""
    stage_file = stage_file if stage_file is not None else request.stage_file()
    return resolve_dataset(request.dataset or stage_file.dataset, project, workspace)


def _implied(flags: dict[str, Any], set_overrides: Sequence[str]) -> dict[str, Any]:
    """The values flags imply: num_prompts from --prompt-introductions (unless --set model.num_prompts)."""
    introductions = flags.get("model.prompt_introductions")
    set_keys = {".".join(parse_override(item)[0]) for item in set_overrides}
    if introductions and "model.num_prompts" not in flags and "model.num_prompts" not in set_keys:
        return {"model.num_prompts": TOKENS_PER_INTRODUCTION * int(introductions)}
    return {}


def resolve_stage_config(request: ConfigRequest, project: ProjectFile | None = None,
                         workspace: Workspace | None = None, *, needs_dataset: bool = True) -> RunConfig:
    """The validated RunConfig a stage runs for `request` (module docstring: precedence and rules).

    With `needs_dataset`, the dataset is resolved (named, --config, mma.yaml, the only one
    prepared under `workspace`) and set; without, it is set only when named or configured.
    """
    project = project if project is not None else ProjectFile()
    stage_file = request.stage_file()
    flags = request.dotted_flags()
    flags.update(_implied(flags, request.set_overrides))
    if request.seed is not None:
        flags.setdefault("train.seed", request.seed)
    if needs_dataset:
        flags["dataset"] = stage_dataset(request, project, workspace or Workspace.from_env(), stage_file)
    elif request.dataset or stage_file.dataset:
        flags["dataset"] = request.dataset or stage_file.dataset
    layers = [project.config_layer(), stage_file.config_layer()]
    return resolve_config(preset_name(request, project, stage_file), None, flags, list(request.set_overrides),
                          layers=layers)
