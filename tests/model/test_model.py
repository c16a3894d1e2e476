"""MMA-DFER network: shapes, the two-stage split, what trains, gate-0 behaviour, precision, parameter counts."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from model import MMADFER, ModelConfig, build_model
from model.prompts import prompt_schedule
from model.summary import summarize_config
from pipeline.core.config import tiny


def narrow(**kw) -> ModelConfig:
    """A shallow, narrow geometry with the real patch grids (S-dependent) and audio size."""
    base = dict(embed_dim=32, depth=2, num_heads=2, latent_dim=16, num_frames=4, temporal_dim=32,
                temporal_heads=2, temporal_head_dim=16, temporal_mlp_dim=64, ita_dim=16, mult_dim=16,
                prompt_introductions=1, drop_path=0.1)
    base.update(kw)
    return ModelConfig(**base)


def inputs(cfg: ModelConfig, n: int = 2, t: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = t or cfg.num_frames
    frames = torch.rand(n, t, 3, cfg.image_size, cfg.image_size, generator=g)
    spec = torch.randn(n, 1, cfg.audio_frames, cfg.audio_mel_bins, generator=g)
    return frames, spec


@pytest.mark.parametrize("size", [112, 160, 224])
def test_shapes_and_two_stage_split(size):
    cfg = narrow(image_size=size)
    model = build_model(cfg).eval()
    frames, spec = inputs(cfg, n=1)
    with torch.no_grad():
        vt, at = model.embed(frames, spec)
        logits = model(frames, spec)
        again = model.forward_embedded(vt, at)
    grid = size // 16
    assert vt.shape == (1, cfg.num_frames, grid * grid, cfg.embed_dim)
    assert at.shape == (1, 32 * 8, cfg.embed_dim)
    assert model.vision.pos_embed.shape == (1, 1 + grid * grid + 6, cfg.embed_dim)
    assert model.audio.pos_embed.shape == (1, 1 + 256 + 6, cfg.embed_dim)
    assert logits.shape == (1, cfg.num_classes)
    assert torch.equal(logits, again)


def test_embed_is_the_frozen_patch_conv():
    cfg = narrow(image_size=112)
    model = build_model(cfg)
    frames, spec = inputs(cfg, n=1)
    vt, _ = model.embed(frames, spec)
    w, b = model.vision.patch_embed.proj.weight, model.vision.patch_embed.proj.bias
    conv = torch.nn.functional.conv2d(frames[0, 2:3], w, b, stride=16).flatten(2).transpose(1, 2)
    torch.testing.assert_close(vt[0, 2:3], conv)
    assert not vt.requires_grad


def trainable_prefixes(name: str) -> bool:
    frozen = ("cls_token", "patch_embed.", "blocks.", "norm.")
    head, _, rest = name.partition(".")
    return not (head in ("vision", "audio") and rest.startswith(frozen))


def test_gradients_reach_exactly_the_trainable_parameters():
    cfg = narrow(image_size=112)
    model = build_model(cfg).train()
    with torch.no_grad():  # open the gates so the fusion layers get non-zero gradients too
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.5)
    frames, spec = inputs(cfg)
    loss = torch.nn.functional.cross_entropy(model(frames, spec), torch.tensor([0, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        should = trainable_prefixes(name)
        assert p.requires_grad == should, name
        if should:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        else:
            assert p.grad is None, name
    names = {n for n, _ in model.trainable_named_parameters()}
    assert {"vision.pos_embed", "audio.pos_embed", "vision.prompts.tokens", "audio.prompts.sets.0",
            "fusion.0.vision_gate", "jam.weight", "temporal.cls_token", "classifier.bias"} <= names


@pytest.mark.parametrize("fusion,temporal", [("bottleneck", "mtt"), ("add", "mtt"), ("mult", "mtt"),
                                             ("mult-concat", "mtt"), ("bottleneck", "both"), ("none", "ita")])
def test_zero_gates_leave_the_encoders_unimodal(fusion, temporal):
    """At init (gates 0) the encoders compute what they compute with fusion (and ITA) disabled."""
    cfg = narrow(image_size=112, fusion=fusion, temporal=temporal)
    fused = build_model(cfg).eval()
    no_ita = {"mtt": "mtt", "both": "mtt", "ita": "none"}[temporal]
    plain = build_model(dataclasses.replace(cfg, fusion="none", temporal=no_ita)).eval()
    missing, _ = plain.load_state_dict(fused.state_dict(), strict=False)
    assert not missing
    frames, spec = inputs(cfg)
    with torch.no_grad():
        vt, at = fused.embed(frames, spec)
        v1, a1 = fused.encode_embedded(vt, at)
        v2, a2 = plain.encode_embedded(vt, at)
        alone_v, alone_a = fused.vision(frames.flatten(0, 1)), fused.audio(spec)  # each encoder on its own
        # and the gates matter once opened
        for name, p in fused.named_parameters():
            if "gate" in name:
                p.fill_(0.3)
        v3, a3 = fused.encode_embedded(vt, at)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    assert torch.equal(v1.flatten(0, 1), alone_v) and torch.equal(a1, alone_a)
    assert not torch.allclose(v1, v3)
    if fusion != "none":
        assert not torch.allclose(a1, a3)


def test_progressive_prompts_enter_after_their_blocks():
    cfg = narrow(image_size=112, depth=4, prompt_introductions=2)
    model = build_model(cfg)
    enc = model.vision
    x = torch.zeros(1, enc.prompt_offset + 6, cfg.embed_dim)
    after0 = enc.add_prompts(0, x)
    assert torch.equal(after0[0, enc.prompt_offset:enc.prompt_offset + 3], enc.prompts.sets[0].detach())
    assert after0[:, :enc.prompt_offset].abs().sum() == 0 and after0[0, enc.prompt_offset + 3:].abs().sum() == 0
    assert torch.equal(enc.add_prompts(1, x), x)
    after2 = enc.add_prompts(2, x)
    assert torch.equal(after2[0, enc.prompt_offset + 3:], enc.prompts.sets[1].detach())


def test_prompt_schedule_matches_the_paper_and_generalises():
    official = prompt_schedule(6, 2, 12)
    assert [(u.layer, u.start, u.end) for u in official] == [(0, 0, 3), (6, 3, 6)]
    every_layer = prompt_schedule(6, 12, 12)  # the 12th would enter after the last block: not created
    assert [u.layer for u in every_layer] == list(range(11))
    assert [u.start for u in every_layer] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert [u.index for u in every_layer] == list(range(11))
    four = prompt_schedule(6, 4, 12)
    assert [(u.layer, u.start, u.end) for u in four] == [(0, 0, 2), (3, 2, 4), (6, 4, 5), (9, 5, 6)]
    assert [(u.layer, u.end - u.start) for u in prompt_schedule(6, 6, 12)] == [(2 * i, 1) for i in range(6)]
    assert prompt_schedule(6, 0, 12) == []


def test_autocast_bfloat16_runs_and_stays_close():
    cfg = tiny().model
    model = build_model(cfg).eval()
    frames, spec = inputs(cfg, n=1)
    with torch.no_grad():
        ref = model(frames, spec)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(frames, spec)
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), ref, atol=0.15, rtol=0.1)


def test_bad_inputs_are_named():
    cfg = narrow(image_size=112)
    model = build_model(cfg)
    frames, spec = inputs(cfg, n=1)
    with pytest.raises(ValueError, match=r"frames must be \(n, T, 3, 112, 112\)"):
        model(frames[..., :96, :96], spec)
    with pytest.raises(ValueError, match="spectrogram must be"):
        model(frames, spec[:, :, :256])
    with pytest.raises(ValueError, match="at most 4 frames"):
        model(*inputs(cfg, n=1, t=5))
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(frames, torch.cat([spec, spec]))


def test_random_encoders_warn_loudly(caplog):
    model = build_model(narrow(image_size=112))
    with caplog.at_level(logging.WARNING, logger="model.mma"):
        model(*inputs(model.config, n=1))
        model(*inputs(model.config, n=1))
    warnings = [r for r in caplog.records if "RANDOMLY INITIALISED" in r.getMessage()]
    assert len(warnings) == 1


def expected_trainable(s: int, d: int, c: int) -> int:
    """docs/architecture.md, "Model" by hand: pos embeds, prompts, 12 fusion bottlenecks, JAM, MTT, classifier."""
    D, L, P = 768, 12, 6
    nv = (s // 16) ** 2
    pos = (1 + nv + P) * D + (1 + 256 + P) * D
    prompts = 2 * (P * D + 2 * 3 * D)
    fusion = L * (2 * (D * d + d) + 2 * (2 * d) + 2 * (d * D + D) + 2)
    jam = D * 512 + 512
    mtt = 512 + 17 * 512 + 2 * 1024 + 512 * 512 + 512 * 1024 + (512 * 512 + 512) + (512 * 1024 + 1024) + (1024 * 512 + 512)
    return pos + prompts + fusion + jam + mtt + 512 * c + c


@pytest.mark.parametrize("s,d", [(160, 128), (112, 64), (224, 512)])
def test_paper_parameter_counts(s, d):
    summary = summarize_config(ModelConfig(image_size=s, latent_dim=d, num_classes=7))
    assert summary["trainable_params"] == expected_trainable(s, d, 7)
    vit_b = 85_054_464 + 16 * 16 * 3 * 768 + 768 + 768 + 2 * 768  # blocks + patch conv + cls + final norm
    assert summary["per_component"]["vision_encoder"] == {"trainable": 0, "frozen": vit_b}
    assert summary["per_component"]["audio_encoder"]["frozen"] == vit_b - 16 * 16 * 2 * 768
    assert summary["total_params"] == summary["trainable_params"] + summary["frozen_params"]


def test_paper_model_builds_for_real_with_the_summarised_count():
    model = MMADFER(ModelConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected_trainable(160, 128, 7) == 7_556_639
    assert isinstance(model.vision.blocks[0].attn.fused_attn, bool) and model.vision.blocks[0].attn.fused_attn
