"""Learnable prompt tokens of one encoder: the initial set and the progressive updates.

M prompt tokens (init normal x dim^-0.5) are appended after the patch tokens. With
progressive prompts, L further sets are introduced at evenly spaced depths: set l is added
to a slice of the M prompt tokens right after block floor(l * depth / L) (and after that
block's fusion). The official model uses M=6, L=2: tokens 0-2 after block 0 and 3-5
after block 6 of 12 (paper eq. 1). The authors size prompts as 3 tokens per introduction,
so the Table 7 preset uses M = 3L (36/18/12/6 tokens for 12/6/4/2 introductions).

When L <= M the slices partition the M tokens (sizes differ by at most one, larger first);
when L > M (e.g. 12 introductions of 6 tokens, not the authors' sizing) set l updates the single token
floor(l * M / L), so every token is updated L / M times. A set that would enter after the
last block could never change the output (only the class token is read out), so it is
not created: with L = depth (paper Table 7's "12") there are depth - 1 sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PromptUpdate:
    """Set `index` is added to prompt tokens [start, end) right after block `layer`."""

    index: int
    layer: int
    start: int
    end: int


def prompt_schedule(num_prompts: int, introductions: int, depth: int) -> list[PromptUpdate]:
    """Where each progressive set enters (see module docstring); [] for no introductions.

    Sets are numbered consecutively (`index`) among those kept.
    """
    if introductions <= 0:
        return []
    if num_prompts < 1:
        raise ValueError("progressive prompts need at least one prompt token")
    if introductions > depth:
        raise ValueError(f"{introductions} prompt introductions do not fit in {depth} blocks")
    updates = []
    if introductions <= num_prompts:
        base, extra = divmod(num_prompts, introductions)
        start = 0
        for index in range(introductions):
            size = base + (1 if index < extra else 0)
            updates.append(PromptUpdate(index, index * depth // introductions, start, start + size))
            start += size
    else:
        for index in range(introductions):
            start = index * num_prompts // introductions
            updates.append(PromptUpdate(index, index * depth // introductions, start, start + 1))
    kept = [u for u in updates if u.layer < depth - 1]
    return [PromptUpdate(i, u.layer, u.start, u.end) for i, u in enumerate(kept)]


def prompt_layout(num_prompts: int, introductions: int, depth: int) -> dict:
    """The prompt layout for summaries: {"tokens": M, "sets": [{"after_block", "tokens": [start, end]}, ...]}."""
    return {"tokens": num_prompts,
            "sets": [{"after_block": u.layer, "tokens": [u.start, u.end]}
                     for u in prompt_schedule(num_prompts, introductions, depth)]}


class PromptTokens(nn.Module):
    """The prompts of one encoder: `tokens` (M, dim) and progressive `sets` (one per introduction)."""

    def __init__(self, num_prompts: int, dim: int, *, depth: int, introductions: int = 0) -> None:
        super().__init__()
        if num_prompts < 1:
            raise ValueError("prompt tokens need num_prompts >= 1")
        self.num_prompts = num_prompts
        self.schedule = prompt_schedule(num_prompts, introductions, depth)
        scale = dim**-0.5
        self.tokens = nn.Parameter(torch.randn(num_prompts, dim) * scale)
        self.sets = nn.ParameterList(
            [nn.Parameter(torch.randn(u.end - u.start, dim) * scale) for u in self.schedule]
        )
        self._by_layer = {u.layer: u for u in self.schedule}

    def initial(self, batch: int) -> torch.Tensor:
        """The M initial tokens expanded over a batch: (batch, M, dim)."""
        return self.tokens.unsqueeze(0).expand(batch, -1, -1)

    def update(self, layer: int, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Add the set scheduled after block `layer` to its prompt rows (prompts start at `offset`)."""
        u = self._by_layer.get(layer)
        if u is None:
            return x
        lo, hi = offset + u.start, offset + u.end
        updated = x[:, lo:hi] + self.sets[u.index].to(x.dtype)
        return torch.cat([x[:, :lo], updated, x[:, hi:]], dim=1)
