"""Encoders by timm name: each family's frozen path is timm's own, mixed geometries train, pairing, errors, statistics."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model import MMADFER, ModelConfig, build_model
from model.errors import ModelConfigError
from model.families import (
    DEFAULT_AUDIO_ENCODER,
    FBANK_MEAN,
    FBANK_STD,
    _built_geometry,
    _declared_geometry,
    create_timm_encoder,
    encoder_norm,
    timm_kwargs,
)
from model.fusion import fusion_pairs
from model.prompts import PromptTokens
from model.summary import format_summary, summarize_config
from pipeline.core.config import tiny

SMALL = dict(embed_dim=32, depth=2, num_heads=2, latent_dim=16, num_frames=2, temporal_dim=32, temporal_heads=2,
             temporal_head_dim=16, temporal_mlp_dim=64, ita_dim=16, mult_dim=16, prompt_introductions=1,
             audio_frames=64)
# (name, role, input side): every family mma supports, at width 32 and depth 2.
FAMILIES = [
    ("vit_small_patch16_224", "vision", 32),
    ("vit_base_patch16_224.mae", "vision", 32),
    ("vit_base_patch16_clip_224", "vision", 32),
    ("vit_base_patch16_clip_quickgelu_224", "vision", 32),
    ("vit_small_patch14_dinov2", "vision", 28),
    ("vit_small_patch14_reg4_dinov2", "vision", 28),
    ("eva02_tiny_patch14_224", "vision", 28),
    (DEFAULT_AUDIO_ENCODER, "audio", 0),  # the 1-channel AudioMAE layout: 64 x 128 fbank -> 4 x 8 grid
]


def alone(name: str, which: str, side: int, **kw) -> ModelConfig:
    """A unimodal config with `name` as its one encoder (prompts, fusion, temporal off)."""
    return ModelConfig(**{**SMALL, **kw, f"{which}_encoder": name, "modality": which, "prompts": "none",
                          "fusion": "none", "temporal": "none", "image_size": side or 32})


def open_gates(model: MMADFER, value: float = 0.5) -> None:
    """Fusion and ITA gates away from 0, so those layers act and get gradients."""
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "gate" in key:
                p.fill_(value)


def inputs(cfg: ModelConfig, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randn(n, 1, cfg.audio_frames, cfg.audio_mel_bins, generator=g))


@pytest.mark.parametrize("name,which,side", FAMILIES)
def test_frozen_path_is_timms_forward_features(name, which, side):
    """Prompts and fusion off: embed -> prefix tokens -> pos -> norm_pre -> blocks -> norm is timm's forward_features."""
    cfg = alone(name, which, side)
    enc = getattr(build_model(cfg).eval(), which)
    torch.manual_seed(0)
    with torch.no_grad():  # far from init (layer scale 1e-5, unit norms) so that no family detail can hide
        for p in enc.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ref = create_timm_encoder(cfg, which).eval()
    missing, unexpected = ref.load_state_dict(enc.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("head", "fc_norm")) for k in missing)
    x = torch.randn(2, 1, cfg.audio_frames, cfg.audio_mel_bins) if which == "audio" else torch.rand(2, 3, side, side)
    with torch.no_grad():
        ours, theirs = enc.forward_features(x), ref.forward_features(x)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    geo = enc.geometry
    assert (geo.width, geo.depth, geo.heads) == (32, 2, 2)
    assert geo.num_prefix_tokens == ref.num_prefix_tokens and geo.pre_norm == ("clip" in name)
    assert geo.act == ("QuickGELU" if "quickgelu" in name else "SiLU" if "eva02" in name else "GELU")
    assert geo.grid == ((4, 8) if which == "audio" else (2, 2)) and geo.rope == ("eva02" in name)


def test_default_layout_is_the_mae_vit_built_in_the_authors_order():
    """The default vision encoder is the MAE-Face layout, its tensors drawn in the same order as before names existed."""
    cfg = ModelConfig(**SMALL, image_size=32)
    torch.manual_seed(7)
    ours = MMADFER(cfg).vision.state_dict()
    torch.manual_seed(7)
    prompts = PromptTokens(6, 32, depth=2, introductions=1)
    vit = VisionTransformer(img_size=32, patch_size=16, in_chans=3, num_classes=0, global_pool="token", embed_dim=32,
                            depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=True,
                            norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=0.1)
    extra = torch.randn(1, 6, 32)
    want = {k: v for k, v in vit.state_dict().items() if not k.startswith(("head", "fc_norm"))}
    want["pos_embed"] = torch.cat([want["pos_embed"], extra], dim=1)
    want.update({f"prompts.{k}": v for k, v in prompts.state_dict().items()})
    assert list(ours) == [k for k in vit.state_dict() if k in want] + [f"prompts.{k}" for k in prompts.state_dict()]
    for key, value in want.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("cfg", [ModelConfig(), tiny().model, ModelConfig(**SMALL, image_size=48, patch_size=8),
                                 ModelConfig(vision_encoder="vit_base_patch16_224.mae", mlp_ratio=2.0, depth=3)])
