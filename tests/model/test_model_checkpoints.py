"""Checkpoints: MAE encoder files (pos-embed resize, bad files), mma checkpoints, the authors' layout."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checkpoint_files import mae_file, timm_file
from official_layout import (
    official_state_dict,
    reference_forward,
    write_official_checkpoint,
)

from model import (
    build_model,
    load_encoder_checkpoints,
    load_official_checkpoint,
    load_trainable_state_dict,
)
from model.checkpoint import (
    load_model_checkpoint,
    save_model_checkpoint,
    trainable_state_dict,
)
from model.encoders import resize_pos_embed
from model.errors import ModelError
from pipeline.core.config import tiny


def tiny_cfg(**kw):
    return dataclasses.replace(tiny().model, **kw)


def batch(cfg, n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randn(n, 1, cfg.audio_frames, cfg.audio_mel_bins, generator=g))


def expected_resize(pos, old, new):
    grid = pos[:, 1:].reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], -1)], dim=1)


def test_mae_checkpoints_load_with_pos_embed_resize(tmp_path, caplog):
    cfg = tiny_cfg()
    model = build_model(cfg)
    prompt_rows_v = model.vision.pos_embed[:, 1 + 4:].detach().clone()
    prompt_rows_a = model.audio.pos_embed[:, 1 + 256:].detach().clone()
    vsd = mae_file(tmp_path / "mae_face.pth", img_size=64, in_chans=3)  # 4x4 grid -> 2x2 at S=32
    asd = mae_file(tmp_path / "audiomae.pth", img_size=(1024, 128), in_chans=1)  # 64x8 grid -> 32x8
    with caplog.at_level(logging.WARNING):
        report = load_encoder_checkpoints(model, tmp_path / "mae_face.pth", tmp_path / "audiomae.pth")
        model.eval()(*batch(cfg, n=1))
    assert not [r for r in caplog.records if "RANDOMLY" in r.getMessage()]
    assert report["vision"]["pos_embed_grid"] == {"checkpoint": [4, 4], "model": [2, 2]}
    assert report["audio"]["pos_embed_grid"] == {"checkpoint": [64, 8], "model": [32, 8]}
    assert "decoder_embed.weight" in report["vision"]["ignored"] and "mask_token" in report["audio"]["ignored"]
    assert len(report["vision"]["sha256"]) == 64 and model.encoder_sources["audio"]["path"].endswith("audiomae.pth")
    for enc, sd, grids, prompts in ((model.vision, vsd, ((4, 4), (2, 2)), prompt_rows_v),
                                    (model.audio, asd, ((64, 8), (32, 8)), prompt_rows_a)):
        for key in ("cls_token", "patch_embed.proj.weight", "blocks.3.mlp.fc2.bias", "norm.weight"):
            assert torch.equal(enc.state_dict()[key], sd[key]), key
        n = 1 + grids[1][0] * grids[1][1]
        torch.testing.assert_close(enc.pos_embed[:, :n].detach(), expected_resize(sd["pos_embed"], *grids))
        assert torch.equal(enc.pos_embed[:, 0], sd["pos_embed"][:, 0])  # CLS row kept
        assert torch.equal(enc.pos_embed[:, n:].detach(), prompts)  # prompt rows keep their init
        assert enc.pos_embed.requires_grad and not enc.blocks[0].attn.qkv.weight.requires_grad


def test_bad_encoder_checkpoints_fail_clearly(tmp_path):
    model = build_model(tiny_cfg())
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ModelError, match=r"notes\.txt: not a PyTorch checkpoint"):
        load_encoder_checkpoints(model, text, None)
    for name, payload in (("passwd.pt", b"root:x:0:0:root:/root:/bin/bash\n"), ("noise.pt", bytes(range(256)) * 3)):
        junk = tmp_path / name
        junk.write_bytes(payload)
        with pytest.raises(ModelError, match=rf"{name.replace('.', '[.]')}: not a PyTorch checkpoint"):
            load_encoder_checkpoints(model, junk, None)
    other = tmp_path / "other.pt"
    torch.save({"weights": {"a": torch.zeros(1)}}, other)
    with pytest.raises(ModelError, match=r"other\.pt: not an MAE vision checkpoint"):
        load_encoder_checkpoints(model, other, None)
    mae_file(tmp_path / "narrow.pth", img_size=64, in_chans=3, dim=32, heads=2)
    with pytest.raises(ModelError, match=r"narrow\.pth: pos_embed has shape \(1, 17, 32\)"):
        load_encoder_checkpoints(model, tmp_path / "narrow.pth", None)
    mae_file(tmp_path / "rgb.pth", img_size=(1024, 128), in_chans=3)
    with pytest.raises(ModelError, match=r"rgb\.pth: patch_embed\.proj\.weight has shape \(64, 3, 16, 16\) but the audio"):
        load_encoder_checkpoints(model, None, tmp_path / "rgb.pth")
    sd = mae_file(tmp_path / "cut.pth", img_size=64, in_chans=3)
    del sd["blocks.1.attn.qkv.weight"]
    torch.save({"model": sd}, tmp_path / "cut.pth")
    with pytest.raises(ModelError, match=r"cut\.pth: the vision checkpoint lacks 1 encoder tensor\(s\), e\.g\. blocks\.1"):
        load_encoder_checkpoints(model, tmp_path / "cut.pth", None)
    with pytest.raises(ModelError, match="not found"):
        load_encoder_checkpoints(model, tmp_path / "missing.pth", None)


def test_mma_checkpoint_round_trip_stores_only_trainable_tensors(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    trained = build_model(cfg).eval()
    torch.manual_seed(0)
    fresh = build_model(cfg).eval()
    with torch.no_grad():
        for _, p in trained.trainable_named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    rng = {"numpy": np.random.get_state(), "python": (3, (1, 2), None), "torch": torch.get_rng_state()}
    encoders = {"vision": {"path": None, "sha256": None}, "audio": {"path": None, "sha256": None}}
    path = save_model_checkpoint(tmp_path / "run" / "last.pt", trained, {"model": {"latent_dim": 32}}, encoders,
                                 extra={"rng": [rng], "epoch": 3})
    ck = load_model_checkpoint(path)
    assert ck["format"] == "mma-v1" and ck["full_state"] is False and ck["epoch"] == 3
    assert set(ck["model"]) == {k for k, _ in trained.trainable_named_parameters()}
    assert not any(k.startswith(("vision.blocks", "audio.patch_embed")) for k in ck["model"])
    assert isinstance(ck["rng"][0]["numpy"][1], np.ndarray)  # numpy RNG state survives safe loading
    np.random.set_state(ck["rng"][0]["numpy"])
    load_trainable_state_dict(fresh, ck["model"])
    frames, spec = batch(cfg)
    with torch.no_grad():
        assert torch.equal(trained(frames, spec), fresh(frames, spec))
    with pytest.raises(ModelError, match="does not match the model configuration: missing"):
        load_trainable_state_dict(build_model(tiny_cfg(temporal="both")), ck["model"])
    state = dict(trainable_state_dict(fresh))
    state["classifier.weight"] = torch.zeros(3, 64)
    with pytest.raises(ModelError, match=r"classifier\.weight has shape \(3, 64\)"):
        load_trainable_state_dict(fresh, state)
    torch.save({"state_dict": {}}, tmp_path / "theirs.pth")
    with pytest.raises(ModelError, match="not an mma checkpoint.*--official"):
        load_model_checkpoint(tmp_path / "theirs.pth")


def official_model(cfg):
    """Our model with every tensor randomised (gates open) so the import is a real test."""
    torch.manual_seed(5)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate" in name:
                p.fill_(0.4)
            elif name.endswith("norm.weight") or ".norm" in name:
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_official_import_matches_ours_and_the_reference(tmp_path):
    cfg = tiny_cfg()
    ours = official_model(cfg)
    path = write_official_checkpoint(tmp_path / "model.pth", ours)
    imported = load_official_checkpoint(path, cfg).eval()
    frames, spec = batch(cfg)
    with torch.no_grad():
        got = imported(frames, spec)
        want = ours(frames, spec)
        ref = reference_forward(official_state_dict(ours), frames, spec, depth=cfg.depth, heads=cfg.num_heads,
                                temporal_heads=cfg.temporal_heads)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert {k for k, _ in imported.trainable_named_parameters()} == {k for k, _ in ours.trainable_named_parameters()}
    assert all(p.device.type == "cpu" for p in imported.parameters())


def test_official_import_refuses_what_it_cannot_place(tmp_path):
    cfg = tiny_cfg()
    ours = official_model(cfg)
    sd = official_state_dict(ours)

    def write(state, name):
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / name)
        return tmp_path / name

    extra = dict(sd, **{"image_encoder.context_att.0.in_proj_weight": torch.zeros(3, 3)})
    with pytest.raises(ModelError, match=r"extra\.pth: cannot import: 1 tensor\(s\) .* no place .*context_att"):
        load_official_checkpoint(write(extra, "extra.pth"), cfg)
    short = {k: v for k, v in sd.items() if k != "temporal_net.temporal_transformer.layers.0.0.fn.fn.to_kv.weight"}
    with pytest.raises(ModelError, match=r"missing temporal_net\.temporal_transformer\.layers\.0\.0\.fn\.fn\.to_kv"):
        load_official_checkpoint(write(short, "short.pth"), cfg)
    with pytest.raises(ModelError, match="trained at image size 32 .* configured for 64"):
        load_official_checkpoint(write(sd, "ok.pth"), tiny_cfg(image_size=64))
    with pytest.raises(ModelError, match="predicts 7 classes, the model has 11"):
        load_official_checkpoint(tmp_path / "ok.pth", tiny_cfg(num_classes=11))
    with pytest.raises(ModelError, match="fusion=bottleneck"):
        load_official_checkpoint(tmp_path / "ok.pth", tiny_cfg(fusion="add"))
    torch.save({"model": {}}, tmp_path / "mae.pth")
    with pytest.raises(ModelError, match="not a checkpoint of the authors' code"):
        load_official_checkpoint(tmp_path / "mae.pth", cfg)


def test_timm_format_checkpoints_load_by_name(tmp_path):
    """A timm state dict saved bare (as timm saves one) of DINOv2 with registers: no position rows for its prefix."""
    cfg = tiny_cfg(vision_encoder="vit_small_patch14_reg4_dinov2", image_size=28, embed_dim=32, num_heads=2, depth=2)
    sd = timm_file(tmp_path / "dino.pth", "vit_small_patch14_reg4_dinov2")  # 224 px: 16x16 grid
    model = build_model(cfg)
    prompt_rows = model.vision.pos_embed[:, 4:].detach().clone()
    report = load_encoder_checkpoints(model, tmp_path / "dino.pth", None)
    assert report["vision"]["pos_embed_grid"] == {"checkpoint": [16, 16], "model": [2, 2]}
    enc = model.vision
    for key in ("cls_token", "reg_token", "patch_embed.proj.weight", "blocks.1.ls2.gamma", "norm.weight"):
        assert torch.equal(enc.state_dict()[key], sd[key]), key
    torch.testing.assert_close(enc.pos_embed[:, :4].detach(), resize_pos_embed(sd["pos_embed"], (16, 16), (2, 2), 0))
    assert torch.equal(enc.pos_embed[:, 4:].detach(), prompt_rows)
    assert not enc.reg_token.requires_grad and enc.pos_embed.requires_grad
