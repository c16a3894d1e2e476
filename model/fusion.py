"""Cross-modal fusion applied after each encoder block: Fusion Bottleneck and the ablation variants.

Every variant maps (V, A) -> (V', A') where V is (n*T, Lv, Dv) (the video's T frames
stacked batch-wise, frame-major per video) and A is (n, La, Da); the two encoders' widths
Dv and Da may differ (every projection is sized per modality; `add` needs Dv = Da). Each adds its output
through a tanh gate per modality initialised to 0, so at initialisation V' = V, A' = A
and the encoders compute exactly their unimodal functions.

- `bottleneck` (official, paper §3.3): V^ = LN(Linear Dv->d (V)), A^ = LN(Linear Da->d (A));
  L_a = mean of A^ over all audio tokens, L_v = mean of V^ over all frames and tokens;
  V += tanh(g_v) GELU(Linear d->Dv (V^ + L_a)), A += tanh(g_a) GELU(Linear d->Da (A^ + L_v)).
  An intermediate temporal adaptor (ITA) fused inside the bottleneck adds its update of
  the frames' class tokens (in the latent space) to every token of that frame before
  the expansion.
- `add`: no compression or expansion: V += tanh(g_v) mean(A), A += tanh(g_a) mean(V).
- `mult`: two cross-attention blocks (vision queries attend to the video's audio tokens,
  audio queries to all the video's frame tokens), `heads` heads of total width `width`.
- `mult-concat`: one transformer block (width `width`) over the concatenated tokens of the
  video's frames and its audio; the mean of its output is expanded and added to every token.

Fusion acts after a pair of blocks (`fusion_pairs`): block i of each encoder when the depths are
equal; otherwise block i of the shallower (depth La) with block round((i+1) * Lb / La) - 1 of
the deeper (depth Lb, rounded half up), so there are La fusion blocks and both encoders' last
blocks meet in the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from model.errors import ModelConfigError
from model.temporal import TemporalAdaptor


class GatedFusion(nn.Module):
    """Base class: the two scalar tanh gates (shape (1,), init 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.vision_gate = nn.Parameter(torch.zeros(1))
        self.audio_gate = nn.Parameter(torch.zeros(1))


class FusionBottleneck(GatedFusion):
    """Compress both modalities to width d, exchange pooled summaries, expand, gated residual."""

    def __init__(self, vision_dim: int, audio_dim: int, latent: int) -> None:
        super().__init__()
        self.vision_down = nn.Linear(vision_dim, latent)
        self.vision_norm = nn.LayerNorm(latent)
        self.audio_down = nn.Linear(audio_dim, latent)
        self.audio_norm = nn.LayerNorm(latent)
        self.vision_up = nn.Linear(latent, vision_dim)
        self.audio_up = nn.Linear(latent, audio_dim)

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, n: int, ita: TemporalAdaptor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bt, lv, _ = v.shape
        t = bt // n
        vh = self.vision_norm(self.vision_down(v))  # (nT, Lv, d)
        ah = self.audio_norm(self.audio_down(a))  # (n, La, d)
        d = vh.shape[-1]
        vh4 = vh.view(n, t, lv, d)
        l_a = ah.mean(1)  # (n, d): all audio tokens, CLS and prompts included
        l_v = vh4.mean(1).mean(1)  # (n, d): over frames, then over tokens
        zv = vh4 + l_a[:, None, None, :]
        if ita is not None:
            zv = zv + ita(vh4[:, :, 0])[:, :, None, :]
        za = ah + l_v[:, None, :]
        u_v = F.gelu(self.vision_up(zv.reshape(bt, lv, d)))
        u_a = F.gelu(self.audio_up(za))
        return v + torch.tanh(self.vision_gate) * u_v, a + torch.tanh(self.audio_gate) * u_a


class AddFusion(GatedFusion):
    """Pooled features of the other modality added in the original space (no compression)."""

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, n: int, ita: TemporalAdaptor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bt, lv, dim = v.shape
        t = bt // n
        a_mean = a.mean(1)  # (n, D)
        v_mean = v.view(n, t, lv, dim).mean(1).mean(1)  # (n, D)
        v_new = v.view(n, t, lv, dim) + torch.tanh(self.vision_gate) * a_mean[:, None, None, :]
        a_new = a + torch.tanh(self.audio_gate) * v_mean[:, None, :]
        return v_new.view(bt, lv, dim), a_new


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention (fused SDPA): queries from x, keys/values from context."""

    def __init__(self, dim: int, width: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"cross-attention width {width} is not divisible by {heads} heads")
        context_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(context_dim)
        self.q = nn.Linear(dim, width)
        self.kv = nn.Linear(context_dim, 2 * width)
        self.proj = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """x: (B, Lq, dim); context: (B / repeat, Lk, context_dim), each row shared by `repeat` consecutive queries."""
        b, lq, _ = x.shape
        h = self.heads
        q = self.q(self.norm_q(x)).view(b, lq, h, -1).transpose(1, 2)
        kv = self.kv(self.norm_kv(context))
        if repeat > 1:
            kv = kv.repeat_interleave(repeat, dim=0)
        lk = kv.shape[1]
        k, val = kv.view(b, lk, 2, h, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, val)
        return self.proj(out.transpose(1, 2).reshape(b, lq, -1))


class MultFusion(GatedFusion):
    """MulT-style: audio->vision and vision->audio cross-attention, outputs added to each branch."""

    def __init__(self, vision_dim: int, audio_dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.vision_from_audio = CrossAttention(vision_dim, width, heads, context_dim=audio_dim)
        self.audio_from_vision = CrossAttention(audio_dim, width, heads, context_dim=vision_dim)

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, n: int, ita: TemporalAdaptor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bt, lv, dim = v.shape
        t = bt // n
        dv = self.vision_from_audio(v, a, repeat=t)
        da = self.audio_from_vision(a, v.reshape(n, t * lv, dim))
        return v + torch.tanh(self.vision_gate) * dv, a + torch.tanh(self.audio_gate) * da


class MultConcatFusion(GatedFusion):
    """One transformer block over [all frame tokens, audio tokens] of a video; pooled output added back."""

    def __init__(self, vision_dim: int, audio_dim: int, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.vision_in = nn.Linear(vision_dim, width)
        self.audio_in = nn.Linear(audio_dim, width)
        self.block = Block(width, num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
        self.vision_out = nn.Linear(width, vision_dim)
        self.audio_out = nn.Linear(width, audio_dim)

    def forward(
        self, v: torch.Tensor, a: torch.Tensor, n: int, ita: TemporalAdaptor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bt, lv, dim = v.shape
        t = bt // n
        z = torch.cat([self.vision_in(v).reshape(n, t * lv, -1), self.audio_in(a)], dim=1)
        pooled = self.block(z).mean(1)  # (n, width)
        dv = self.vision_out(pooled).repeat_interleave(t, dim=0)[:, None, :]
        da = self.audio_out(pooled)[:, None, :]
        return v + torch.tanh(self.vision_gate) * dv, a + torch.tanh(self.audio_gate) * da


def build_fusion(kind: str, *, vision_dim: int, audio_dim: int, latent: int, width: int, heads: int,
                 mlp_ratio: float) -> GatedFusion:
    """One fusion block of the given kind ('bottleneck', 'add', 'mult', 'mult-concat')."""
    if kind == "bottleneck":
        return FusionBottleneck(vision_dim, audio_dim, latent)
    if kind == "add":
        if vision_dim != audio_dim:
            raise ModelConfigError(f"model.fusion='add' adds one encoder's features to the other's: it needs equal "
                                   f"widths (vision {vision_dim}, audio {audio_dim}); use bottleneck, mult or mult-concat")
        return AddFusion()
    if kind == "mult":
        return MultFusion(vision_dim, audio_dim, width, heads)
    if kind == "mult-concat":
        return MultConcatFusion(vision_dim, audio_dim, width, heads, mlp_ratio)
    raise ValueError(f"no fusion block of kind {kind!r}")


def fusion_pairs(vision_depth: int, audio_depth: int) -> list[tuple[int, int]]:
    """(vision block, audio block) after which each fusion block acts (see the module docstring).

    Equal depths: [(0, 0), (1, 1), ...]. Otherwise block i of the shallower encoder (depth La)
    pairs with block round((i + 1) * Lb / La) - 1 of the deeper (depth Lb), rounded half up.
    """
    if vision_depth < 1 or audio_depth < 1:
        raise ValueError(f"encoder depths must be at least 1 (vision {vision_depth}, audio {audio_depth})")
    shallow, deep = sorted((vision_depth, audio_depth))
    partner = [(2 * (i + 1) * deep + shallow) // (2 * shallow) - 1 for i in range(shallow)]
    if vision_depth <= audio_depth:
        return list(zip(range(shallow), partner))
    return list(zip(partner, range(shallow)))
