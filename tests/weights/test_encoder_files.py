"""Encoder files for any supported family: found by the encoder's timm name, checked against the named
architecture before any work (one line naming both), and recorded as name + sha256."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from checkpoint_files import authors_file, mma_run_file
from hub_files import save_safetensors, timm_encoder, tiny_geometry, to_openai_clip

from model.errors import ModelError
from pipeline.core.config import tiny
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.core.stage_config import ConfigRequest, resolve_stage_config
from pipeline.weights.check import check_weights_file, expected_geometry
from pipeline.weights.resolve import RANDOM_INIT, encoder_identities, resolve_encoder_checkpoints
from pipeline.weights.store import add

CLIP = "vit_base_patch16_clip_quickgelu_224.openai"
DINO = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "work", tmp_path / "manifests")


def clip_cfg():
    cfg = tiny()
    cfg.model.vision_encoder = CLIP
    return cfg


def test_a_stage_finds_an_encoder_s_weights_by_its_name(ws, tmp_path, caplog):
    _, sd = timm_encoder("vit_base_patch16_clip_quickgelu_224", **tiny_geometry("vit_base_patch16_clip_224.openai"))
    torch.save(to_openai_clip(sd), tmp_path / "clip.bin")
    installed = add("vit_base_patch16_clip_224.openai", tmp_path / "clip.bin", ws.weights, preset_name="tiny")
    with caplog.at_level(logging.WARNING):
        cfg = resolve_encoder_checkpoints(clip_cfg(), ws)
    assert cfg.vision_ckpt == installed.path and cfg.audio_ckpt is None
    assert "the audio encoder stays RANDOM" in caplog.text and "`mma weights fetch audiomae`" in caplog.text
    named = clip_cfg()
    named.vision_ckpt = "vit_base_patch16_clip_224.openai"  # a name from `mma weights list`: its file
    assert resolve_encoder_checkpoints(named, ws).vision_ckpt == installed.path
    absent = tiny()
    absent.vision_ckpt = "vit_base_patch16_224.mae"
    with pytest.raises(MMAError, match="--vision-ckpt vit_base_patch16_224.mae: not in the weights folder .*"
                                       "`mma weights fetch vit_base_patch16_224.mae` adds it"):
        resolve_encoder_checkpoints(absent, ws)
    ids = encoder_identities(cfg.model, {"vision": {"path": installed.path, "sha256": installed.sha256}})
    assert ids == {"vision": {"name": CLIP, "sha256": installed.sha256},
                   "audio": {"name": "vit_base_patch16_224.audiomae_as2m", "sha256": RANDOM_INIT}}


def test_a_file_of_another_geometry_is_refused_naming_both(ws, tmp_path):
    geometry = tiny_geometry(DINO)
    _, sd = timm_encoder("vit_small_patch14_dinov2", **{**geometry, "depth": 2})
    shallow = tmp_path / "dino-depth2.pth"
    torch.save({"model": sd}, shallow)
    cfg = tiny()
    cfg.model.vision_encoder = DINO
    cfg.vision_ckpt = str(shallow)
    with pytest.raises(ModelError) as exc:
        resolve_encoder_checkpoints(cfg, ws)
    line = str(exc.value)
    assert line.startswith(f"{shallow}: ") and "\n" not in line
    w, p = geometry["embed_dim"], geometry["patch_size"]
    assert f"has width {w}, depth 2, {p} px patches, given as --vision-ckpt" in line
    assert f"model.vision_encoder={DINO} needs width {w}, depth {geometry['depth']}, {p} px patches" in line
    _, sd = timm_encoder("vit_small_patch14_dinov2", **geometry)
    fits = tmp_path / "dino.pth"
    torch.save({"model": sd}, fits)
    cfg.vision_ckpt = str(fits)
    assert resolve_encoder_checkpoints(cfg, ws).vision_ckpt == str(fits)
    assert not ws.workdir.exists()  # checks only: nothing written


def test_a_safetensors_file_given_to_a_stage_is_sent_to_weights_add(ws, tmp_path):
    _, sd = timm_encoder("vit_small_patch14_dinov2", **tiny_geometry(DINO))
    path = save_safetensors(sd, tmp_path / "model.safetensors")
    cfg = tiny()
    cfg.model.vision_encoder = DINO
    cfg.vision_ckpt = str(path)
    with pytest.raises(MMAError, match=f"{path}: stored as safetensors, which --vision-ckpt cannot load; "
                                       f"`mma weights add {DINO} {path}` installs it converted"):
        resolve_encoder_checkpoints(cfg, ws)


def test_weights_check_knows_any_family_and_the_architecture_it_fits(tmp_path):
    _, sd = timm_encoder("vit_small_patch14_dinov2", **tiny_geometry(DINO))
    path = save_safetensors(sd, tmp_path / "model.safetensors")
    ok = check_weights_file(path, as_="vision", preset_name="tiny", encoder=DINO)
    assert ok.exit_code == 0 and ok.conversion == "safetensors -> torch", ok.text()
    assert "installed converted by `mma weights add`" in ok.text() and ok.text().endswith("ok")
    paper = check_weights_file(path, as_="vision")  # the paper preset's face encoder: MAE-Face's ViT-B/16
    assert paper.exit_code == 2 and "--preset paper needs width 768, depth 12, 16 px patches (ViT-B/16)" in paper.problem
    assert paper.problem.startswith(f"{path}: this ") and "DINOv2-style" in paper.problem
    # the geometry a name needs is read from timm: DINOv2 S/14 at full size, the paper's ViT-B/16
    assert expected_geometry("paper", encoder=DINO).vision.key() == (384, 12, 14, 1)
    assert expected_geometry("paper").vision.key() == expected_geometry("paper").audio.key() == (768, 12, 16, 1)


def test_weights_check_leaves_trained_models_as_they_are(tmp_path):
    run = mma_run_file(tmp_path / "last.pt")
    authors = authors_file(tmp_path / "authors.pth")
    for path, as_ in ((run, "mma"), (authors, "authors")):
        out = check_weights_file(path, as_=as_, preset_name="tiny")
        assert out.exit_code == 0 and out.conversion is None, out.text()


def test_encoder_flags_set_the_encoders_and_take_weights_names(ws):
    request = ConfigRequest(preset="tiny", flags={"vision_encoder": CLIP, "vision_ckpt": Path("vit_base_patch16_clip_224.openai")})
    cfg = resolve_stage_config(request, workspace=ws, needs_dataset=False)
    assert cfg.model.vision_encoder == CLIP and cfg.vision_ckpt == "vit_base_patch16_clip_224.openai"
    with pytest.raises(MMAError, match="`mma weights fetch vit_base_patch16_clip_224.openai` adds it"):
        resolve_encoder_checkpoints(cfg, ws)  # the name is looked up in the weights folder
    bad = ConfigRequest(preset="tiny", flags={"audio_encoder": "resnet50"})
    with pytest.raises(ModelError, match="model.audio_encoder='resnet50' is a resnet model, not a ViT"):
        resolve_stage_config(bad, workspace=ws, needs_dataset=False)
