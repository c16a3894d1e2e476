"""Checkpoint I/O: safe loading, MAE encoder checkpoints, and mma's own checkpoints.

- `safe_torch_load`: `torch.load(weights_only=True)`. Files written by training scripts
  often also pickle Python objects (argparse.Namespace, a metrics recorder, numpy RNG
  state); numpy arrays are rebuilt for real and any other class is replaced by an inert
  placeholder, so no code from the file ever runs and the tensors still load.
- `load_encoder_checkpoints`: encoder files in timm names (MAE-Face / AudioMAE's
  `{'model': state_dict}`, or a bare state dict as timm saves one; MAE decoder keys and
  classifier heads ignored) into the frozen encoders; the positional-embedding grid is resized bicubically
  (prefix-token rows kept) and the prompt rows keep their own init.
- mma checkpoints (`format: "mma-v1"`): the trainable tensors only (or the full state for
  an imported official model, `full_state: True`), the run config, and the encoder
  checkpoints by path + sha256.
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from model.encoders import FROZEN_PREFIXES, PromptedEncoder, resize_pos_embed
from model.errors import ModelError
from model.files import atomic_path, sha256_file

log = logging.getLogger(__name__)

FORMAT = "mma-v1"
# What torch.load raises on a file that is not a checkpoint, or a truncated one (zip reader errors are
# RuntimeErrors; an empty file is an EOFError; a text file a KeyError or UnpicklingError).
# Arbitrary bytes fed to the weights-only unpickler also raise lookup, type, struct and overflow errors.
BAD_FILE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, EOFError, LookupError, ValueError, TypeError,
                                                    AttributeError, struct.error, OverflowError,
                                                    pickle.UnpicklingError)
# MAE pre-training leftovers and heads that the encoders do not use.
IGNORED_ENCODER_KEYS = ("decoder", "mask_token", "head.", "head_dist.", "fc_norm.")


# --------------------------------------------------------------------------- safe loading


def _inert_class(name: str) -> type:
    """A placeholder class standing for the pickled global `name`: accepts anything, does nothing."""
    module, _, qualname = name.rpartition(".")

    def _new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    def _init(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def _setstate(self: Any, state: Any) -> None:
        return None

    cls = type(qualname.split(".")[-1] or "Placeholder", (), {
        "__new__": _new, "__init__": _init, "__setstate__": _setstate,
        "__repr__": lambda self: f"<unloaded {name}>",
    })
    cls.__module__ = module
    cls.__qualname__ = qualname
    return cls


def _resolve_numpy(name: str) -> Any | None:
    if not name.startswith("numpy."):
        return None
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; non-tensor objects other than numpy arrays become placeholders."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:  # the file exists but cannot be read (permissions, I/O error)
        raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except pickle.UnpicklingError as first:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except BAD_FILE_ERRORS:
            raise ModelError(f"{path}: not a PyTorch checkpoint (its pickle cannot be read)") from None
        if not names:
            raise ModelError(f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(first)})") from None
    except BAD_FILE_ERRORS as exc:  # what torch.load raises on a file that is not (or no longer) a checkpoint
        raise ModelError(f"{path}: {_bad_file_reason(path, exc)}") from None
    allowed: list[Any] = []
    placeholders = []
    for name in names:
        obj = _resolve_numpy(name)
        if obj is None:
            obj = _inert_class(name)
            placeholders.append(name)
        allowed.append((obj, name))
    if len(placeholders) < len(names):  # numpy arrays: their dtype instances are built too
        import numpy as np

        allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    if placeholders:
        log.info("%s: not loading pickled Python objects %s (only tensors are used)", path, ", ".join(placeholders))
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, *BAD_FILE_ERRORS) as exc:  # still unreadable: a bad file, not a traceback
        raise ModelError(f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(exc)})") from None


def _bad_file_reason(path: Path, exc: BaseException) -> str:
    """Why torch.load failed, in the user's terms: empty, truncated/corrupt zip, or not a checkpoint."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes), not a PyTorch checkpoint"
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip and isinstance(exc, RuntimeError) and "zip archive" in str(exc):
        return f"truncated or corrupt PyTorch checkpoint ({size} bytes; the zip archive is incomplete)"
    return f"not a PyTorch checkpoint ({_one_line(exc)})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------- MAE encoder checkpoints


def _mae_state_dict(obj: Any, path: Path, which: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = dict(obj["model"])
    elif isinstance(obj, Mapping) and "pos_embed" in obj:
        sd = dict(obj)  # a bare state dict
    else:
        found = sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"{path}: not an MAE {which} checkpoint (expected {{'model': state_dict}} with timm ViT keys; found {found})"
        )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: entry {bad[0]!r} of the {which} state dict is not a tensor")
    return sd


def _checkpoint_grid(which: str, rows: int, enc: PromptedEncoder, cfg: Any, path: Path) -> tuple[int, int]:
    if which == "vision":
        g = math.isqrt(rows)
        if g * g != rows:
            raise ModelError(f"{path}: vision pos_embed has {rows} patch rows, not a square grid")
        return g, g
    f = enc.grid_size[1]  # mel bins / patch width: the checkpoint's frequency axis is the model's
    if rows == cfg.audio_ckpt_grid_t * cfg.audio_ckpt_grid_f and cfg.audio_ckpt_grid_f == f:
        return cfg.audio_ckpt_grid_t, f
    if rows == enc.num_patches:
        return enc.grid_size
    if rows % f == 0:
        return rows // f, f
    raise ModelError(f"{path}: audio pos_embed has {rows} patch rows, not a (time x {f}) grid")


