"""Test helpers: tiny encoder files laid out as the Hugging Face hub publishes them.

- `timm_encoder`: a tiny timm model of an architecture and its state dict (random class token and
  positions, so a mix-up of rows shows);
- `save_safetensors`: a state dict as timm's hub repositories hold it (`model.safetensors`);
- `to_openai_clip`: a timm CLIP image tower in OpenAI's names, with a (tiny) text tower and the
  projection alongside, as `timm/vit_base_patch16_clip_224.openai`'s `pytorch_model.bin` holds it;
- `audiomae_port`: a bare state dict in timm names with a 64 x 8 position grid, 1 input channel,
  no decoder: the layout of `gaunernst/vit_base_patch16_1024_128.audiomae_as2m`'s `pytorch_model.bin`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

def tiny_geometry(name: str, preset_name: str = "tiny") -> dict:
    """timm kwargs giving checkpoint `name` of `mma weights list` the geometry it must have under a preset."""
    from pipeline.weights.check import expected_for_weights
    from pipeline.weights.registry import weight_spec

    expected = expected_for_weights(name, preset_name)
    geo = expected.audio if weight_spec(name).role == "audio" else expected.vision
    return {"embed_dim": geo.width, "depth": geo.depth, "num_heads": geo.width // 16, "patch_size": geo.patch_size}


def timm_encoder(arch: str, *, img_size=224, in_chans: int = 3, seed: int = 0, **kw):
    """(model, state dict) of a timm `arch` (tiny: `kw` as from `tiny_geometry`) with random class token / positions."""
    torch.manual_seed(seed)
    vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans,
                            **kw).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()
        vit.cls_token.normal_()
    return vit, {k: v.clone() for k, v in vit.state_dict().items()}


def save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    return Path(path)


_TO_OPENAI = ((r"^cls_token$", "class_embedding"), (r"^pos_embed$", "positional_embedding"),
              (r"^patch_embed\.proj\.", "conv1."), (r"^norm_pre\.", "ln_pre."), (r"^norm\.", "ln_post."),
              (r"^blocks\.(\d+)\.norm(\d)\.", r"transformer.resblocks.\1.ln_\2."),
              (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
              (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.resblocks.\1.attn.out_proj."),
              (r"^blocks\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
              (r"^blocks\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."))


def to_openai_clip(sd: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """A timm CLIP image tower's state dict in OpenAI's CLIP names, plus a text tower and the projections."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in sd.items():
        name = key
        for pattern, repl in _TO_OPENAI:
            name = re.sub(pattern, repl, name)
        if name == "class_embedding":
            value = value.reshape(-1)
        elif name == "positional_embedding":
            value = value[0]
        out["visual." + name] = value
    width = sd["cls_token"].shape[-1]
    out["visual.proj"] = torch.randn(width, 32)
    out["positional_embedding"] = torch.randn(77, 32)  # the text tower's, which shares names without `visual.`
    out["token_embedding.weight"] = torch.randn(100, 32)
    out["transformer.resblocks.0.ln_1.weight"] = torch.ones(32)
    out["ln_final.weight"] = torch.ones(32)
    out["text_projection"] = torch.randn(32, 32)
    out["logit_scale"] = torch.tensor(4.6)
    return out


def audiomae_port(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny AudioMAE as the timm hub port stores it: a bare OrderedDict, 1024 x 128 input (64 x 8 grid)."""
    _, sd = timm_encoder("vit_base_patch16_224", img_size=(1024, 128), in_chans=1, seed=seed,
                         **tiny_geometry("audiomae"))
    torch.save(OrderedDict(sd), path)
    return sd
