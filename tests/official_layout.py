"""Test helpers: an authors'-layout checkpoint built from our model, and an independent reference forward.

`official_state_dict` renames our tensors to the names the authors' code uses (as listed
in issue 3), splitting timm's fused temporal qkv into their `to_q` / `to_kv`, and adds the
tensors their model carries but never uses (encoder heads, the PreNorm `norm2`s).

`reference_forward` computes MMA-DFER from such a state dict with plain tensor ops,
written from docs/architecture.md, "Model" (token order, fusion, prompt schedule, JAM, MTT) without using
any of our modules, so agreement with `MMADFER` checks the function, not just the names.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

LAYERS = "temporal_net.temporal_transformer.layers"


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our model's tensors under the authors' names (plus their unused tensors)."""
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    enc = {"vision": "image_encoder", "audio": "audio_model"}
    fusion = {
        "vision_down": "image_encoder.temporal_pre.{i}",
        "vision_norm": "image_encoder.temporal_pre_norm.{i}",
        "audio_down": "image_encoder.audio_proj_pre.{i}.0",
        "audio_norm": "image_encoder.audio_proj_pre.{i}.1",
        "vision_up": "image_encoder.temporal_att_post.{i}.0",
        "audio_up": "audio_model.temporal_att_post.{i}.0",
        "vision_gate": "image_encoder.all_gate.{i}",
        "audio_gate": "audio_model.all_gate.{i}",
    }
    dim = model.config.temporal_dim
    inner = model.config.temporal_heads * model.config.temporal_head_dim
    for key, value in ours.items():
        p = key.split(".")
        if p[0] in enc:
            if p[1:3] == ["prompts", "tokens"]:
                out[f"{enc[p[0]]}.learnable_prompts_init"] = value
            elif p[1:3] == ["prompts", "sets"]:
                out[f"{enc[p[0]]}.learnable_prompts_progr.{p[3]}"] = value
            else:
                out[f"{enc[p[0]]}.{'.'.join(p[1:])}"] = value
        elif p[0] == "fusion":
            name = fusion[p[2]].format(i=p[1])
            out[name + (f".{p[3]}" if len(p) > 3 else "")] = value
        elif p[0] == "jam":
            out[f"vision_proj.{p[1]}"] = value
        elif p[0] == "classifier":
            out[f"our_classifier.{p[1]}"] = value
        elif key == "temporal.cls_token":
            out["temporal_net.cls_token"] = value
        elif key == "temporal.pos_embed":
            out["temporal_net.pos_embedding"] = value
        elif p[0] == "temporal":
            layer, rest = p[2], ".".join(p[3:])
            base = f"{LAYERS}.{layer}"
            if rest == "attn.qkv.weight":
                out[f"{base}.0.fn.fn.to_q.weight"] = value[:inner]
                out[f"{base}.0.fn.fn.to_kv.weight"] = value[inner:]
            else:
                table = {"norm1": "0.fn.norm", "attn.proj": "0.fn.fn.to_out.0", "norm2": "1.fn.norm",
                         "mlp.fc1": "1.fn.fn.net.0", "mlp.fc2": "1.fn.fn.net.3"}
                module, leaf = ".".join(p[3:-1]), p[-1]
                out[f"{base}.{table[module]}.{leaf}"] = value
        else:
            raise KeyError(key)
    d = model.config.embed_dim
    out["image_encoder.head.weight"] = torch.randn(12, d)
    out["image_encoder.head.bias"] = torch.randn(12)
    out["audio_model.head.weight"] = torch.randn(1000, d)
    out["audio_model.head.bias"] = torch.randn(1000)
    for layer in range(model.config.temporal_depth):
        for sub in (0, 1):
            out[f"{LAYERS}.{layer}.{sub}.fn.norm2.weight"] = torch.ones(dim)
            out[f"{LAYERS}.{layer}.{sub}.fn.norm2.bias"] = torch.zeros(dim)
    return out


class RecorderMeter:
    """Stands for the authors' metrics recorder pickled into their checkpoints."""

    def __init__(self) -> None:
        self.epoch_losses = np.zeros((25, 2), dtype=np.float32)
        self.current_epoch = 25


RecorderMeter.__module__ = "__main__"


def write_official_checkpoint(path: Path, model) -> Path:
    """An authors'-style file: DataParallel prefixes, optimizer, a pickled recorder object."""
    sd = {f"module.{k}": v for k, v in official_state_dict(model).items()}
    setattr(sys.modules["__main__"], "RecorderMeter", RecorderMeter)
    try:
        torch.save({"epoch": 25, "state_dict": sd, "best_acc": torch.tensor(77.0),
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "recorder": RecorderMeter()}, path)
    finally:
        delattr(sys.modules["__main__"], "RecorderMeter")
    return path


