"""MMA-DFER network: pure nn.Modules, their config, and checkpoint import.

Public API: ModelConfig, build_model, MMADFER, load_encoder_checkpoints,
load_official_checkpoint, trainable_state_dict, load_trainable_state_dict.

Everything but ModelConfig is imported on first use, so `import model.config` (done by
every configuration path) does not pull in torch and timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model.config import ModelConfig

_LAZY = {
    "MMADFER": "model.mma",
    "build_model": "model.mma",
    "load_encoder_checkpoints": "model.checkpoint",
    "trainable_state_dict": "model.checkpoint",
    "load_trainable_state_dict": "model.checkpoint",
    "load_official_checkpoint": "model.official",
}

__all__ = ["ModelConfig", *_LAZY]

if TYPE_CHECKING:
    from model.checkpoint import load_encoder_checkpoints, load_trainable_state_dict, trainable_state_dict
    from model.mma import MMADFER, build_model
    from model.official import load_official_checkpoint


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model' has no attribute {name!r}")
