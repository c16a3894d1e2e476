"""Typed run configuration (data, model, train, run), presets, file loading and overrides.

Precedence, lowest first: preset function -> project file `mma.yaml` (pipeline.core.project)
-> config file (YAML or JSON) -> CLI overrides (`section.field=value` strings or explicit flags). `resolve_config` applies all three and
`save_resolved_config` writes the result next to a run's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from model.config import ModelConfig
from pipeline.core.errors import ConfigError
from pipeline.core.folds import check_fold
from pipeline.core.io import atomic_write_json

# The allowed values of every choice field, defined once; `check_choice` is the one validation.
COMPAT_MODES = ("mma", "authors")  # our data-side choices | the authors' code, choice by choice
AUTO = "auto"  # a per-choice field left to data.compat (resolved by `DataConfig.resolved`)
AUDIO_RATE_MODES = ("16k", "native")  # resample to 16 kHz | the file's rate, first channel (authors')
FACE_SELECT_MODES = ("track", "union")  # most confident face, tracked | union box of all faces (authors')
FACES_MODES = ("detect", "official")  # MTCNN on the video | DFEW's clip_224x224 frames
FRAME_ORDERS = ("numeric", "authors")  # time order, all frames | MAFW: names sorted as strings, len - 1 frames
AUDIO_WINDOWS = ("start", "aligned")  # 5.12 s from t=0 (authors') | centred on the sampled frames
SOURCES = ("shards", "cache")
PRECISIONS = ("auto", "bf16", "fp32")  # auto: fp32 under data.compat=authors, else bf16 on GPU / fp32 on CPU
DFEW_FACES_SUBDIR = ("Clip", "clip_224x224")  # DFEW's official face frames under the dataset root
CACHE_DTYPES = ("float16", "bfloat16")
SHUFFLE_MODES = ("permutation", "buffer")  # uniform per-epoch clip permutation | shard order + sample buffer


def check_choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ConfigError naming `field_name` when `value` is not one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"{field_name}={value!r} is not one of {', '.join(allowed)}")


@dataclass
class DataConfig:
    """How clips are decoded, sampled, augmented and fed (docs/architecture.md, "Data").

    The frames per clip are `model.num_frames` (the network is built for that many; the loaders
    sample that many): there is no second copy here.
    """

    # "mma" | "authors": what every "auto" choice below (and train.precision="auto") becomes
    compat: str = "mma"
    # prep
    audio_rate: str = AUTO  # "16k" (mma: resample) | "native" (authors: file's rate, first channel)
    face_select: str = AUTO  # "track" (mma: most confident face, tracked) | "union" (authors' union box)
    faces: str = AUTO  # "detect" (MTCNN) | "official" (DFEW clip_224x224 frames; authors' on DFEW)
    crop_size: int = 224
    detect_max_side: int = 640  # MTCNN (track rule) runs on frames downscaled to this longer side
    jpeg_quality: int = 95
    # loading
    frame_order: str = AUTO  # "numeric" | "authors" (MAFW under authors: string-sorted names, len - 1 frames)
    audio_window: str = "start"  # "start" (authors: from t=0) | "aligned" (window around sampled frames)
    spec_frames: int = 512
    brightness: tuple[float, float] = (0.5, 1.5)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    hflip_p: float = 0.5
    shuffle: str = "permutation"  # training order from shards: "permutation" (uniform) | "buffer" (streaming)
    shuffle_buffer: int = 256  # samples in the streaming shuffle buffer (shuffle="buffer" only)
    num_workers: int = 2
    # shards and cache
    shard_max_clips: int = 500
    shard_max_bytes: int = 1_000_000_000
    cache_views: int = 4
    cache_dtype: str = "float16"

    def validate(self) -> "DataConfig":
        """ConfigError naming the field when a value is outside what the pipeline supports."""
        check_choice("data.compat", self.compat, COMPAT_MODES)
        check_choice("data.audio_rate", self.audio_rate, (AUTO, *AUDIO_RATE_MODES))
        check_choice("data.face_select", self.face_select, (AUTO, *FACE_SELECT_MODES))
        check_choice("data.faces", self.faces, (AUTO, *FACES_MODES))
        check_choice("data.frame_order", self.frame_order, (AUTO, *FRAME_ORDERS))
        check_choice("data.audio_window", self.audio_window, AUDIO_WINDOWS)
        check_choice("data.cache_dtype", self.cache_dtype, CACHE_DTYPES)
        check_choice("data.shuffle", self.shuffle, SHUFFLE_MODES)
        for name in ("crop_size", "spec_frames", "shard_max_clips", "shard_max_bytes", "cache_views"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be at least 1")
        if self.detect_max_side < 64:
            raise ConfigError(f"data.detect_max_side={self.detect_max_side} must be at least 64")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"data.jpeg_quality={self.jpeg_quality} must be in 1..100")
        return self

    def resolved(self, dataset: str | None = None, root: str | Path | None = None) -> "DataConfig":
        """A validated copy with every "auto" choice replaced by what `compat` means for `dataset`.

        mma: faces=detect, face_select=track, audio_rate=16k, frame_order=numeric.
        authors: faces=official on DFEW (MMAError when `root` is given and lacks Clip/clip_224x224;
        without a root the official frames are assumed), else detect; face_select=union;
        audio_rate=native; frame_order=authors on MAFW (their frame files are named 0.jpg, 1.jpg, ...),
        numeric elsewhere (DFEW's names are zero-padded: string order is time order).
        Choices set explicitly are kept. Idempotent.
        """
        out = dataclasses.replace(self).validate()
        authors = out.compat == "authors"
        if out.faces == AUTO:
            out.faces = "detect"
            if authors and dataset == "dfew":
                faces_dir = Path(root).joinpath(*DFEW_FACES_SUBDIR) if root is not None else None
                if faces_dir is not None and not faces_dir.is_dir():
                    raise ConfigError(f"{faces_dir}: not found; data.compat=authors uses DFEW's official face "
                                      "frames: pass --faces detect to detect faces in the videos instead")
                out.faces = "official"
        if out.face_select == AUTO:
            out.face_select = "union" if authors else "track"
        if out.audio_rate == AUTO:
            out.audio_rate = "native" if authors else "16k"
        if out.frame_order == AUTO:
            out.frame_order = "authors" if authors and dataset == "mafw" else "numeric"
        return out


def resolve_precision(precision: str, compat: str, device_type: str) -> str:
    """"bf16" or "fp32" for train.precision on a device type: "auto" is fp32 under compat=authors
    (the authors trained and evaluated in fp32), bf16 on GPU and fp32 on CPU otherwise."""
    check_choice("train.precision", precision, PRECISIONS)
    check_choice("data.compat", compat, COMPAT_MODES)
    if precision != "auto":
        return precision
    return "bf16" if compat == "mma" and device_type == "cuda" else "fp32"


@dataclass
class TrainConfig:
    """Optimisation recipe (docs/architecture.md, "Training recipe")."""

    epochs: int = 25
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 1
    precision: str = "auto"  # "auto" (see `resolve_precision`) | "bf16" | "fp32"
    compile: bool = False  # torch.compile the training module (one graph per batch shape: see drop_last)
    source: str = "shards"  # "shards" | "cache"
    deterministic: bool = False
    eval_two_clip: bool = True
    # Drop each epoch's last partial (global) batch; always on under torchrun, so every rank takes the
    # same steps. Off, a compiled step pads the partial batch instead (ignored rows), keeping one shape.
    drop_last: bool = False
    checkpointing: bool = False  # recompute encoder-block activations in backward (memory for large batches)
    log_every: int = 50  # steps between the host reading the running loss (the only per-step sync); 0: never

    def per_rank_batch(self, world_size: int) -> int:
        """Clips per step on each of `world_size` ranks: batch_size is the global batch (what one
        optimisation step sees), split evenly; ConfigError when it does not divide."""
        if world_size < 1 or self.batch_size % world_size:
            raise ConfigError(f"train.batch_size={self.batch_size} is the global batch and must be divisible by "
                              f"the {world_size} ranks (torchrun --nproc-per-node x nodes)")
        return self.batch_size // world_size

    def validate(self) -> "TrainConfig":
        """ConfigError naming the field when a value is outside what the trainer supports."""
        check_choice("train.source", self.source, SOURCES)
        check_choice("train.precision", self.precision, PRECISIONS)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be positive")
        if self.log_every < 0:
            raise ConfigError(f"train.log_every={self.log_every} must be 0 (never) or a number of steps")
        return self


@dataclass
class RunConfig:
    """One training/evaluation run: a dataset, a fold, and the three sections above."""

    dataset: str = "mafw"
    fold: int = 1
    name: str = "default"
    vision_ckpt: str | None = None
    audio_ckpt: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "RunConfig":
        """Validate every section (model, data, train) and the fold; returns self."""
        self.model.validate()
        self.data.validate()
        self.train.validate()
        check_fold(self.fold)
        return self


def resolve_run(cfg: RunConfig, device_type: str) -> RunConfig:
    """Replace cfg's "auto" data choices, train.precision and the encoders' input statistics by what runs
    (in place; returns cfg), so the config.json and checkpoint of a run record the concrete choices."""
    cfg.model = cfg.model.resolved()
    cfg.data = cfg.data.resolved(cfg.dataset)
    cfg.train.precision = resolve_precision(cfg.train.precision, cfg.data.compat, device_type)
    return cfg


# --------------------------------------------------------------------------- presets


def paper() -> RunConfig:
    """The paper's recipe: ViT-B/16 encoders, S=160, d=128, 16 frames, batch 8, 25 epochs, and the
    authors' inputs (data.compat="authors": DFEW's official faces, MAFW's frame order, fp32)."""
    cfg = RunConfig()
    cfg.data.compat = "authors"
    return cfg


def tiny() -> RunConfig:
    """Same architecture with a small ViT (width 64, depth 4, 4 heads, S=32) for CPU tests and the demo.

    The width/depth/heads are overrides of whatever encoders are named (`--set model.vision_encoder=...`
    gives that family at this size; its own patch size is kept)."""
    cfg = RunConfig(name="tiny")
    cfg.data.compat = "mma"
    cfg.model = ModelConfig(
        image_size=32,
        latent_dim=32,
        embed_dim=64,
        depth=4,
        num_heads=4,
        drop_path=0.1,
        mult_dim=32,
        ita_dim=32,
        temporal_dim=64,
        temporal_heads=4,
        temporal_head_dim=16,
        temporal_mlp_dim=128,
    )
    # Measured on `mma synth` data (random frozen encoders, so the seed matters): 6 epochs at 1e-3
    # stays at chance; 15 at 3e-3 learned for seeds 1-3 in the streaming order (fold-1 UAR 75-92)
    # but only half the time in the uniform order (seeds 1/2/3/5: 50/50/25/50; 20 epochs at 2e-3:
    # 100/92/25/50); 5e-3 and above collapse to one class.
    cfg.train.epochs = 15
    cfg.train.batch_size = 8
    cfg.train.lr = 3e-3
    cfg.data.num_workers = 0
    cfg.data.cache_views = 2
    return cfg


PRESETS: dict[str, Callable[[], RunConfig]] = {"paper": paper, "tiny": tiny}


def preset(name: str) -> RunConfig:
    """Return a fresh config of the named preset; ValueError lists the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------- dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for JSON/YAML."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (from JSON/YAML or a CLI string) to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# Fields that earlier versions wrote into config.json and checkpoints and that no longer exist
# (they never changed a result): skipped when read back, so old runs still load.
RETIRED_KEYS = frozenset({"model.vision_ckpt_grid"})
# Keys merged into another field: saved configs drop them (`upgrade_saved_config`: they always held
# the same value as the field they merged into), user input is told where the value lives now.
MERGED_KEYS = {"data.num_frames": "model.num_frames"}
# Before encoders were named (model.vision_encoder), configs spelled ViT-B/16's geometry out: these
# values, saved without an encoder name, are what the default architecture has of itself.
VIT_B_GEOMETRY = {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "patch_size": 16}


def upgrade_saved_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict written by an earlier version (config.json, a checkpoint, a sweep job) in today's keys.

    `data.num_frames` is dropped: it had to equal `model.num_frames` (the loader refused a run
    where they differed), which now holds the frames per clip alone. A model section without
    `vision_encoder` (written before encoders were named) drops the geometry fields that only
    restate ViT-B/16's own (`VIT_B_GEOMETRY`; they are overrides now, None by default).
    """
    out = dict(values)
    model = out.get("model")
    if isinstance(model, Mapping) and "vision_encoder" not in model:
        out["model"] = {k: v for k, v in model.items() if VIT_B_GEOMETRY.get(k, object()) != v}
    for dotted in MERGED_KEYS:
        section, key = dotted.split(".")
        if isinstance(out.get(section), Mapping) and key in out[section]:
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def saved_run_config(values: Mapping[str, Any]) -> "RunConfig":
    """The RunConfig a saved config dict describes (on RunConfig's defaults, not a preset's)."""
    return from_dict(upgrade_saved_config(values), base=RunConfig())


def update_dataclass(obj: Any, values: Mapping[str, Any], where: str = "") -> Any:
    """Recursively set fields of dataclass `obj` from a (nested) mapping; unknown keys raise."""
    hints = _field_types(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        path = f"{where}{key}"
        if path in RETIRED_KEYS:
            continue
        if path in MERGED_KEYS:
            raise ConfigError(f"{path} is {MERGED_KEYS[path]} now (one value for the loader and the model): "
                              f"set {MERGED_KEYS[path]}")
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {path!r} is a section; give a mapping")
            update_dataclass(current, value, where=f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))
    return obj


def from_dict(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from a nested dict, on top of `base` (default: the paper preset)."""
    cfg = base if base is not None else paper()
    return update_dataclass(cfg, values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a nested dict; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections (model/data/train/...)")
    return data


def parse_override(text: str) -> tuple[list[str], str]:
    """Split `section.field=value` into (["section", "field"], "value")."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    return parts, value.strip()


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any] | list[str]) -> RunConfig:
    """Apply dotted overrides: a mapping {"model.latent_dim": 64} or strings "model.latent_dim=64".

    Values of None in a mapping are skipped (an unset CLI flag).
    """
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, Mapping):
        items = [(k.split("."), v) for k, v in overrides.items() if v is not None]
    else:
        items = [parse_override(o) for o in overrides]
    for parts, value in items:
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        update_dataclass(cfg, nested)
    return cfg


def resolve_config(
    preset_name: str = "paper",
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
    set_overrides: list[str] | None = None,
    layers: Sequence[Mapping[str, Any]] = (),
) -> RunConfig:
    """Preset, then `layers` (the project file's, then a stage --config file's: see
    pipeline.core.project), then `config_file`, then --set, then explicit overrides; validated."""
    cfg = preset(preset_name)
    for layer in layers:
        from_dict(layer, base=cfg)
    if config_file is not None:
        from_dict(load_config_file(config_file), base=cfg)
    if set_overrides:
        apply_overrides(cfg, set_overrides)
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg.validate()


def save_resolved_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as JSON (atomically) and return the path."""
    return atomic_write_json(Path(path), to_dict(cfg))


def load_run_config(path: str | Path) -> RunConfig:
    """Read a resolved config written by `save_resolved_config` (by this or an earlier version)."""
    return saved_run_config(load_config_file(path))
