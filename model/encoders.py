"""The two frozen encoders: any supported timm ViT (model.families), prompted, driven block by block.

`PromptedEncoder` takes over a built timm model's encoder modules under their timm names
(`cls_token`, `reg_token`, `pos_embed`, `patch_embed`, `pos_drop`, `norm_pre`, `blocks`,
`norm`, `rope`; not its pooling or head), so timm-format checkpoints load by name. Token
order: [class token, register tokens, patches, prompts]. The positional embedding gets one
extra (trainable) row per prompt token after timm's rows (which cover the prefix tokens
too unless the family puts none there, timm's `no_embed_class`). With rotary position
embeddings (EVA-02) the prompts get the identity rotation. The MMA-DFER network runs the
encoders one block at a time (`start`, `block`, `add_prompts`, `finish`) so fusion can act
between blocks; with prompts off, `forward_features` is timm's own `forward_features`.

Frozen: patch embedding, class/register tokens, pre-norm, blocks, final norm. Trainable:
positional embedding (all rows) and the prompts. timm's blocks use fused attention
(`F.scaled_dot_product_attention`). `set_grad_checkpointing` recomputes each block in the
backward pass in training (torch.utils.checkpoint, non-reentrant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.families import ViTGeometry, read_geometry
from model.prompts import PromptTokens

FROZEN_PREFIXES = ("cls_token", "reg_token", "patch_embed.", "norm_pre.", "blocks.", "norm.")
# The timm model's modules and tensors an encoder uses (in timm's registration order).
ADOPTED_TENSORS = ("cls_token", "reg_token", "pos_embed")
ADOPTED_MODULES = ("patch_embed", "pos_drop", "norm_pre", "rope", "blocks", "norm")


class PromptedEncoder(nn.Module):
    """A timm ViT's encoder modules with prompt tokens appended after the patches and a block-wise forward."""

    def __init__(self, vit: nn.Module, name: str, prompts: PromptTokens | None) -> None:
        super().__init__()
        geometry = read_geometry(vit, name)
        self.geometry: ViTGeometry = geometry
        self.embed_dim = geometry.width
        self.num_prefix_tokens = geometry.num_prefix_tokens
        for key, value in vit.named_parameters(recurse=False):
            if key in ADOPTED_TENSORS:
                self.register_parameter(key, value)
        for key, module in vit.named_children():
            if key in ADOPTED_MODULES:
                self.add_module(key, module)
        if "reg_token" not in self._parameters:
            self.reg_token = None
        if "rope" not in self._modules:
            self.rope = None
        self.prompts = prompts
        self.num_prompt_tokens = prompts.num_prompts if prompts is not None else 0
        self.grad_checkpointing = False
        # timm's rows (replaced by a checkpoint) keep timm's init; prompt rows are std-1 normal.
        with torch.no_grad():
            timm_rows = self.pos_embed.detach()
            extra = torch.randn(1, self.num_prompt_tokens, self.embed_dim, device=timm_rows.device)
            self.pos_embed = nn.Parameter(torch.cat([timm_rows, extra], dim=1))
        prefix_rows = self.num_prefix_tokens if geometry.pos_embed_prefix else 0
        assert self.pos_embed.shape[1] == prefix_rows + self.num_patches + self.num_prompt_tokens
        self.freeze_backbone()

    # ------------------------------------------------------------------ structure

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)  # type: ignore[return-value]

    @property
    def pos_prefix_rows(self) -> int:
        """Rows of pos_embed before the patch grid (the prefix tokens', unless the family has none)."""
        return self.num_prefix_tokens if self.geometry.pos_embed_prefix else 0

    @property
    def prompt_offset(self) -> int:
        """Index of the first prompt token in the sequence."""
        return self.num_prefix_tokens + self.num_patches

    def freeze_backbone(self, *, freeze_pos_embed: bool = False) -> None:
        """Patch embed, prefix tokens, pre-norm, blocks and final norm never train (pos_embed optionally)."""
        for name, p in self.named_parameters():
            frozen = name.startswith(FROZEN_PREFIXES) or (freeze_pos_embed and name == "pos_embed")
            p.requires_grad_(not frozen)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (training only)."""
        self.grad_checkpointing = bool(enable)

    # ------------------------------------------------------------------ block-wise forward

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen patch-embedding conv: (B, C, H, W) -> (B, N, D)."""
        return self.patch_embed(x)

    def start(self, tokens: torch.Tensor) -> torch.Tensor:
        """[prefix, patch tokens, prompts] + positional embedding, then the pre-norm: (B, N, D) -> (B, L, D)."""
        b = tokens.shape[0]
        dtype = torch.promote_types(tokens.dtype, self.pos_embed.dtype)  # cached fp16 / autocast bf16 -> fp32
        prefix = [t.expand(b, -1, -1).to(dtype) for t in (self.cls_token, self.reg_token) if t is not None]
        body = [tokens.to(dtype)]
        if self.prompts is not None:
            body.append(self.prompts.initial(b).to(dtype))
        if self.geometry.pos_embed_prefix:
            x = torch.cat(prefix + body, dim=1) + self.pos_embed
        else:
            x = torch.cat(prefix + [torch.cat(body, dim=1) + self.pos_embed], dim=1)
        return self.norm_pre(self.pos_drop(x))

    def _rope(self) -> torch.Tensor:
        """The rotary embedding of the patches, with identity rows (sin 0, cos 1) for the prompt tokens."""
        emb = self.rope.get_embed()  # type: ignore[union-attr]
        if self.num_prompt_tokens:
            half = emb.shape[-1] // 2
            ident = torch.cat([emb.new_zeros(self.num_prompt_tokens, half), emb.new_ones(self.num_prompt_tokens, half)],
                              dim=-1)
            emb = torch.cat([emb, ident], dim=0)
        return emb

    def block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block `i` on the token sequence (recomputed in backward when checkpointing in training)."""
        blk = self.blocks[i]
        kwargs = {"rope": self._rope()} if self.rope is not None else {}
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False, **kwargs)
        return blk(x, **kwargs)

    def add_prompts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Progressive prompt update scheduled after block `layer` (no-op otherwise)."""
        if self.prompts is None:
            return x
        return self.prompts.update(layer, x, self.prompt_offset)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, class token: (B, L, D) -> (B, D)."""
        return self.norm(x)[:, 0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder alone (no fusion): input -> every token after the final norm (B, L, D)."""
        h = self.start(self.embed_patches(x))
        for i in range(self.depth):
            h = self.add_prompts(i, self.block(i, h))
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder alone (no fusion): input -> class token (B, D)."""
        return self.forward_features(x)[:, 0]


def resize_pos_embed(
    posemb: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """Resize the grid rows of a (1, prefix + h*w, D) positional embedding bicubically.

    The prefix (class/register token) rows are kept as they are; the grid is interpolated with
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
