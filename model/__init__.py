"""MMA-DFER network: pure nn.Modules, their config, and checkpoint import.

Public API: ModelConfig, build_model, MMADFER, load_encoder_checkpoints,
load_official_checkpoint.
"""

from model.config import ModelConfig

__all__ = ["ModelConfig"]
