"""The zarr cache records which encoders made it (timm name + weights sha256, or "random init") and is
never read for other encoders: building over it, `check_cache_matches` and the loader refuse in one line."""

from __future__ import annotations

import copy
import hashlib

import pytest
import zarr
from checkpoint_files import vision_file
from fake_prep import fake_config, make_fake_prep

from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.store.cache import build_cached_dataset, check_cache_matches, run_cache
from pipeline.store.shard import run_shard

CLIP = "vit_base_patch16_clip_quickgelu_224.openai"


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-enc")
    ws = Workspace(root / "work", root / "manifests")
    make_fake_prep(ws, clips_per_fold=1)
    face = vision_file(root / "face.pth")
    cfg = fake_config(fold=1)
    cfg.vision_ckpt = str(face)
    run_shard("fake", ws, cfg.data)
    run_cache(cfg, ws, cluster="serial")
    return ws, cfg, face


def test_the_cache_records_each_encoder_s_name_and_weights(cached):
    ws, cfg, face = cached
    prov = zarr.open_group(str(ws.cache_path("fake")), mode="r").attrs["provenance"]
    vision, audio = prov["encoders.vision"], prov["encoders.audio"]
    assert vision["name"] == cfg.model.vision_encoder == "vit_base_patch16_224.mae_face"
    assert vision["sha256"] == hashlib.sha256(face.read_bytes()).hexdigest() and vision["path"] == str(face)
    assert audio["name"] == "vit_base_patch16_224.audiomae_as2m" and audio["sha256"] == "random init"
    check_cache_matches(cfg, ws)  # the same encoders: accepted
    assert len(build_cached_dataset(cfg, ws, "test")) == 1


def test_a_cache_made_with_one_encoder_is_never_read_for_another(cached, tmp_path):
    ws, cfg, face = cached
    other = copy.deepcopy(cfg)
    other.model.vision_encoder, other.vision_ckpt = CLIP, None
    digest = hashlib.sha256(face.read_bytes()).hexdigest()[:12]
    line = f"encoders.vision: cache made with vit_base_patch16_224.mae_face (sha256 {digest}), " \
           f"this config gives {CLIP} (random init)"
    with pytest.raises(MMAError) as exc:
        check_cache_matches(other, ws)
    assert line in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(MMAError, match=f"made with the vision encoder vit_base_patch16_224.mae_face .*this config has {CLIP}"):
        build_cached_dataset(other, ws, "train")  # the loader itself refuses, without building a model
    with pytest.raises(MMAError, match="existing cache was made differently \\(encoders.vision: cache made with"):
        run_cache(other, ws, cluster="serial")  # and building over it needs --force
    # the same architecture with other weights is another encoder too
    reweighted = copy.deepcopy(cfg)
    reweighted.vision_ckpt = str(vision_file(tmp_path / "other-face.pth"))
    with pytest.raises(MMAError, match="encoders.vision: cache made with vit_base_patch16_224.mae_face \\(sha256 "):
        check_cache_matches(reweighted, ws)
