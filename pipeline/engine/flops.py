"""FLOPs of the network per clip, counted, and the peak arithmetic rate of known devices (for MFU).

`count_flops` runs the resolved config's network on the meta device (shapes only: no memory, no
arithmetic) under `torch.utils.flop_counter.FlopCounterMode`: one forward of one clip, then one
forward + backward (cross-entropy on the logits), with prompts, fusion, the temporal transformer and
the classifier included. The backward of the frozen encoders computes input gradients only (the
trainable positional embeddings and prompts sit at their inputs), so a training clip costs about
twice a forward, not three times. Matmuls, convolutions and attention are counted (2 FLOPs per
multiply-add); element-wise work and the optimizer are not.

`device_peak` looks a CUDA device's dense peak up by name (`PEAK_TFLOPS`); `mfu` is model FLOPs per
second over that peak.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from typing import Any

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.mma import MMADFER

# Dense peak TFLOP/s per GPU from the vendors' data sheets (no sparsity): (bf16, tf32, fp32).
# The first entry whose key is in torch.cuda.get_device_name() wins, so longer names come first.
PEAK_TFLOPS: tuple[tuple[str, tuple[float | None, float | None, float]], ...] = (
    ("H200", (989.4, 494.7, 66.9)),
    ("H100 PCIe", (756.0, 378.0, 51.2)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.1, 183.0, 91.6)),
    ("L4", (121.0, 60.0, 30.3)),
    ("A10", (125.0, 62.5, 31.2)),
    ("RTX 4090", (165.2, 82.6, 82.6)),
    ("V100", (None, None, 15.7)),  # no bf16 or TF32 tensor cores
)


def count_flops(cfg: ModelConfig) -> dict[str, int]:
    """{"flops_forward_per_clip", "flops_train_per_clip"} of `cfg`'s network on one raw clip (frames + fbank).

    A few seconds for the paper's model (meta-device kernels run in Python); remembered per config."""
    cfg = dataclasses.replace(cfg).validate()
    return dict(_count(json.dumps(dataclasses.asdict(cfg), sort_keys=True)))


@functools.lru_cache(maxsize=32)
def _count(cfg_json: str) -> tuple[tuple[str, int], ...]:
    from torch.utils.flop_counter import FlopCounterMode  # heavy-ish import, only when counting

    cfg = ModelConfig(**json.loads(cfg_json))
    quiet = logging.getLogger("model.mma")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the meta-device copy has random encoders by construction
    try:
        with torch.device("meta"):
            net = MMADFER(cfg)
            frames = torch.zeros(1, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
            spec = torch.zeros(1, 1, cfg.audio_frames, cfg.audio_mel_bins)
            label = torch.zeros(1, dtype=torch.long)
        net.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(frames, spec)
        forward = counter.get_total_flops()
        net.train()
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(net(frames, spec), label).backward()
        train = counter.get_total_flops()
    finally:
        quiet.setLevel(level)
    return (("flops_forward_per_clip", int(forward)), ("flops_train_per_clip", int(train)))


def device_peak(device: torch.device, precision: str) -> dict[str, Any]:
    """{"name", "math", "peak_tflops"} of `device` for `precision` ("bf16" | "fp32"): fp32 runs on TF32
    tensor cores on Ampere and newer (`pipeline.engine.batches.configure_math`). On CPU or an unknown
    GPU peak_tflops is None (no MFU)."""
    if device.type != "cuda":
        return {"name": "CPU", "math": precision, "peak_tflops": None}
    name = torch.cuda.get_device_name(device)
    tf32 = torch.cuda.get_device_capability(device)[0] >= 8
    math = "bf16" if precision == "bf16" else ("tf32" if tf32 else "fp32")
    for key, (bf16, tf, fp32) in PEAK_TFLOPS:
        if key in name:
            return {"name": name, "math": math, "peak_tflops": {"bf16": bf16, "tf32": tf, "fp32": fp32}[math]}
    return {"name": name, "math": math, "peak_tflops": None}


def mfu(flops_per_clip: int, clips_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: flops_per_clip x clips_per_s / peak (None without a peak)."""
    if not peak_tflops:
        return None
    return flops_per_clip * clips_per_s / (peak_tflops * 1e12)
