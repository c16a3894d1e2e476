"""Building the network for a run: the one rule that makes random encoders reproducible.

Without encoder checkpoints (tests, the demo) the frozen encoders are random. The trainer, the
cache and the evaluator must all get the *same* random encoders, so the model is always built
right after seeding torch with the run's `train.seed`, inside `fork_rng` so the caller's random
state is left as it was. Encoder checkpoints, when given, are loaded afterwards.
"""

from __future__ import annotations

import torch

import model as mdl
from model.config import ModelConfig


def build_seeded_model(
    model_cfg: ModelConfig, seed: int, vision_ckpt: str | None = None, audio_ckpt: str | None = None
) -> "mdl.MMADFER":
    """MMA-DFER built with torch seeded to `seed` (caller's RNG untouched), encoder checkpoints loaded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = mdl.build_model(model_cfg)
    if vision_ckpt or audio_ckpt:
        mdl.load_encoder_checkpoints(net, vision_ckpt, audio_ckpt)
    return net
