"""Import of checkpoints trained with the authors' MMA-DFER code into our module layout.

Their files are `{'state_dict': {'module.<name>': tensor}, ...}` (a DataParallel model plus
optimizer and a pickled metrics recorder, which are not loaded). Names map one to one
onto ours (below), except the temporal attention: their `to_q` and `to_kv` (keys = first
half of the rows, values = second half) are concatenated into timm's `qkv`.

    image_encoder.{cls_token,pos_embed,patch_embed,blocks,norm}  -> vision.*
    audio_model.{...}                                             -> audio.*
    <enc>.learnable_prompts_init / learnable_prompts_progr.k      -> <enc>.prompts.tokens / .sets.k
    image_encoder.temporal_pre.i / temporal_pre_norm.i            -> fusion.i.vision_down / vision_norm
    image_encoder.audio_proj_pre.i.{0,1}                          -> fusion.i.audio_down / audio_norm
    image_encoder|audio_model.temporal_att_post.i.0               -> fusion.i.vision_up | audio_up
    image_encoder|audio_model.all_gate.i                          -> fusion.i.vision_gate | audio_gate
    vision_proj / our_classifier                                  -> jam / classifier
    temporal_net.{cls_token,pos_embedding}                        -> temporal.{cls_token,pos_embed}
    temporal_net.temporal_transformer.layers.L.0.fn.{norm,fn.to_q+fn.to_kv,fn.to_out.0}
                                                -> temporal.blocks.L.{norm1,attn.qkv,attn.proj}
    temporal_net.temporal_transformer.layers.L.1.fn.{norm,fn.net.0,fn.net.3}
                                                -> temporal.blocks.L.{norm2,mlp.fc1,mlp.fc2}

Dropped (the computation never uses them): the encoders' classification heads
(`image_encoder.head.*`, `audio_model.head.*`) and the second LayerNorm of each temporal
pre-norm wrapper (`...layers.L.{0,1}.fn.norm2.*`). Any other tensor left over on either
side is an error.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from model.checkpoint import safe_torch_load, save_model_checkpoint
from model.config import ModelConfig
from model.errors import ModelError
from model.families import encoder_geometry
from model.files import sha256_file
from model.mma import MMADFER

log = logging.getLogger(__name__)

_ENCODER = {"vision": "image_encoder", "audio": "audio_model"}
_LAYERS = "temporal_net.temporal_transformer.layers"
_FUSION = {
    "vision_down": "image_encoder.temporal_pre.{i}",
    "vision_norm": "image_encoder.temporal_pre_norm.{i}",
    "audio_down": "image_encoder.audio_proj_pre.{i}.0",
    "audio_norm": "image_encoder.audio_proj_pre.{i}.1",
    "vision_up": "image_encoder.temporal_att_post.{i}.0",
    "audio_up": "audio_model.temporal_att_post.{i}.0",
    "vision_gate": "image_encoder.all_gate.{i}",
    "audio_gate": "audio_model.all_gate.{i}",
}
_TEMPORAL_BLOCK = {
    "norm1": ["0.fn.norm"],
    "attn.qkv": ["0.fn.fn.to_q", "0.fn.fn.to_kv"],
    "attn.proj": ["0.fn.fn.to_out.0"],
    "norm2": ["1.fn.norm"],
    "mlp.fc1": ["1.fn.fn.net.0"],
    "mlp.fc2": ["1.fn.fn.net.3"],
}
DROPPABLE = re.compile(
    r"^(image_encoder|audio_model)\.head\.(weight|bias)$"
    r"|^temporal_net\.temporal_transformer\.layers\.\d+\.[01]\.fn\.norm2\.(weight|bias)$"
)


def official_keys(key: str) -> list[str]:
    """The authors' tensor name(s) that make up our tensor `key` (several are concatenated on dim 0)."""
    parts = key.split(".")
    head = parts[0]
    if head in _ENCODER:
        base = _ENCODER[head]
        rest = parts[1:]
        if rest[:2] == ["prompts", "tokens"]:
            return [f"{base}.learnable_prompts_init"]
        if rest[:2] == ["prompts", "sets"]:
            return [f"{base}.learnable_prompts_progr.{rest[2]}"]
        return [f"{base}.{'.'.join(rest)}"]
    if head == "fusion" and parts[2] in _FUSION:
        name = _FUSION[parts[2]].format(i=parts[1])
        return [f"{name}.{parts[3]}" if len(parts) > 3 else name]
    if head == "jam":
        return [f"vision_proj.{parts[1]}"]
    if head == "classifier":
        return [f"our_classifier.{parts[1]}"]
    if key == "temporal.cls_token":
        return ["temporal_net.cls_token"]
    if key == "temporal.pos_embed":
        return ["temporal_net.pos_embedding"]
    if head == "temporal" and parts[1] == "blocks":
        layer, module, leaf = parts[2], ".".join(parts[3:-1]), parts[-1]
        if module in _TEMPORAL_BLOCK:
            return [f"{_LAYERS}.{layer}.{sub}.{leaf}" for sub in _TEMPORAL_BLOCK[module]]
    raise KeyError(key)


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of an authors' checkpoint, `module.` prefixes removed."""
    path = Path(path)
    obj = safe_torch_load(path)
    sd = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if sd is None and isinstance(obj, Mapping) and any(str(k).removeprefix("module.").startswith("image_encoder.")
                                                       for k in obj):
        sd = obj
    if not isinstance(sd, Mapping):
        found = sorted(map(str, obj))[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"{path}: not a checkpoint of the authors' code (expected {{'state_dict': {{'module.image_encoder...': "
            f"tensor}}}}; found {found})"
        )
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if isinstance(v, torch.Tensor):
            out[k] = v
    if not any(k.startswith("image_encoder.") for k in out) or not any(k.startswith("audio_model.") for k in out):
        raise ModelError(f"{path}: not a checkpoint of the authors' code (no image_encoder.* / audio_model.* tensors)")
    return out


