"""Typed configuration of the MMA-DFER network (architecture and ablation knobs).

Defaults reproduce the paper's final model (docs/architecture.md, "Model"): ViT-B/16 encoders, S=160,
Fusion Bottleneck with d=128 after every block, 6 prompt tokens per encoder introduced
progressively twice (3 per introduction, as the authors' code sizes them), one-layer Multimodal
Temporal Transformer (512 wide, 8 heads). A unimodal model (modality vision|audio) is the frozen
encoder and a linear classifier only: its config must say prompts, fusion and temporal "none".
"""

from __future__ import annotations

from model.errors import ModelConfigError

# The authors' sizing (their n_progr): each introduction of progressive prompts brings 3 tokens.
TOKENS_PER_INTRODUCTION = 3

from dataclasses import dataclass

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

    # encoder geometry (ViT-B/16 for both encoders by default)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    drop_path: float = 0.1
    audio_frames: int = 512
    audio_mel_bins: int = 128
    # positional-embedding grid of the pre-trained checkpoints (resized on load)
    audio_ckpt_grid_t: int = 64
    audio_ckpt_grid_f: int = 8

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
        if self.image_size % self.patch_size:
            raise ModelConfigError(
                f"model.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ModelConfigError(f"model.embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.num_classes < 2:
            raise ModelConfigError(f"model.num_classes={self.num_classes} must be at least 2")
        if self.prompts == "progressive" and not 0 < self.prompt_introductions <= self.depth:
            raise ModelConfigError(
                f"model.prompt_introductions={self.prompt_introductions} must be in 1..depth={self.depth} "
                "(use prompts='none' for no prompts)"
            )
        if self.prompts != "none" and self.num_prompts < 1:
            raise ModelConfigError(f"model.num_prompts={self.num_prompts} must be at least 1 (or use prompts='none')")
        if self.fusion in ("mult", "mult-concat") and self.mult_dim % self.mult_heads:
            raise ModelConfigError(f"model.mult_dim={self.mult_dim} is not divisible by mult_heads={self.mult_heads}")
        positive = ("latent_dim", "depth", "num_frames", "ita_dim", "ita_head_dim", "temporal_dim",
                    "temporal_depth", "temporal_heads", "temporal_head_dim", "temporal_mlp_dim")
        for name in positive:
            if getattr(self, name) < 1:
                raise ModelConfigError(f"model.{name}={getattr(self, name)} must be at least 1")
        for name, size in (("audio_frames", self.audio_frames), ("audio_mel_bins", self.audio_mel_bins)):
            if size % self.patch_size:
                raise ModelConfigError(f"model.{name}={size} is not a multiple of patch_size={self.patch_size}")
        return self