# --------------------------------------------------------------------------- reference computation


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _lin(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _attend(q, k, v, heads):
    b, nq, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(b, nq, -1)


def _vit_block(x, sd, p, heads):
    h = _ln(x, sd, f"{p}.norm1", 1e-6)
    q, k, v = _lin(h, sd, f"{p}.attn.qkv").chunk(3, dim=-1)
    x = x + _lin(_attend(q, k, v, heads), sd, f"{p}.attn.proj")
    h = _lin(F.gelu(_lin(_ln(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    return x + h


def _tanh_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_forward(sd, frames, spec, *, depth, heads, temporal_heads, patch=16):
    """MMA-DFER (official settings) from an authors'-layout state dict, with plain tensor ops."""
    n, t = frames.shape[:2]

    def start(enc, x):
        tok = F.conv2d(x, sd[f"{enc}.patch_embed.proj.weight"], sd[f"{enc}.patch_embed.proj.bias"], stride=patch)
        tok = tok.flatten(2).transpose(1, 2)
        b = x.shape[0]
        seq = [sd[f"{enc}.cls_token"].expand(b, -1, -1), tok, sd[f"{enc}.learnable_prompts_init"].expand(b, -1, -1)]
        return torch.cat(seq, 1) + sd[f"{enc}.pos_embed"], tok.shape[1]

    v, nv = start("image_encoder", frames.flatten(0, 1))
    a, na = start("audio_model", spec)
    sets = sorted(k for k in sd if k.startswith("image_encoder.learnable_prompts_progr."))
    every = depth // len(sets)
    for i in range(depth):
        a = _vit_block(a, sd, f"audio_model.blocks.{i}", heads)
        v = _vit_block(v, sd, f"image_encoder.blocks.{i}", heads)
        vl = _ln(_lin(v, sd, f"image_encoder.temporal_pre.{i}"), sd, f"image_encoder.temporal_pre_norm.{i}", 1e-5)
        al = _ln(_lin(a, sd, f"image_encoder.audio_proj_pre.{i}.0"), sd, f"image_encoder.audio_proj_pre.{i}.1", 1e-5)
        v_in = vl + al.mean(1, keepdim=True).repeat_interleave(t, 0)
        a_in = al + vl.reshape(n, t, vl.shape[1], -1).mean(1).mean(1, keepdim=True)
        v = v + torch.tanh(sd[f"image_encoder.all_gate.{i}"]) * F.gelu(
            _lin(v_in, sd, f"image_encoder.temporal_att_post.{i}.0"))
        a = a + torch.tanh(sd[f"audio_model.all_gate.{i}"]) * F.gelu(
            _lin(a_in, sd, f"audio_model.temporal_att_post.{i}.0"))
        if i % every == 0:
            k = i // every
            for x, offset, enc in ((v, 1 + nv, "image_encoder"), (a, 1 + na, "audio_model")):
                p = sd[f"{enc}.learnable_prompts_progr.{k}"]
                start_row = offset + k * p.shape[0]
                x[:, start_row:start_row + p.shape[0]] += p
    v_cls = _ln(v, sd, "image_encoder.norm", 1e-6)[:, 0].reshape(n, t, -1)
    a_cls = _ln(a, sd, "audio_model.norm", 1e-6)[:, 0]
    x = _lin(v_cls + a_cls[:, None], sd, "vision_proj")
    x = torch.cat([sd["temporal_net.cls_token"].expand(n, -1, -1), x], 1) + sd["temporal_net.pos_embedding"][:, : t + 1]
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith(LAYERS + ".")})
    for layer in layers:
        base = f"{LAYERS}.{layer}"
        h = _ln(x, sd, f"{base}.0.fn.norm", 1e-5)
        q = _lin(h, sd, f"{base}.0.fn.fn.to_q")
        k, val = _lin(h, sd, f"{base}.0.fn.fn.to_kv").chunk(2, dim=-1)
        x = x + _lin(_attend(q, k, val, temporal_heads), sd, f"{base}.0.fn.fn.to_out.0")
        h = _ln(x, sd, f"{base}.1.fn.norm", 1e-5)
        x = x + _lin(_tanh_gelu(_lin(h, sd, f"{base}.1.fn.fn.net.0")), sd, f"{base}.1.fn.fn.net.3")
    return _lin(x[:, 0], sd, "our_classifier")