def _check_config(cfg: ModelConfig, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """The authors' code builds one architecture: say clearly when `cfg` or the file disagree."""
    wanted = {"modality": "both", "fusion": "bottleneck", "temporal": "mtt", "prompts": "progressive"}
    for name, value in wanted.items():
        if getattr(cfg, name) != value:
            raise ModelError(f"{path}: the authors' checkpoints have {name}={value}, the model config has "
                           f"{name}={getattr(cfg, name)!r}")
    pos = state.get("image_encoder.pos_embed")
    prompts = state.get("image_encoder.learnable_prompts_init")
    if pos is not None and prompts is not None and pos.dim() == 3:
        grid = pos.shape[1] - 1 - prompts.shape[0]
        side = math.isqrt(max(grid, 0))
        patch = encoder_geometry(cfg, "vision").patch_size[0]
        if side * side == grid and side * patch != cfg.image_size:
            raise ModelError(f"{path}: the checkpoint was trained at image size {side * patch} "
                           f"({grid} patches), the model is configured for {cfg.image_size} (pass --image-size)")
    head = state.get("our_classifier.weight")
    if head is not None and head.shape[0] != cfg.num_classes:
        raise ModelError(f"{path}: the checkpoint predicts {head.shape[0]} classes, the model has {cfg.num_classes} "
                       "(wrong --dataset?)")
    sets = {k for k in state if k.startswith("image_encoder.learnable_prompts_progr.")}
    if sets and len(sets) != cfg.prompt_introductions:
        raise ModelError(f"{path}: the checkpoint has {len(sets)} progressive prompt sets, the model config "
                       f"prompt_introductions={cfg.prompt_introductions}")
    layers = {k.split(".")[3] for k in state if k.startswith(_LAYERS + ".")}
    if layers and len(layers) != cfg.temporal_depth:
        raise ModelError(f"{path}: the checkpoint has {len(layers)} temporal transformer layer(s), the model config "
                       f"temporal_depth={cfg.temporal_depth}")


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], model: MMADFER, path: str | Path = "<state dict>"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Our state dict from the authors' tensors; ModelError on any unmapped tensor or shape mismatch."""
    problems: list[str] = []
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for key, target in model.state_dict().items():
        try:
            theirs = official_keys(key)
        except KeyError:
            problems.append(f"the authors' layout has no tensor for our {key}")
            continue
        absent = [k for k in theirs if k not in state]
        if absent:
            problems.append(f"missing {absent[0]} (needed for {key})")
            continue
        value = state[theirs[0]] if len(theirs) == 1 else torch.cat([state[k] for k in theirs], dim=0)
        if tuple(value.shape) != tuple(target.shape):
            problems.append(f"{' + '.join(theirs)} has shape {tuple(value.shape)}, {key} needs {tuple(target.shape)}")
            continue
        out[key] = value.to(target.dtype).contiguous()
        used.update(theirs)
    left = sorted(k for k in state if k not in used)
    dropped = [k for k in left if DROPPABLE.match(k)]
    unmapped = [k for k in left if not DROPPABLE.match(k)]
    if unmapped:
        problems.append(f"{len(unmapped)} tensor(s) of the checkpoint have no place in the model, e.g. "
                        f"{', '.join(unmapped[:3])}")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ModelError(f"{path}: cannot import: {problems[0]}{more}")
    return out, {"mapped_tensors": len(out), "source_tensors": len(state), "dropped": dropped}


