"""Encoders from the Hugging Face hub: registry entries, fetch over a 127.0.0.1 stand-in for the hub, the
conversions on install (safetensors, OpenAI CLIP names), and the AudioMAE port loading as it is."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from checkpoint_files import tiny_model
from hub_files import audiomae_port, save_safetensors, timm_encoder, tiny_geometry, to_openai_clip
from weights_server import Served

from model import load_encoder_checkpoints
from model.checkpoint import safe_torch_load
from pipeline.core.errors import MMAError
from pipeline.weights.convert import OPENAI_CLIP, SAFETENSORS, encoder_tensors
from pipeline.weights.fetch import fetch
from pipeline.weights.registry import (
    WEIGHTS,
    hub_file,
    url_override_var,
    weight_spec,
    weights_for_encoder,
)
from pipeline.weights.store import add, listing, read_ledger

HUB_NAMES = ("vit_base_patch16_clip_224.openai", "vit_base_patch16_224.mae", "vit_small_patch14_dinov2.lvd142m")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve(weights_server, monkeypatch, name: str, body: bytes, **kw) -> Served:
    base, files = weights_server
    files[f"/{name}/file"] = item = Served(body, **kw)
    monkeypatch.setenv(url_override_var(name), f"{base}/{name}/file")
    return item


def test_the_hub_encoders_are_listed_with_their_source_and_licence(tmp_path):
    rows = {r["name"]: r for r in listing(tmp_path).weights}
    for name in HUB_NAMES:
        r = rows[name]
        assert r["fetchable"] and not r["present"] and r["file"] == f"{name}.pth"
        assert r["url"].startswith(f"https://huggingface.co/timm/{name}/resolve/main/")
        assert r["encoders"] and weights_for_encoder(r["encoders"][0], "vision").name == name
    assert rows["vit_base_patch16_clip_224.openai"]["url"].endswith("/pytorch_model.bin")
    assert rows["vit_small_patch14_dinov2.lvd142m"]["url"].endswith("/model.safetensors")
    assert "Apache-2.0" in rows["vit_small_patch14_dinov2.lvd142m"]["licence"]
    assert rows["vit_base_patch16_224.mae"]["non_commercial"] and "CC-BY-NC 4.0" in rows["vit_base_patch16_224.mae"]["licence"]
    # AudioMAE over plain HTTPS from the timm port, non-commercial as AudioMAE's LICENSE says
    audio = rows["audiomae"]
    assert audio["fetchable"] and audio["file"] == "audiomae_pretrained.pth" and audio["non_commercial"]
    assert audio["url"] == hub_file("gaunernst/vit_base_patch16_1024_128.audiomae_as2m", "pytorch_model.bin")
    assert audio["url"] == "https://huggingface.co/gaunernst/vit_base_patch16_1024_128.audiomae_as2m/resolve/main/pytorch_model.bin"
    assert "CC-BY-NC 4.0" in audio["licence"]
    assert weight_spec("hf_hub:gaunernst/vit_base_patch16_1024_128.audiomae_as2m").name == "audiomae"
    text = listing(tmp_path).text()
    assert "vit_small_patch14_dinov2.lvd142m  [missing]" in text and "mma weights fetch audiomae" in text


def test_encoder_names_find_their_weights():
    assert weights_for_encoder("vit_base_patch16_224.mae_face", "vision").name == "mae-face"
    assert weights_for_encoder("vit_base_patch16_224.audiomae_as2m", "audio").name == "audiomae"
    assert weights_for_encoder("vit_base_patch16_clip_quickgelu_224.openai", "vision").name == \
        "vit_base_patch16_clip_224.openai"
    assert weights_for_encoder("vit_small_patch14_dinov2", "vision").name == "vit_small_patch14_dinov2.lvd142m"
    assert weights_for_encoder("vit_base_patch16_224", "vision") is None  # MAE-Face or ImageNet MAE: say which
    assert weights_for_encoder("vit_small_patch14_dinov2.lvd142m", "audio") is None
    assert url_override_var("vit_base_patch16_clip_224.openai") == "MMA_WEIGHTS_URL_VIT_BASE_PATCH16_CLIP_224_OPENAI"
    assert url_override_var("mae-face") == "MMA_WEIGHTS_URL_MAE_FACE"
    assert all(s.name == n for n, s in WEIGHTS.items())


@pytest.mark.parametrize("name, arch", [("vit_base_patch16_224.mae", "vit_base_patch16_224"),
                                        ("vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_dinov2")])
def test_a_safetensors_hub_file_is_fetched_resumed_and_installed_converted(tmp_path, weights_server, monkeypatch,
                                                                            name, arch):
    geometry = tiny_geometry(name)
    _, sd = timm_encoder(arch, **geometry)
    body = save_safetensors(sd, tmp_path / "model.safetensors").read_bytes()
    item = serve(weights_server, monkeypatch, name, body, drop_first=1)
    folder = tmp_path / "weights"
    out = fetch(name, folder, preset_name="tiny")
    assert item.requests == ["", f"bytes={len(body) // 2}-"]  # resumed after the dropped connection
    installed = folder / f"{name}.pth"
    entry = read_ledger(folder)["weights"][name]
    assert out.status == "fetched" and entry["source_sha256"] == sha(body) and entry["converted"] == SAFETENSORS
    assert entry["sha256"] == sha(installed.read_bytes()) == out.sha256 != sha(body)
    loaded = safe_torch_load(installed)["model"]
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert not list(folder.glob("*.part")) and not list(folder.glob(".*"))
    # the same download checked against the paper's geometry (the full-size architecture) is refused
    with pytest.raises(MMAError, match=f"the download of {name} is corrupt .*width {geometry['embed_dim']}, "
                                       f"depth {geometry['depth']}, {geometry['patch_size']} px patches"):
        fetch(name, tmp_path / "other", preset_name="paper")
    assert not (tmp_path / "other" / f"{name}.pth").exists()


def test_openai_clip_names_become_timm_names_and_give_timm_s_features(tmp_path, weights_server, monkeypatch):
    geometry = tiny_geometry("vit_base_patch16_clip_224.openai")
    vit, sd = timm_encoder("vit_base_patch16_clip_quickgelu_224", **geometry)
    published = tmp_path / "pytorch_model.bin"
    torch.save(to_openai_clip(sd), published)
    serve(weights_server, monkeypatch, "vit_base_patch16_clip_224.openai", published.read_bytes())
    out = fetch("vit_base_patch16_clip_224.openai", tmp_path / "w", preset_name="tiny")
    entry = out.entry
    assert entry["converted"] == OPENAI_CLIP and entry["source_sha256"] == sha(published.read_bytes())
    loaded = safe_torch_load(out.path)["model"]
    assert sorted(loaded) == sorted(sd)  # the image tower only: no text tower, no projection
    fresh = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=0,
                              **geometry).eval()
    fresh.load_state_dict(loaded, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(fresh.forward_features(x), vit.forward_features(x), atol=1e-6)


def test_the_audiomae_hub_port_is_audiomae_s_layout_and_loads_as_it_is(tmp_path, weights_server, monkeypatch):
    sd = audiomae_port(tmp_path / "pytorch_model.bin")
    body = (tmp_path / "pytorch_model.bin").read_bytes()
    assert sd["pos_embed"].shape == (1, 1 + 64 * 8, 64) and sd["patch_embed.proj.weight"].shape[1] == 1
    obj, conversion = encoder_tensors(tmp_path / "pytorch_model.bin")
    assert conversion is None  # timm names, bare state dict with pos_embed: the loader reads it unchanged
    serve(weights_server, monkeypatch, "audiomae", body)
    out = fetch("audiomae", tmp_path / "w", preset_name="tiny")
    assert out.sha256 == sha(body) and (tmp_path / "w" / "audiomae_pretrained.pth").read_bytes() == body
    assert "converted" not in out.entry
    net = tiny_model()
    report = load_encoder_checkpoints(net, None, out.path)
    assert report["audio"]["pos_embed_grid"]["checkpoint"] == [64, 8]
    assert torch.equal(net.audio.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])


def test_add_converts_a_safetensors_file_and_refuses_to_link_it(tmp_path):
    name = "vit_small_patch14_dinov2.lvd142m"
    _, sd = timm_encoder("vit_small_patch14_dinov2", **tiny_geometry(name))
    src = save_safetensors(sd, tmp_path / "dino.safetensors")
    folder = tmp_path / "weights"
    with pytest.raises(MMAError, match="--link cannot be used for this file: it is converted when installed"):
        add(name, src, folder, link=True, preset_name="tiny")
    first = add(name, src, folder, preset_name="tiny")
    assert first.status == "added" and first.entry["source_sha256"] == sha(src.read_bytes())
    again = add(name, src, folder, preset_name="tiny")
    assert again.status == "present" and again.sha256 == first.sha256


def test_a_corrupt_safetensors_download_is_deleted(tmp_path, weights_server, monkeypatch):
    _, sd = timm_encoder("vit_base_patch16_224", **tiny_geometry("vit_base_patch16_224.mae"))
    body = bytearray(save_safetensors(sd, tmp_path / "m.safetensors").read_bytes())
    body[20:40] = b"\x00" * 20  # a damaged header
    serve(weights_server, monkeypatch, "vit_base_patch16_224.mae", bytes(body))
    with pytest.raises(MMAError, match="the download of vit_base_patch16_224.mae is corrupt"):
        fetch("vit_base_patch16_224.mae", tmp_path / "w", preset_name="tiny")
    assert not list((tmp_path / "w").iterdir())
