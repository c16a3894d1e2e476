"""Which torch device a process uses: the one rule shared by prep (MTCNN), the cache and the trainer."""

from __future__ import annotations

import torch


def pick_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """`device` if given, else this rank's GPU when CUDA is available, else CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