def _import(path: str | Path, cfg: Any) -> tuple[MMADFER, dict[str, Any]]:
    path = Path(path)
    mcfg = dataclasses.replace(cfg.model if hasattr(cfg, "model") else cfg).validate()
    state = read_official_state_dict(path)
    _check_config(mcfg, state, path)
    with torch.device("meta"):
        model = MMADFER(mcfg)
    ours, report = convert_official_state_dict(state, model, path)
    model.load_state_dict(ours, strict=True, assign=True)
    digest = sha256_file(path)
    model.encoder_sources = {"vision": {"path": str(path), "sha256": digest},
                             "audio": {"path": str(path), "sha256": digest}}
    report.update(source=str(path), sha256=digest, image_size=mcfg.image_size, num_classes=mcfg.num_classes)
    log.info("imported %s: %d tensors mapped, %d dropped (%s)", path, report["mapped_tensors"],
             len(report["dropped"]), ", ".join(report["dropped"]))
    return model, report


def load_official_checkpoint(path: str | Path, cfg: Any) -> MMADFER:
    """An MMADFER holding the weights of a checkpoint trained with the authors' code.

    `cfg` is a ModelConfig (or a RunConfig, whose `.model` is used); it must describe the
    official architecture at the checkpoint's image size and class count.
    """
    return _import(path, cfg)[0]


def import_official_to_file(
    ckpt: str | Path,
    *,
    model_config: ModelConfig,
    classes: Sequence[str],
    out: str | Path,
    run_config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert an authors' checkpoint into an mma checkpoint (full state) at `out`; returns a report.

    `model_config` is the official architecture at the checkpoint's image size; its class
    count must equal `len(classes)`. `run_config` (the resolved run config as a dict) and
    `extra` are stored in the checkpoint as they are.
    """
    out = Path(out)
    if out.exists() and not force:
        raise ModelError(f"{out}: already exists (use --force to overwrite)")
    if model_config.num_classes != len(classes):
        raise ModelError(f"{ckpt}: {len(classes)} class names given for a {model_config.num_classes}-class model")
    model, report = _import(ckpt, model_config)
    none = {"path": None, "sha256": None}
    save_model_checkpoint(
        out,
        model,
        dict(run_config),
        {"vision": dict(none), "audio": dict(none)},
        extra={"official": {"path": report["source"], "sha256": report["sha256"]}, "classes": list(classes),
               **dict(extra or {})},
        full_state=True,
    )
    report.update(out=str(out))
    return report