def _load_encoder(enc: PromptedEncoder, path: str | Path, which: str, cfg: Any) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: {which} encoder checkpoint not found")
    sd = _mae_state_dict(safe_torch_load(path), path, which)
    ignored = sorted(k for k in sd if k.startswith(IGNORED_ENCODER_KEYS))
    sd = {k: v for k, v in sd.items() if k not in ignored}
    if "pos_embed" not in sd:
        raise ModelError(f"{path}: the {which} checkpoint has no pos_embed")
    pos = sd.pop("pos_embed")
    dim = enc.embed_dim
    prefix = enc.pos_prefix_rows
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != dim or pos.shape[1] <= prefix:
        raise ModelError(f"{path}: pos_embed has shape {tuple(pos.shape)}, the {which} encoder needs "
                         f"(1, {f'{prefix}+' if prefix else ''}N, {dim})")
    old_grid = _checkpoint_grid(which, pos.shape[1] - prefix, enc, cfg, path)
    new_grid = enc.grid_size
    resized = resize_pos_embed(pos.float(), old_grid, new_grid, num_prefix=prefix)

    own = {k: v for k, v in enc.state_dict().items() if k.startswith(FROZEN_PREFIXES)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing:
        raise ModelError(
            f"{path}: the {which} checkpoint lacks {len(missing)} encoder tensor(s), e.g. {', '.join(missing[:3])}"
        )
    for key, target in own.items():
        if tuple(sd[key].shape) != tuple(target.shape):
            raise ModelError(
                f"{path}: {key} has shape {tuple(sd[key].shape)} but the {which} encoder needs {tuple(target.shape)} "
                "(wrong checkpoint for this encoder geometry?)"
            )
    with torch.no_grad():
        params = dict(enc.named_parameters())
        params.update(dict(enc.named_buffers()))
        for key in own:
            params[key].copy_(sd[key])
        enc.pos_embed[:, : resized.shape[1]].copy_(resized)
    if unexpected:
        log.warning("%s: %d unused tensor(s) in the %s checkpoint: %s", path, len(unexpected), which,
                    ", ".join(unexpected[:8]))
    digest = sha256_file(path)
    log.info("%s encoder loaded from %s (pos_embed grid %s -> %s)", which, path, old_grid, new_grid)
    return {
        "path": str(path),
        "sha256": digest,
        "tensors_loaded": len(own) + 1,
        "ignored": ignored,
        "unexpected": unexpected,
        "pos_embed_grid": {"checkpoint": list(old_grid), "model": list(new_grid)},
    }


def load_encoder_checkpoints(
    model: nn.Module, vision_ckpt: str | Path | None, audio_ckpt: str | Path | None
) -> dict[str, Any]:
    """Load MAE-Face (vision) and AudioMAE (audio) weights into the frozen encoders; returns a report.

    Either path may be None (that encoder stays random, with a warning). Raises ModelError
    naming the file on a missing file, a non-checkpoint, missing keys or a shape mismatch.
    """
    report: dict[str, Any] = {}
    for which, ckpt in (("vision", vision_ckpt), ("audio", audio_ckpt)):
        enc = getattr(model, which, None)
        if enc is None:
            if ckpt:
                log.info("%s: ignored, this model has no %s encoder", ckpt, which)
            report[which] = {"path": str(ckpt) if ckpt else None, "skipped": f"model has no {which} encoder"}
            continue
        if not ckpt:
            log.warning("no %s encoder checkpoint given: that encoder stays RANDOMLY INITIALISED", which)
            report[which] = {"path": None, "random": True}
            continue
        report[which] = _load_encoder(enc, ckpt, which, model.config)
        model.encoder_sources[which] = {"path": report[which]["path"], "sha256": report[which]["sha256"]}
    return report


# --------------------------------------------------------------------------- trainable tensors


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that train (requires_grad), by name: what mma checkpoints store."""
    return {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}


def load_trainable_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy trainable tensors into `model`; ModelError if names or shapes differ from the model's."""
    own = {k: p for k, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(f"checkpoint does not match the model configuration: {'; '.join(parts)}")
    for key, p in own.items():
        if tuple(state[key].shape) != tuple(p.shape):
            raise ModelError(f"checkpoint tensor {key} has shape {tuple(state[key].shape)}, model needs {tuple(p.shape)}")
    with torch.no_grad():
        for key, p in own.items():
            p.copy_(state[key])


# --------------------------------------------------------------------------- mma checkpoints


def save_model_checkpoint(
    path: str | Path,
    model: nn.Module,
    run_config_dict: Mapping[str, Any],
    encoders_info: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    *,
    full_state: bool = False,
) -> Path:
    """Write an mma checkpoint atomically: trainable tensors (or the full state), config, encoders, extra."""
    tensors = model.state_dict() if full_state else trainable_state_dict(model)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config": dict(run_config_dict),
        "model": {k: v.detach().cpu() for k, v in tensors.items()},
        "full_state": bool(full_state),
        "encoders": dict(encoders_info),
    }
    for key, value in (extra or {}).items():
        if key in payload:
            raise ValueError(f"extra key {key!r} would overwrite the checkpoint's own field")
        payload[key] = value
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_model_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read an mma checkpoint (safe loading); ModelError if the file is not one."""
    path = Path(path)
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = " (a checkpoint of the authors' code? use --official or `mma model import-official`)"
        looks_official = isinstance(obj, dict) and "state_dict" in obj
        raise ModelError(f"{path}: not an mma checkpoint (no format {FORMAT!r}){hint if looks_official else ''}")
    for key in ("config", "model", "encoders"):
        if key not in obj:
            raise ModelError(f"{path}: mma checkpoint has no {key!r} entry")
    obj.setdefault("full_state", False)
    return obj