def test_declared_geometry_is_what_timm_builds(cfg):
    for which in ("vision", "audio"):
        built = _built_geometry(getattr(cfg, f"{which}_encoder"), which, tuple(sorted(timm_kwargs(cfg, which).items())))
        assert _declared_geometry(cfg, which) == built


def test_fusion_pairs_follow_relative_depth():
    assert fusion_pairs(12, 12) == [(i, i) for i in range(12)]
    assert fusion_pairs(12, 6) == [(1, 0), (3, 1), (5, 2), (7, 3), (9, 4), (11, 5)]
    assert fusion_pairs(4, 10) == [(0, 2), (1, 4), (2, 7), (3, 9)]  # round half up: 2.5 -> 3, 7.5 -> 8
    assert fusion_pairs(10, 4) == [(2, 0), (4, 1), (7, 2), (9, 3)]
    for la, lb in ((3, 5), (5, 12), (1, 7), (6, 6)):
        pairs = fusion_pairs(la, lb)
        deep = [b for _, b in pairs]
        assert len(pairs) == min(la, lb) and pairs[-1] == (la - 1, lb - 1)
        assert deep == sorted(set(deep))


@pytest.mark.parametrize("vision,fusion,temporal", [
    ("vit_small_patch14_reg4_dinov2", "bottleneck", "both"),
    ("eva02_tiny_patch14_224", "mult", "mtt"),
    ("vit_base_patch16_clip_quickgelu_224", "mult-concat", "ita"),
])
def test_encoders_of_unequal_width_and_depth_train(vision, fusion, temporal):
    side = 28 if "14" in vision else 32
    cfg = ModelConfig(**{**SMALL, "prompt_introductions": 2}, vision_encoder=vision, image_size=side,
                      vision_embed_dim=48, vision_depth=5, vision_num_heads=3, audio_depth=3,
                      fusion=fusion, temporal=temporal)
    model = build_model(cfg).train()
    assert (model.vision.embed_dim, model.vision.depth, model.audio.embed_dim, model.audio.depth) == (48, 5, 32, 3)
    assert model.fusion_pairs() == [(1, 0), (2, 1), (4, 2)] and len(model.fusion) == 3
    assert model.jam.in_features == 48 and model.jam_audio.in_features == 32
    open_gates(model)
    frames, spec = inputs(cfg)
    loss = torch.nn.functional.cross_entropy(model(frames, spec), torch.tensor([0, 3]))
    loss.backward()
    for key, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key
        else:
            assert p.grad is None, key
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(frames, spec), model.forward_embedded(*model.embed(frames, spec)))
    summary = summarize_config(cfg)
    assert summary["fusion_pairs"] == [[1, 0], [2, 1], [4, 2]]
    assert summary["encoders"]["vision"]["width"] == 48 and summary["encoders"]["audio"]["depth"] == 3
    assert [s["after_block"] for s in summary["prompt_layouts"]["vision"]["sets"]] == [0, 2]
    assert [s["after_block"] for s in summary["prompt_layouts"]["audio"]["sets"]] == [0, 1]
    text = format_summary(summary)
    assert "fusion pairs (vision block, audio block): (1,0) (2,1) (4,2)" in text
    assert f"vision encoder: {vision} (" in text and "48 wide, 5 blocks, 3 heads" in text


def test_default_summary_pairs_block_i_with_block_i():
    text = format_summary(summarize_config(ModelConfig()))
    assert "fusion pairs: vision block i with audio block i, i = 0..11" in text
    assert "vision encoder: vit_base_patch16_224.mae_face (ViT): 768 wide, 12 blocks, 12 heads, MLP 3072 GELU" in text


@pytest.mark.parametrize("kw,match", [
    (dict(vision_encoder="vit_nonexistent_224"), r"^model\.vision_encoder='vit_nonexistent_224': timm has no model"),
    (dict(audio_encoder="resnet18"), r"^model\.audio_encoder='resnet18' is a resnet model, not a ViT"),
    (dict(vision_encoder="vit_base_patch16_siglip_224"), r"has no class token \(mma reads the class token out\)"),
    (dict(vision_encoder="vit_small_patch16_rope_mixed_224"),
     r"does not fit mma's encoder interface: no absolute position embedding; a RotaryEmbeddingMixed rotary"),
    (dict(vision_encoder="vit_base_patch16_224.bogus"), r"timm knows no pretrained tag 'bogus'"),
    (dict(vision_encoder="vit_small_patch14_dinov2"), r"model\.image_size=160 is not a multiple of the vision "
                                                      r"encoder's 14 px patches"),
    (dict(vision_encoder=DEFAULT_AUDIO_ENCODER), r"trained on 1-channel input"),
    (dict(embed_dim=100, num_heads=3), r"timm cannot build it with .*dim should be divisible by num_heads"),
    (dict(prompt_introductions=13), r"prompt_introductions=13 must be in 1\.\.12"),
])
def test_unsupported_encoders_are_one_line_errors(kw, match):
    with pytest.raises(ModelConfigError, match=match) as err:
        ModelConfig(**kw).validate()
    assert "\n" not in str(err.value)
    if "timm has no model" in match or "not a ViT" in match or "class token" in match or "interface" in match:
        assert str(err.value).endswith("and EVA-02 (eva02_*)")  # the supported families


