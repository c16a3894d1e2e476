"""Typed configuration of the MMA-DFER network (architecture and ablation knobs).

Each encoder is a timm model named in `vision_encoder` / `audio_encoder` (model.families); its
geometry comes from the built timm model, and the geometry fields here (`embed_dim`, `depth`,
`num_heads`, `mlp_ratio`, `patch_size` for both encoders, `vision_depth`, `audio_embed_dim`, ...
for one) are only overrides passed to timm (None: the architecture's own; the tiny preset
shrinks ViT-B this way). `vision_mean`/`vision_std`/`audio_mean`/`audio_std` are the input
statistics; None means the encoder's own (`model.families.encoder_norm`), and `resolved()`
writes them in, so a run's config.json records what its inputs were normalised with.

Defaults reproduce the paper's final model (docs/architecture.md, "Model"): MAE-Face and AudioMAE
ViT-B/16 encoders, S=160,
Fusion Bottleneck with d=128 after every block, 6 prompt tokens per encoder introduced
progressively twice (3 per introduction, as the authors' code sizes them), one-layer Multimodal
Temporal Transformer (512 wide, 8 heads). A unimodal model (modality vision|audio) is the frozen
encoder and a linear classifier only: its config must say prompts, fusion and temporal "none".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.errors import ModelConfigError
from model.families import (
    DEFAULT_AUDIO_ENCODER,
    DEFAULT_VISION_ENCODER,
    ENCODER_ROLES,
    encoder_geometry,
    encoder_norm,
    family_of,
)

# The authors' sizing (their n_progr): each introduction of progressive prompts brings 3 tokens.
TOKENS_PER_INTRODUCTION = 3

FUSION_KINDS = ("bottleneck", "add", "mult", "mult-concat", "none")
TEMPORAL_KINDS = ("mtt", "ita", "both", "none")
PROMPT_KINDS = ("none", "static", "progressive")
MODALITIES = ("both", "vision", "audio")


@dataclass
class ModelConfig:
    """Everything that determines the network's function and parameter shapes."""

    # task
    image_size: int = 160
    latent_dim: int = 128
    num_classes: int = 7
    num_frames: int = 16
    modality: str = "both"

    # encoders: timm names ARCH[.TAG] (model.families), MAE-Face and AudioMAE ViT-B/16 by default
    vision_encoder: str = DEFAULT_VISION_ENCODER
    audio_encoder: str = DEFAULT_AUDIO_ENCODER
    # geometry overrides passed to timm (None: the architecture's own): both encoders, then per encoder
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    patch_size: int | None = None
    vision_embed_dim: int | None = None
    vision_depth: int | None = None
    vision_num_heads: int | None = None
    audio_embed_dim: int | None = None
    audio_depth: int | None = None
    audio_num_heads: int | None = None
    drop_path: float = 0.1
    audio_frames: int = 512
    audio_mel_bins: int = 128
    # positional-embedding grid of the pre-trained checkpoints (resized on load)
    audio_ckpt_grid_t: int = 64
    audio_ckpt_grid_f: int = 8
    # input statistics (None: the encoder's own, see `resolved`); audio is fed as (x - mean) / (2 * std)
    vision_mean: tuple[float, float, float] | None = None
    vision_std: tuple[float, float, float] | None = None
    audio_mean: float | None = None
    audio_std: float | None = None

    # prompts
    prompts: str = "progressive"
    num_prompts: int = 6
    prompt_introductions: int = 2

    # fusion
    fusion: str = "bottleneck"
    mult_heads: int = 2
    mult_dim: int = 128
    mult_mlp_ratio: float = 4.0  # MLP of the mult-concat transformer block

    # temporal modelling
    temporal: str = "mtt"
    ita_dim: int = 128
    ita_head_dim: int = 64  # ITA heads = max(1, ita_dim // ita_head_dim)
    temporal_dim: int = 512
    temporal_depth: int = 1
    temporal_heads: int = 8
    temporal_head_dim: int = 64
    temporal_mlp_dim: int = 1024

    def validate(self) -> "ModelConfig":
        """Raise ModelConfigError naming the field when a value is outside what the model supports."""
        choices = {
            "fusion": FUSION_KINDS,
            "temporal": TEMPORAL_KINDS,
            "prompts": PROMPT_KINDS,
            "modality": MODALITIES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ModelConfigError(f"model.{name}={value!r} is not one of {', '.join(allowed)}")
        if self.modality != "both":
            extra = [f"{name}={getattr(self, name)!r}" for name in ("prompts", "fusion", "temporal")
                     if getattr(self, name) != "none"]
            if extra:
                raise ModelConfigError(
                    f"model.modality={self.modality!r} is the frozen encoder with a linear classifier (Table 5): "
                    f"set model.prompts, model.fusion and model.temporal to 'none' (got {', '.join(extra)})"
                )
        if self.num_classes < 2:
            raise ModelConfigError(f"model.num_classes={self.num_classes} must be at least 2")
        if self.prompts != "none" and self.num_prompts < 1:
            raise ModelConfigError(f"model.num_prompts={self.num_prompts} must be at least 1 (or use prompts='none')")
        if self.fusion in ("mult", "mult-concat") and self.mult_dim % self.mult_heads:
            raise ModelConfigError(f"model.mult_dim={self.mult_dim} is not divisible by mult_heads={self.mult_heads}")
        positive = ("latent_dim", "num_frames", "ita_dim", "ita_head_dim", "temporal_dim",
                    "temporal_depth", "temporal_heads", "temporal_head_dim", "temporal_mlp_dim")
        overrides = ("embed_dim", "depth", "num_heads", "patch_size", *(f"{w}_{k}" for w in ENCODER_ROLES
                                                                       for k in ("embed_dim", "depth", "num_heads")))
        for name in positive + overrides:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ModelConfigError(f"model.{name}={value} must be at least 1")
        for which in self.encoders():
            self._validate_encoder(which)
        return self

    def encoders(self) -> tuple[str, ...]:
        """The encoder roles this configuration builds ("vision", "audio")."""
        return {"both": ENCODER_ROLES, "vision": ("vision",), "audio": ("audio",)}[self.modality]

    def _validate_encoder(self, which: str) -> None:
        name = getattr(self, f"{which}_encoder")
        field = f"model.{which}_encoder"
        if not isinstance(name, str) or not name:
            raise ModelConfigError(f"{field}={name!r} must be a timm model name")
        family_of(name, field)
        geo = encoder_geometry(self, which)
        ph, pw = geo.patch_size
        sizes = ({"image_size": (self.image_size, self.image_size)} if which == "vision"
                 else {"audio_frames": (self.audio_frames, self.audio_frames),
                       "audio_mel_bins": (self.audio_mel_bins, self.audio_mel_bins)})
        for key, (h, w) in sizes.items():
            if h % ph or w % pw:
                raise ModelConfigError(f"model.{key}={h} is not a multiple of the {which} encoder's "
                                       f"{ph} px patches ({name})")
        if self.modality == "both" and self.prompts == "progressive" and not 0 < self.prompt_introductions <= geo.depth:
            raise ModelConfigError(
                f"model.prompt_introductions={self.prompt_introductions} must be in 1..{geo.depth} (the {which} "
                f"encoder's depth; use prompts='none' for no prompts)"
            )
        norm = encoder_norm(self, which)
        if any(s <= 0 for s in norm.std):
            raise ModelConfigError(f"model.{which}_std={norm.std if which == 'vision' else norm.std[0]} "
                                   "must be positive")

    def resolved(self) -> "ModelConfig":
        """A validated copy with the input statistics of every built encoder filled in (see the module docstring)."""
        out = dataclasses.replace(self).validate()
        for which in out.encoders():
            norm = encoder_norm(out, which)
            if which == "vision":
                out.vision_mean, out.vision_std = norm.mean, norm.std  # type: ignore[assignment]
            else:
                out.audio_mean, out.audio_std = norm.mean[0], norm.std[0]
        return out
