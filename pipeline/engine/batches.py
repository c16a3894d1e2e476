"""What the training and evaluation loops share: the loader for a split, moving a batch to the
device, the forward function for the source (shards or cache), and the autocast rule."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Sequence

import torch

from pipeline.core.config import SOURCES, RunConfig, check_choice, resolve_precision
from pipeline.core.paths import Workspace
from pipeline.store.cache import build_cached_loader
from pipeline.store.stream import build_loader


def make_loader(cfg: RunConfig, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0, num_views: int = 1,
                rank: int = 0, world_size: int = 1) -> Iterable[Any]:
    """The streaming (shards) or cached loader for `split`, as cfg.train.source says."""
    source = cfg.train.source
    check_choice("train.source", source, SOURCES)
    if source == "shards":
        return build_loader(cfg, ws, split, epoch=epoch, view=view, num_views=num_views, rank=rank,
                            world_size=world_size)

    return build_cached_loader(cfg, ws, split, epoch=epoch, view=view, num_views=num_views, rank=rank,
                               world_size=world_size)


def prepare_batch(batch: Sequence[Any], source: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor, list[str]]:
    """Move a loader batch to `device`: frames uint8 -> float [0,1] (shards) or tokens -> float (cache)."""
    x1, x2, labels, clip_ids = batch
    nb = device.type == "cuda"
    x1 = x1.to(device, non_blocking=nb)
    if source == "shards" and x1.dtype == torch.uint8:
        x1 = x1.float().div_(255)
    elif not x1.is_floating_point() or x1.dtype == torch.float16:
        x1 = x1.float()
    x2 = x2.to(device, non_blocking=nb)
    if x2.dtype != torch.float32:
        x2 = x2.float()
    labels = labels.to(device, non_blocking=nb).long()
    return x1, x2, labels, list(clip_ids)


def forward_fn(model: torch.nn.Module, source: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """model.forward (frames, spectrogram) or model.forward_embedded (cached tokens)."""
    return model.forward_embedded if source == "cache" else model  # type: ignore[return-value]


def autocast_dtype(precision: str, device: torch.device, compat: str = "mma") -> torch.dtype | None:
    """bf16 when `resolve_precision` says so ("bf16", or "auto" on GPU under compat=mma), None (fp32) otherwise."""
    return torch.bfloat16 if resolve_precision(precision, compat, device.type) == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
