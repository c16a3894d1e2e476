"""FLOPs per clip (counted on the meta device), the device peak table and MFU, and `mma model summary`'s FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from pipeline.core.config import tiny
from pipeline.engine.flops import count_flops, device_peak, mfu


def _vit_forward_flops(tokens: int, dim: int, depth: int, patch_inputs: int, patches: int) -> int:
    """A pre-norm ViT forward by hand: per block qkv + projection + MLP x4 (24 L D^2) and attention (4 L^2 D),
    plus the patch-embedding convolution."""
    return depth * (24 * tokens * dim * dim + 4 * tokens * tokens * dim) + 2 * patches * patch_inputs * dim


def test_unimodal_audio_counts_match_the_vit_by_hand():
    cfg = tiny().model
    cfg.modality, cfg.prompts, cfg.fusion, cfg.temporal = "audio", "none", "none", "none"
    flops = count_flops(cfg)
    patches = (cfg.audio_frames // 16) * (cfg.audio_mel_bins // 16)
    head = 2 * cfg.embed_dim * cfg.num_classes
    encoder = _vit_forward_flops(1 + patches, cfg.embed_dim, cfg.depth, 16 * 16, patches)
    assert flops["flops_forward_per_clip"] == encoder + head
    # frozen encoder, frozen positions: the backward is the classifier's weight gradient alone
    assert flops["flops_train_per_clip"] == encoder + 2 * head


def test_the_full_model_counts_prompts_fusion_and_mtt():
    cfg = tiny().model
    full = count_flops(cfg)
    bare = tiny().model
    bare.fusion, bare.temporal = "none", "none"
    no_fusion = count_flops(bare)
    assert full["flops_forward_per_clip"] > no_fusion["flops_forward_per_clip"] > 0
    # trainable positions at the encoders' inputs: the backward runs through the frozen blocks (input grads)
    assert 1.9 < full["flops_train_per_clip"] / full["flops_forward_per_clip"] < 3.0


def test_device_peak_and_mfu(monkeypatch):
    assert device_peak(torch.device("cpu"), "bf16") == {"name": "CPU", "math": "bf16", "peak_tflops": None}
    assert mfu(10**12, 100.0, None) is None
    assert mfu(10**12, 100.0, 400.0) == pytest.approx(0.25)
    gpu = torch.device("cuda", 0)
    for name, capability, precision, want in (("NVIDIA H100 80GB HBM3", (9, 0), "bf16", ("bf16", 989.4)),
                                              ("NVIDIA H200", (9, 0), "fp32", ("tf32", 494.7)),
                                              ("NVIDIA H100 PCIe", (9, 0), "bf16", ("bf16", 756.0)),
                                              ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16", ("bf16", 312.0)),
                                              ("Tesla V100-SXM2-32GB", (7, 0), "fp32", ("fp32", 15.7)),
                                              ("Some Future GPU", (10, 0), "bf16", ("bf16", None))):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        peak = device_peak(gpu, precision)
        assert (peak["name"], peak["math"], peak["peak_tflops"]) == (name, *want)


def test_model_summary_reports_flops_per_clip():
    runner = CliRunner()
    result = runner.invoke(app, ["model", "summary", "--preset", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("flops_forward_per_clip", "flops_train_per_clip")} == count_flops(tiny().model)
    text = runner.invoke(app, ["model", "summary", "--preset", "tiny"])
    assert "FLOPs per clip: forward 0.3 GFLOP, training step (forward + backward) 0.6 GFLOP" in text.stdout
