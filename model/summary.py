"""Parameter accounting of an MMA-DFER configuration: per component, trainable vs frozen.

`summarize_config` builds the network on the meta device (no memory, no init cost), so
even the paper-size model (two ViT-B encoders) is summarised instantly. Besides the counts it
gives each encoder's timm name, geometry and input statistics, and the fusion pairing
(`model.fusion.fusion_pairs`: which block of each encoder every fusion step follows).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from model.config import ModelConfig
from model.families import encoder_norm
from model.prompts import prompt_layout

COMPONENTS = (
    "vision_encoder",
    "vision_pos_embed",
    "vision_prompts",
    "audio_encoder",
    "audio_pos_embed",
    "audio_prompts",
    "fusion",
    "temporal_adaptors",
    "joint_adaptation",
    "temporal_transformer",
    "classifier",
)
from model.mma import MMADFER


def component_of(name: str) -> str:
    """The summary component a parameter name belongs to."""
    head, _, rest = name.partition(".")
    if head in ("vision", "audio"):
        if rest == "pos_embed":
            return f"{head}_pos_embed"
        if rest.startswith("prompts."):
            return f"{head}_prompts"
        return f"{head}_encoder"
    table = {
        "fusion": "fusion",
        "ita": "temporal_adaptors",
        "ita_gates": "temporal_adaptors",
        "jam": "joint_adaptation",
        "jam_audio": "joint_adaptation",
        "temporal": "temporal_transformer",
        "classifier": "classifier",
    }
    if head not in table:
        raise KeyError(f"parameter {name} belongs to no known component")
    return table[head]


def summarize_model(model: nn.Module) -> dict[str, Any]:
    """Counts of an existing model (see `summarize_config`)."""
    per: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        entry = per.setdefault(component_of(name), {"trainable": 0, "frozen": 0})
        entry["trainable" if p.requires_grad else "frozen"] += p.numel()
    ordered = {c: per[c] for c in COMPONENTS if c in per}
    trainable = sum(e["trainable"] for e in ordered.values())
    frozen = sum(e["frozen"] for e in ordered.values())
    cfg: ModelConfig = model.config  # type: ignore[assignment]
    tokens = {"frames": cfg.num_frames}
    encoders: dict[str, Any] = {}
    layouts: dict[str, Any] = {}
    intro = cfg.prompt_introductions if cfg.prompts == "progressive" else 0
    for which in ("vision", "audio"):
        enc = getattr(model, which, None)
        if enc is None:
            continue
        tokens[f"{which}_sequence"] = enc.prompt_offset + enc.num_prompt_tokens
        norm = encoder_norm(cfg, which)
        encoders[which] = {**dataclasses.asdict(enc.geometry), "mean": list(norm.mean), "std": list(norm.std)}
        if enc.prompts is not None:
            layouts[which] = prompt_layout(cfg.num_prompts, intro, enc.depth)
    return {
        "prompt_layout": layouts.get("vision"),
        "prompt_layouts": layouts,
        "config": {
            k: getattr(cfg, k)
            for k in ("image_size", "latent_dim", "num_classes", "modality", "fusion", "temporal", "ita_dim",
                      "prompts", "num_prompts", "prompt_introductions", "vision_encoder", "audio_encoder")
        },
        "encoders": encoders,
        "fusion_pairs": [list(p) for p in model.fusion_pairs()],  # type: ignore[operator]
        "tokens": tokens,
        "trainable_params": trainable,
        "frozen_params": frozen,
        "total_params": trainable + frozen,
        "per_component": ordered,
    }


def summarize_config(cfg: ModelConfig) -> dict[str, Any]:
    """Parameters per component (trainable / frozen) and totals for `cfg`, without allocating weights.

    Keys: prompt_layout (None without prompts; else the vision encoder's tokens and each progressive
    set's entry block and token range, `model.prompts.prompt_layout`), prompt_layouts (per encoder:
    the sets follow each encoder's depth), config, encoders ({role: geometry (`ViTGeometry` fields),
    mean, std}), fusion_pairs ([[vision block, audio block], ...], [] when unimodal), tokens,
    trainable_params, frozen_params, total_params, per_component ({component: {"trainable": n, "frozen": n}}).
    """
    cfg = dataclasses.replace(cfg).validate()
    with torch.device("meta"):
        model = MMADFER(cfg)
    return summarize_model(model)


def _m(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n else "-"


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of `summarize_config`'s result."""
    cfg = summary["config"]
    lines = [
        "MMA-DFER  S={image_size}  d={latent_dim}  C={num_classes}  modality={modality}  fusion={fusion}  "
        "temporal={temporal}  prompts={prompts}".format(**cfg)
        + (f" x{cfg['prompt_introductions']}" if cfg["prompts"] == "progressive" else ""),
        "tokens: " + ", ".join(f"{k}={v}" for k, v in summary["tokens"].items()),
    ]
    for which, enc in summary.get("encoders", {}).items():
        stats = f"mean ({', '.join(f'{m:g}' for m in enc['mean'])}), std ({', '.join(f'{v:g}' for v in enc['std'])})"
        lines.append(f"{which} encoder: {enc['name']} ({enc['family']}): {enc['width']} wide, {enc['depth']} blocks, "
                     f"{enc['heads']} heads, MLP {enc['mlp_hidden']} {enc['act']}, {enc['patch_size'][0]}x"
                     f"{enc['patch_size'][1]} patches on a {enc['grid'][0]}x{enc['grid'][1]} grid"
                     + (f", {enc['reg_tokens']} register tokens" if enc["reg_tokens"] else "")
                     + (", pre-norm" if enc["pre_norm"] else "") + (", layer scale" if enc["layer_scale"] else "")
                     + (", RoPE" if enc["rope"] else "") + f"; input {stats}")
    layouts = list(summary.get("prompt_layouts", {}).items())
    same = len(layouts) == 2 and layouts[0][1] == layouts[1][1]
    for which, layout in layouts[:1] if same else layouts:
        sets = "; ".join(f"{s['tokens'][0]}-{s['tokens'][1] - 1} after block {s['after_block']}"
                         for s in layout["sets"])
        whose = "per encoder" if same else f"in the {which} encoder"
        lines.append(f"prompts: {layout['tokens']} tokens {whose}, {len(layout['sets'])} progressive set(s)"
                     + (f" ({sets})" if sets else ""))
    pairs = summary.get("fusion_pairs") or []
    if pairs:
        if all(v == a for v, a in pairs):
            lines.append(f"fusion pairs: vision block i with audio block i, i = 0..{len(pairs) - 1}")
        else:
            lines.append("fusion pairs (vision block, audio block): " + " ".join(f"({v},{a})" for v, a in pairs))
    lines.append("")
    rows = [(name, e["trainable"], e["frozen"]) for name, e in summary["per_component"].items()]
    rows.append(("total", summary["trainable_params"], summary["frozen_params"]))
    width = max(len(r[0]) for r in rows)
    lines.append(f"{'component':<{width}}  {'trainable':>14}  {'frozen':>14}")
    lines.append("-" * (width + 32))
    for i, (name, tr, fr) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * (width + 32))
        lines.append(f"{name:<{width}}  {tr:>14,}  {fr:>14,}")
    lines.append("")
    lines.append(f"trainable {_m(summary['trainable_params'])} of {_m(summary['total_params'])} parameters")
    return "\n".join(lines)
