"""Temporal modelling: the Multimodal Temporal Transformer (MTT) and the intermediate temporal adaptors (ITA).

MTT (official): a CLS token (std-1 init) is prepended to the (n, T, 512) joint sequence,
learnable temporal positions (T+1 rows, std-1 init) are added, then pre-norm transformer
blocks (q/k/v projections without bias, output projection with bias, MLP with
tanh-approximated GELU, LayerNorm eps 1e-5, no dropout, no final norm); output = CLS.
The blocks are timm `Block`s; the attention is timm's (fused SDPA), with the head width
set explicitly so heads x head_dim may differ from the model width.

ITA (ablation, paper Table 2): after a fusion block, temporal self-attention over the T
frame class tokens of a video. It works in an input space of width `in_dim` (the fusion
bottleneck's latent width when fused inside a Fusion Bottleneck, the encoder width
otherwise) and attends at width `width`; projections in/out exist only when the two
differ (so ITA-128 inside a d=128 bottleneck adds no projection layers). It returns the
update (n, T, in_dim); the caller fuses it back.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block
from torch import nn


class TemporalTransformer(nn.Module):
    """CLS + temporal positions + pre-norm blocks over a (n, T, dim) sequence; returns (n, dim)."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int, num_frames: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_frames + 1, dim))
        blocks = []
        for _ in range(depth):
            blk = Block(
                dim,
                num_heads=heads,
                mlp_ratio=mlp_dim / dim,
                qkv_bias=False,
                proj_bias=True,
                act_layer=partial(nn.GELU, approximate="tanh"),
                norm_layer=nn.LayerNorm,
            )
            blk.attn = Attention(dim, num_heads=heads, attn_head_dim=head_dim, qkv_bias=False, proj_bias=True)
            if blk.mlp.fc1.out_features != mlp_dim:
                blk.mlp = Mlp(dim, mlp_dim, act_layer=partial(nn.GELU, approximate="tanh"))
            blocks.append(blk)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        if t + 1 > self.pos_embed.shape[1]:
            raise ValueError(f"temporal transformer built for {self.pos_embed.shape[1] - 1} frames, got {t}")
        x = torch.cat([self.cls_token.expand(n, -1, -1).to(x.dtype), x], dim=1) + self.pos_embed[:, : t + 1]
        for blk in self.blocks:
            x = blk(x)
        return x[:, 0]


class TemporalAdaptor(nn.Module):
    """Temporal self-attention over per-frame class tokens: (n, T, in_dim) -> update (n, T, in_dim)."""

    def __init__(self, in_dim: int, width: int, heads: int, num_frames: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, num_heads=heads, attn_head_dim=max(1, width // heads), qkv_bias=True)
        self.up = nn.Linear(width, in_dim) if width != in_dim else nn.Identity()

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        t = cls.shape[1]
        z = self.down(cls) + self.pos_embed[:, :t]
        return self.up(self.attn(self.norm(z)))


def ita_heads(width: int, head_dim: int) -> int:
    """Heads of an ITA block of this width (at least one)."""
    return max(1, width // head_dim)