def test_add_fusion_needs_equal_widths():
    cfg = ModelConfig(**SMALL, image_size=32, fusion="add", audio_embed_dim=48, audio_num_heads=3)
    with pytest.raises(ModelConfigError, match=r"needs equal widths \(vision 32, audio 48\)"):
        build_model(cfg)


def test_input_statistics_resolve_per_encoder():
    paper = ModelConfig().resolved()
    assert paper.vision_mean == (0.0, 0.0, 0.0) and paper.vision_std == (1.0, 1.0, 1.0)  # the authors feed [0, 1]
    assert (paper.audio_mean, paper.audio_std) == (FBANK_MEAN, FBANK_STD)
    clip = ModelConfig(vision_encoder="vit_base_patch16_clip_224.openai").resolved()
    assert clip.vision_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    dino = encoder_norm(ModelConfig(vision_encoder="vit_small_patch14_dinov2", image_size=154), "vision")
    assert dino.std == pytest.approx((0.229, 0.224, 0.225))
    # an image-trained ViT as the audio encoder has no fbank statistics of its own: AudioSet's
    assert encoder_norm(ModelConfig(audio_encoder="vit_base_patch16_clip_224"), "audio").mean == (FBANK_MEAN,)
    explicit = ModelConfig(vision_encoder="vit_base_patch16_clip_224", vision_mean=(0.5, 0.5, 0.5)).resolved()
    assert explicit.vision_mean == (0.5, 0.5, 0.5) and explicit.vision_std == pytest.approx((0.26862954, 0.26130258,
                                                                                            0.27577711))
    with pytest.raises(ModelConfigError, match=r"model\.audio_std=-1\.0 must be positive"):
        ModelConfig(audio_std=-1.0).validate()


def test_embed_normalises_frames_with_the_vision_statistics():
    cfg = ModelConfig(**SMALL, image_size=32, vision_encoder="vit_base_patch16_clip_224.openai")
    model = build_model(cfg)
    frames, spec = inputs(cfg, n=1)
    norm = encoder_norm(cfg, "vision")
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    vt, _ = model.embed(frames, spec)
    torch.testing.assert_close(vt[0], model.vision.patch_embed((frames[0] - mean) / std))
    paper_like = build_model(ModelConfig(**SMALL, image_size=32))  # MAE-Face: no normalisation, bit for bit
    vt0, _ = paper_like.embed(frames, spec)
    assert torch.equal(vt0[0], paper_like.vision.patch_embed(frames[0]))


@pytest.mark.parametrize("vision", ["vit_base_patch16_224.mae_face", "eva02_tiny_patch14_224"])
def test_grad_checkpointing_gives_the_same_gradients(vision):
    side = 28 if "14" in vision else 32
    cfg = ModelConfig(**SMALL, image_size=side, vision_encoder=vision)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    open_gates(model)
    frames, spec = inputs(cfg)
    calls = []
    for blk in model.vision.blocks:  # count every run of a block (the recomputation calls forward again)
        blk.forward = partial(lambda run, *a, **k: calls.append(1) or run(*a, **k), blk.forward)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)  # the same drop-path draws in both runs
        model(frames, spec).square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    plain_calls = len(calls)
    checked = grads(True)
    assert len(calls) - plain_calls == 2 * plain_calls  # every block ran again in the backward pass
    assert plain.keys() == checked.keys() and plain
    for key in plain:
        torch.testing.assert_close(checked[key], plain[key], atol=1e-6, rtol=1e-5)


def test_set_overrides_reach_the_encoder_by_name():
    from pipeline.core.config import apply_overrides

    cfg = apply_overrides(tiny(), ["model.vision_encoder=vit_base_patch16_clip_quickgelu_224",
                                   "model.audio_depth=2", "model.vision_mean=0.5,0.5,0.5"])
    model = build_model(cfg.model)
    assert model.vision.geometry.act == "QuickGELU" and model.vision.geometry.pre_norm
    assert model.audio.depth == 2 and model.fusion_pairs() == [(1, 0), (3, 1)]
    assert dataclasses.replace(cfg.model).resolved().vision_mean == (0.5, 0.5, 0.5)


def test_validating_the_presets_needs_neither_timm_nor_torch():
    """The default pair's geometry and statistics are declared: `validate()` stays cheap for every config path."""
    code = ("import sys; from model.config import ModelConfig; from pipeline.core.config import paper, tiny; "
            "ModelConfig().resolved(); paper().validate(); tiny().validate(); "
            "print(sorted(m for m in ('timm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"

