"""What the training and evaluation loops share: the loader for a split (and the pool that keeps one
per split for a whole run, so persistent workers start once), moving a batch to the device, the
forward function for the source (shards or cache), and the autocast rule."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

from pipeline.core.config import SOURCES, RunConfig, check_choice, resolve_precision
from pipeline.core.paths import Workspace
from pipeline.store.cache import build_cached_loader
from pipeline.store.stream import build_loader


def make_loader(cfg: RunConfig, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0, num_views: int = 1,
                rank: int = 0, world_size: int = 1, batch_size: int | None = None,
                drop_last: bool = False) -> DataLoader:
    """The streaming (shards) or cached loader for `split`, as cfg.train.source says; `batch_size` is
    per rank (default cfg.train.batch_size), `drop_last` drops training's last partial global batch."""
    source = cfg.train.source
    check_choice("train.source", source, SOURCES)
    build = build_loader if source == "shards" else build_cached_loader
    return build(cfg, ws, split, epoch=epoch, view=view, num_views=num_views, rank=rank, world_size=world_size,
                 batch_size=batch_size, drop_last=drop_last)


class LoaderPool:
    """One loader per (split, view, number of views) for the life of a run: each is built on first use
    and re-iterated after `set_epoch`, so its persistent workers start once, not once per epoch."""

    def __init__(self, cfg: RunConfig, ws: Workspace, *, rank: int = 0, world_size: int = 1,
                 batch_size: int | None = None, drop_last: bool = False) -> None:
        self.cfg, self.ws = cfg, ws
        self.rank, self.world_size = rank, world_size
        self.batch_size = cfg.train.batch_size if batch_size is None else int(batch_size)
        self.drop_last = drop_last
        self._loaders: dict[tuple[str, int, int], DataLoader] = {}

    def get(self, split: str, *, epoch: int = 0, view: int = 0, num_views: int = 1) -> DataLoader:
        """The loader of `split` (view `view` of `num_views` for the test split) set to `epoch`."""
        key = (split, view, num_views)
        if key not in self._loaders:
            self._loaders[key] = make_loader(self.cfg, self.ws, split, epoch=epoch, view=view, num_views=num_views,
                                             rank=self.rank, world_size=self.world_size, batch_size=self.batch_size,
                                             drop_last=self.drop_last)
        loader = self._loaders[key]
        loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        return loader

    def close(self) -> None:
        """Drop the loaders (their workers exit)."""
        self._loaders.clear()


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


def configure_math(device: torch.device, deterministic: bool = False) -> bool:
    """TF32 matmuls and convolutions on an Ampere or newer GPU (fp32 tensors, 10-bit mantissa products,
    fp32 accumulation) unless the run asks to be deterministic; returns whether TF32 is on. The train and
    eval loops both call it, so `mma eval` of a checkpoint computes what the trainer's evaluation did. Both
    switches are set either way (a later run in the same process does not inherit the last one's)."""
    tf32 = device.type == "cuda" and not deterministic and torch.cuda.get_device_capability(device)[0] >= 8
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return tf32
