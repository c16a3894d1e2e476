"""Encoder files in other layouts, brought into the one `mma` loads: `{'model': state_dict}` in timm's names.

What the hub publishes, and what happens to it when it is installed (`mma weights fetch` / `add`):

- a PyTorch file whose tensors already carry timm's ViT names — MAE-Face's and AudioMAE's
  `{'model': ...}` files (MAE decoder included, ignored on load), the AudioMAE port
  `gaunernst/vit_base_patch16_1024_128.audiomae_as2m` (a bare state dict: `cls_token`,
  `pos_embed` (1, 1 + 64*8, 768), `patch_embed.proj.weight` (768, 1, 16, 16), `blocks.N.*`,
  `norm.*`; the same names and shapes as AudioMAE's own file, minus the decoder) — is installed
  byte for byte;
- a safetensors file (timm's hub repositories: `model.safetensors`, timm names) is read with the
  `safetensors` package and written as a PyTorch file;
- OpenAI's CLIP layout (`visual.conv1.weight`, `visual.transformer.resblocks.N.attn.in_proj_weight`,
  ..., text tower alongside; timm's `vit_base_patch16_clip_224.openai` publishes this) keeps the
  image tower only, renamed to timm's names as timm's own CLIP converter does (`conv1` ->
  `patch_embed.proj`, `ln_pre` -> `norm_pre`, `ln_post` -> `norm`, `in_proj_` -> `qkv.`, ...); the
  projection into CLIP's text space (`visual.proj`) is left out: `mma` uses the class token after
  the final norm.

`encoder_tensors` reads any of these into (object to inspect, the conversion it needs or None).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import safe_torch_load
from model.errors import ModelError
from pipeline.core.io import atomic_path

SAFETENSORS = "safetensors -> torch"
OPENAI_CLIP = "OpenAI CLIP names -> timm"
# OpenAI CLIP image-tower names -> timm's, applied in this order (timm's own converter's table).
_CLIP_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
               ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
               ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
               ("mlp.c_proj", "mlp.fc2"))
_CLIP_PREFIXES = ("visual.", "module.visual.")


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` starts like a safetensors file (u64 header length, then a JSON object)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = Path(path).stat().st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + length <= size


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ModelError naming the file when it cannot be read."""
    from safetensors import SafetensorError  # lazy: only safetensors files need it
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None


def _unwrap(obj: Any) -> dict[str, Any] | None:
    """The state dict inside a checkpoint object ({'model': ...}, {'state_dict': ...} or bare), `module.` removed."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    sd = {str(k): v for k, v in obj.items()}
    if sd and all(k.startswith("module.") and not k.startswith("module.visual.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def openai_clip_prefix(sd: Mapping[str, Any]) -> str | None:
    """The prefix of an OpenAI-layout CLIP image tower in `sd` (`visual.`), or None."""
    for prefix in _CLIP_PREFIXES:
        if f"{prefix}class_embedding" in sd and f"{prefix}conv1.weight" in sd:
            return prefix
    return None


def openai_clip_to_timm(sd: Mapping[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """The image tower of an OpenAI-layout CLIP state dict in timm's ViT names (no projection head)."""
    out = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name == "proj":  # the projection into the text space: not part of the encoder mma uses
            continue
        for old, new in _CLIP_SWAPS:
            name = name.replace(old, new)
        if name == "class_embedding":
            name, value = "cls_token", value.reshape(1, 1, -1)
        elif name == "pos_embed" and value.dim() == 2:
            value = value.unsqueeze(0)
        out[name] = value
    return out


def _loads_as_is(obj: Any) -> bool:
    """Whether mma's encoder loader takes `obj` unchanged: {'model': tensors} or a bare state dict with pos_embed."""
    return isinstance(obj, Mapping) and (isinstance(obj.get("model"), Mapping) or "pos_embed" in obj)


def encoder_tensors(path: str | Path) -> tuple[Any, str | None]:
    """(checkpoint object in mma's layout, the conversion it took or None) for the encoder file `path`.

    None: the file loads as it is. Otherwise the object is `{'model': timm-named tensors}` and
    the string says what changed (safetensors -> torch, OpenAI CLIP names -> timm).
    """
    path = Path(path)
    steps = []
    if is_safetensors(path):
        obj: Any = read_safetensors(path)
        steps.append(SAFETENSORS)
    else:
        obj = safe_torch_load(path)
    sd = _unwrap(obj)
    if sd is None:
        return obj, None  # not a dict of tensors: model.inspect says what it is
    prefix = openai_clip_prefix(sd)
    if prefix is not None:
        sd = openai_clip_to_timm(sd, prefix)
        steps.append(OPENAI_CLIP)
    elif not steps and (_loads_as_is(obj) or "patch_embed.proj.weight" not in sd):
        return obj, None  # loads as it is, or is no encoder (a trained model): model.inspect says which
    if not steps:  # an encoder under {'state_dict': ...}: rewrite into the loader's layout
        steps.append("state dict -> {'model': ...}")
    return {"model": {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}}, ", ".join(steps)


def write_encoder_file(obj: Mapping[str, Any], path: str | Path) -> Path:
    """Write a converted encoder (`{'model': tensors}`) atomically as a PyTorch file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"model": {k: v.contiguous() for k, v in obj["model"].items()}}, tmp)
    return path
