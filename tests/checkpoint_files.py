"""Test helpers: small synthetic checkpoints of every kind `mma` takes, with the real key layouts.

- `mae_file`: an MAE pre-training file as MAE code writes it (`{'model': ..., 'args': Namespace}`,
  decoder and mask token included), any width/depth/input channels;
- `vision_file` / `audio_file`: MAE-Face- and AudioMAE-shaped files at the tiny preset's geometry
  (width 64, depth 4; 224 px faces -> 14x14 grid, 1024x128 spectrograms -> 64x8 grid);
- `timm_file`: any timm architecture's state dict saved bare as timm saves one (timm names),
  width 32 and depth 2 unless told;
- `mma_run_file`: a checkpoint as `mma train` writes it, from a tiny model;
- `authors_file`: a tiny model saved in the authors' layout (see official_layout.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from official_layout import write_official_checkpoint
from timm.models.vision_transformer import VisionTransformer


def mae_file(path, *, img_size, in_chans, dim=64, depth=4, heads=4, decoder=True, extra=None):
    """An MAE pre-training checkpoint as MAE code writes it: {'model': ..., 'args': Namespace, ...}."""
    vit = VisionTransformer(img_size=img_size, patch_size=16, in_chans=in_chans, embed_dim=dim, depth=depth,
                            num_heads=heads, num_classes=0)
    sd = {k: v.clone() for k, v in vit.state_dict().items()}
    with torch.no_grad():
        sd["pos_embed"] = torch.randn_like(sd["pos_embed"])
        sd["cls_token"] = torch.randn_like(sd["cls_token"])
    if decoder:
        sd["mask_token"] = torch.zeros(1, 1, 32)
        sd["decoder_embed.weight"] = torch.randn(32, dim)
        sd["decoder_blocks.0.norm1.weight"] = torch.ones(32)
    sd.update(extra or {})
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-3), "epoch": 399}, path)
    return sd


def vision_file(path: Path, **kw) -> Path:
    """A MAE-Face-shaped encoder file at the tiny preset's width and depth (224 px, 14x14 grid)."""
    mae_file(path, img_size=224, in_chans=3, **kw)
    return Path(path)


def audio_file(path: Path, **kw) -> Path:
    """An AudioMAE-shaped encoder file at the tiny preset's width and depth (1024x128, 64x8 grid)."""
    mae_file(path, img_size=(1024, 128), in_chans=1, **kw)
    return Path(path)


def timm_file(path: Path, name: str, *, in_chans: int = 3, img_size=224, **kw) -> dict:
    """`name`'s timm state dict (random, seeded) saved bare at `path` with torch.save; returns it."""
    import timm

    args = dict(embed_dim=32, depth=2, num_heads=2, **kw)
    torch.manual_seed(0)
    vit = timm.create_model(name.partition(".")[0], pretrained=False, num_classes=0, in_chans=in_chans,
                            img_size=img_size, **args)
    sd = {k: v.clone().contiguous() for k, v in vit.state_dict().items()}
    with torch.no_grad():
        for key in ("pos_embed", "cls_token", "reg_token"):
            if key in sd:
                sd[key] = torch.randn_like(sd[key])
    torch.save(sd, path)
    return sd


def tiny_model(num_classes: int = 4):
    from model import build_model
    from pipeline.core.config import tiny

    return build_model(dataclasses.replace(tiny().model, num_classes=num_classes))


def mma_run_file(path: Path, *, dataset: str = "synth", fold: int = 2) -> Path:
    """A checkpoint as `mma train` writes it (trainable tensors, run config, encoder sources)."""
    from model.checkpoint import save_model_checkpoint
    from pipeline.core.config import tiny, to_dict

    cfg = tiny()
    cfg.dataset, cfg.fold = dataset, fold
    none = {"path": None, "sha256": None}
    save_model_checkpoint(path, tiny_model(), to_dict(cfg), {"vision": dict(none), "audio": dict(none)},
                          extra={"epoch": 3})
    return Path(path)


def authors_file(path: Path) -> Path:
    """A tiny model saved in the authors' layout (DataParallel prefixes, optimizer, pickled recorder)."""
    return write_official_checkpoint(Path(path), tiny_model(num_classes=11))
