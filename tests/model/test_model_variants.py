"""Every ablation variant (paper Tables 2-7) runs forward and backward on the `tiny` preset."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model import build_model
from model.summary import summarize_model
from model.errors import ModelConfigError
from pipeline.core.config import tiny

VARIANTS = {
    # Table 3: fusion
    "fusion-add": dict(fusion="add"),
    "fusion-mult": dict(fusion="mult"),
    "fusion-mult-concat": dict(fusion="mult-concat"),
    "fusion-none": dict(fusion="none"),
    # Table 2: temporal adaptation (ITA width 16 / 32 = the latent d / 64)
    "ita-16": dict(temporal="ita", ita_dim=16),
    "ita-32": dict(temporal="ita", ita_dim=32),
    "ita-64": dict(temporal="ita", ita_dim=64),
    "mtt+ita": dict(temporal="both"),
    "ita-without-bottleneck": dict(temporal="ita", fusion="mult"),
    # Table 4: components off (no MTT -> mean of the JAM outputs)
    "no-temporal": dict(temporal="none"),
    "plain": dict(temporal="none", fusion="none", prompts="none"),
    # Table 7: prompts
    "prompts-none": dict(prompts="none"),
    "prompts-static": dict(prompts="static"),
    "prompts-progressive-1": dict(prompt_introductions=1),
    "prompts-progressive-4": dict(prompt_introductions=4),
    # Table 6: latent width
    "latent-16": dict(latent_dim=16),
    "latent-64": dict(latent_dim=64),
    # Table 5: unimodal
    "vision-only": dict(modality="vision", prompts="none", fusion="none", temporal="none"),
    "audio-only": dict(modality="audio", prompts="none", fusion="none", temporal="none"),
}


def batch(cfg, n=2):
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(n, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g)
    spec = torch.randn(n, 1, cfg.audio_frames, cfg.audio_mel_bins, generator=g)
    return frames, spec, torch.tensor([1, 4])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_forward_backward(name):
    cfg = dataclasses.replace(tiny().model, **VARIANTS[name])
    model = build_model(cfg).train()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "gate" in key:
                p.fill_(0.5)
    frames, spec, labels = batch(cfg)
    logits = model(frames, spec)
    assert logits.shape == (2, cfg.num_classes)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = dict(model.trainable_named_parameters())
    assert trainable
    for key, p in model.named_parameters():
        if key in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key
        else:
            assert p.grad is None, key
    vt, at = model.embed(frames, spec)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(frames, spec), model.forward_embedded(vt, at))


def test_variants_have_the_expected_components():
    def components(**kw):
        model = build_model(dataclasses.replace(tiny().model, **kw))
        s = summarize_model(model)
        return {k for k, v in s["per_component"].items() if v["trainable"]}, s

    unimodal, s = components(modality="vision", prompts="none", fusion="none", temporal="none")
    assert unimodal == {"classifier"}, "unimodal = frozen branch + classifier only"
    assert "audio_encoder" not in s["per_component"]
    plain, _ = components(temporal="none", fusion="none", prompts="none")
    assert plain == {"vision_pos_embed", "audio_pos_embed", "joint_adaptation", "classifier"}
    both, _ = components(temporal="both")
    assert {"fusion", "temporal_adaptors", "temporal_transformer"} <= both
    _, inside = components(temporal="ita", ita_dim=32)  # ITA at the latent width: attention only
    _, outside = components(temporal="ita", ita_dim=16)
    assert inside["per_component"]["temporal_adaptors"]["trainable"] > 0
    assert "temporal_transformer" not in inside["per_component"]
    m32 = build_model(dataclasses.replace(tiny().model, temporal="ita", ita_dim=32))
    assert isinstance(m32.ita[0].down, torch.nn.Identity)
    m16 = build_model(dataclasses.replace(tiny().model, temporal="ita", ita_dim=16))
    assert isinstance(m16.ita[0].down, torch.nn.Linear) and m16.ita[0].down.in_features == 32


@pytest.mark.parametrize("knob", [dict(prompts="static"), dict(fusion="add"), dict(temporal="mtt")])
def test_unimodal_config_refuses_modules_it_would_not_run(knob):
    alone = dict(prompts="none", fusion="none", temporal="none")
    with pytest.raises(ModelConfigError, match=r"^model.modality='audio' is the frozen encoder") as err:
        dataclasses.replace(tiny().model, modality="audio", **{**alone, **knob}).validate()
    assert "\n" not in str(err.value) and repr(next(iter(knob.values()))) in str(err.value)
