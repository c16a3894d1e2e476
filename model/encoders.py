"""The two frozen ViT encoders, built on timm's VisionTransformer, driven block by block.

`PromptedViT` is a timm `VisionTransformer` (class token, no head) whose positional
embedding has extra rows for the prompt tokens; token order is [CLS, patches, prompts].
The MMA-DFER network runs the encoders one block at a time (`start`, `blocks[i]`,
`add_prompts`, `finish`) so fusion can act between blocks. timm's blocks use fused
attention (`F.scaled_dot_product_attention`).

Frozen: patch embedding, class token, blocks, final norm. Trainable: positional embedding
(all rows) and the prompts. Parameter names follow timm (`cls_token`, `pos_embed`,
`patch_embed.proj`, `blocks.N.*`, `norm`), so MAE-format checkpoints load by name.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model.config import ModelConfig
from model.prompts import PromptTokens

FROZEN_PREFIXES = ("cls_token", "patch_embed.", "blocks.", "norm.")


class PromptedViT(VisionTransformer):
    """timm ViT with prompt tokens appended after the patches and a block-wise forward."""

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int],
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        patch_size: int,
        drop_path: float,
        prompts: PromptTokens | None,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            drop_path_rate=drop_path,
        )
        self.prompts = prompts
        self.num_prompt_tokens = prompts.num_prompts if prompts is not None else 0
        n_patch = self.patch_embed.num_patches
        # Rows [CLS, patches] keep timm's init (replaced by a checkpoint); prompt rows are std-1 normal.
        with torch.no_grad():
            grid_rows = self.pos_embed.detach()
            extra = torch.randn(1, self.num_prompt_tokens, embed_dim, device=grid_rows.device)
            self.pos_embed = nn.Parameter(torch.cat([grid_rows, extra], dim=1))
        assert self.pos_embed.shape[1] == 1 + n_patch + self.num_prompt_tokens
        self.freeze_backbone()

    # ------------------------------------------------------------------ structure

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)  # type: ignore[return-value]

    @property
    def prompt_offset(self) -> int:
        """Index of the first prompt token in the sequence."""
        return 1 + self.num_patches

    def freeze_backbone(self, *, freeze_pos_embed: bool = False) -> None:
        """Patch embed, class token, blocks and final norm never train (pos_embed optionally)."""
        for name, p in self.named_parameters():
            frozen = name.startswith(FROZEN_PREFIXES) or (freeze_pos_embed and name == "pos_embed")
            p.requires_grad_(not frozen)

    # ------------------------------------------------------------------ block-wise forward

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen patch-embedding conv: (B, C, H, W) -> (B, N, D)."""
        return self.patch_embed(x)

    def start(self, tokens: torch.Tensor) -> torch.Tensor:
        """[CLS, patch tokens, prompts] + positional embedding: (B, N, D) -> (B, 1+N+P, D)."""
        b = tokens.shape[0]
        dtype = torch.promote_types(tokens.dtype, self.pos_embed.dtype)  # cached fp16 / autocast bf16 -> fp32
        parts = [self.cls_token.expand(b, -1, -1).to(dtype), tokens.to(dtype)]
        if self.prompts is not None:
            parts.append(self.prompts.initial(b).to(dtype))
        x = torch.cat(parts, dim=1) + self.pos_embed
        return self.pos_drop(x)

    def add_prompts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Progressive prompt update scheduled after block `layer` (no-op otherwise)."""
        if self.prompts is None:
            return x
        return self.prompts.update(layer, x, self.prompt_offset)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, class token: (B, L, D) -> (B, D)."""
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder alone (no fusion): input -> class token (replaces timm's forward)."""
        h = self.start(self.embed_patches(x))
        for i, blk in enumerate(self.blocks):
            h = self.add_prompts(i, blk(h))
        return self.finish(h)


def _geometry(cfg: ModelConfig) -> dict:
    """The ViT geometry both encoders share (width, depth, heads, MLP ratio, patch, drop-path)."""
    return dict(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        drop_path=cfg.drop_path,
    )


def build_vision_encoder(cfg: ModelConfig, prompts: PromptTokens | None) -> PromptedViT:
    """MAE-Face-shaped encoder at S x S (RGB, 16 px patches)."""
    return PromptedViT(img_size=cfg.image_size, in_chans=3, prompts=prompts, **_geometry(cfg))


def build_audio_encoder(cfg: ModelConfig, prompts: PromptTokens | None) -> PromptedViT:
    """AudioMAE-shaped encoder on a (1, frames, mel bins) spectrogram, non-overlapping patches."""
    return PromptedViT(img_size=(cfg.audio_frames, cfg.audio_mel_bins), in_chans=1, prompts=prompts, **_geometry(cfg))


def resize_pos_embed(
    posemb: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """Resize the grid rows of a (1, prefix + h*w, D) positional embedding bicubically.

    The prefix (class token) rows are kept as they are; the grid is interpolated with
    align_corners=False and no antialiasing (what timm's `resize_pos_embed` does).
    """
    prefix, grid = posemb[:, :num_prefix], posemb[:, num_prefix:]
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    d = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.reshape(1, old_grid[0], old_grid[1], d).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(dtype)
    return torch.cat([prefix, grid], dim=1)
