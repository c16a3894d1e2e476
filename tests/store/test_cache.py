"""`mma cache`: zarr round trip equals the online model, view picking, DDP split, resume, refusals."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from fake_prep import fake_config, make_fake_prep
from typer.testing import CliRunner

import model as mdl
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.store.cache import (
    build_cached_loader,
    check_cache_matches,
    run_cache,
)
from pipeline.store.shard import run_shard
from pipeline.store.stream import build_loader


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    ws = Workspace(root / "work", root / "manifests")
    rows = make_fake_prep(ws)
    cfg = fake_config(fold=1)
    run_shard("fake", ws, cfg.data)
    summary = run_cache(cfg, ws, workers=2, cluster="local").summary  # the real Dask LocalCluster, one task per shard
    return ws, rows, summary


def test_store_layout(cached):
    import zarr

    ws, rows, summary = cached
    assert summary["complete"] and summary["clips"] == len(rows) and summary["skipped_clips"] == 0
    root = zarr.open_group(str(ws.cache_path("fake")), mode="r")
    cfg = fake_config()
    v, a = root["vision"], root["audio"]
    assert v.dtype == np.float16 and v.shape[1:] == (cfg.data.cache_views + 3, 16, 4, cfg.model.embed_dim)
    assert a.shape[1:] == (1, 256, cfg.model.embed_dim)  # window "start": one audio view serves all
    assert v.chunks[0] == 2 and v.chunks[1] == 1  # tiny preset: one chunk = one shard's rows, one view
    valid = root["valid"][:]
    assert sorted(str(x) for x in root["clip_id"][:][valid]) == sorted(r["clip_id"] for r in rows)
    labels = dict(zip(root["clip_id"][:][valid], root["label"][:][valid]))
    assert all(labels[r["clip_id"]] == r["label"] for r in rows)
    prov = root.attrs["provenance"]
    assert prov["model.image_size"] == 32 and prov["encoders.vision"]["path"] is None
    assert prov["encoders.vision"]["patch_embed_sha256"] and prov["prep_hash"]


def test_cached_tokens_equal_online_forward(cached):
    ws, _, _ = cached
    cfg = fake_config(fold=1)
    torch.manual_seed(cfg.train.seed)  # as the trainer: seed, then build
    net = mdl.build_model(cfg.model).eval()
    for view, num_views in ((0, 1), (0, 2), (1, 2)):
        frames, fbank, labels, ids = next(iter(build_loader(cfg, ws, "test", view=view, num_views=num_views)))
        vt, at, clabels, cids = next(iter(build_cached_loader(cfg, ws, "test", view=view, num_views=num_views)))
        assert cids == ids and torch.equal(clabels, labels)
        assert vt.dtype == torch.float16 and vt.shape == (len(ids), 16, 4, cfg.model.embed_dim)
        with torch.no_grad():
            online = net(frames.float().div(255), fbank)
            offline = net.forward_embedded(vt.float(), at.float())
        torch.testing.assert_close(offline, online, atol=1e-3, rtol=1e-3)  # float16 storage


def test_cached_train_views_and_ddp_split(cached):
    ws, rows, _ = cached
    cfg = fake_config(fold=1)
    train_ids = {r["clip_id"] for r in rows if r["test_fold"] != 1}

    def tokens(epoch, **kw):
        return {cid: v for b in build_cached_loader(cfg, ws, "train", epoch=epoch, **kw) for cid, v in zip(b[3], b[0])}

    e0, e0_again = tokens(0), tokens(0)
    assert set(e0) == train_ids and all(torch.equal(e0[c], e0_again[c]) for c in e0)  # deterministic
    others = [tokens(e) for e in range(1, 6)]
    assert any(not torch.equal(o[c], e0[c]) for o in others for c in e0)  # other epochs pick other views
    seen = Counter()
    for rank in range(2):
        for b in build_cached_loader(cfg, ws, "test", rank=rank, world_size=2, num_workers=2):
            seen.update(b[3])
    assert set(seen) == {r["clip_id"] for r in rows if r["test_fold"] == 1} and set(seen.values()) == {1}


def test_mismatched_config_refused(cached):
    ws, _, _ = cached
    cfg = fake_config()
    check_cache_matches(cfg, ws)
    bigger = fake_config()
    bigger.model.image_size = 48
    with pytest.raises(MMAError, match="model.image_size"):
        check_cache_matches(bigger, ws)
    reseeded = fake_config()
    reseeded.train.seed = 2  # random encoders initialised differently
    with pytest.raises(MMAError, match="encoders.vision"):
        check_cache_matches(reseeded, ws)
    window = fake_config()
    window.data.audio_window = "aligned"
    with pytest.raises(MMAError, match="data.audio_window"):
        run_cache(window, ws, cluster="serial")  # no silent overwrite without --force


def test_resume_and_cli(cached, tmp_path):
    import shutil

    import zarr

    from cli import app

    src_ws, _, _ = cached
    ws = Workspace(tmp_path / "work", src_ws.manifest_dir)
    shutil.copytree(src_ws.workdir, ws.workdir)
    path = ws.cache_path("fake")
    root = zarr.open_group(str(path), mode="r+")
    before = root["vision"][:]
    start = root.attrs["layout"]["shards"][1]["start"]
    root["vision"][start:start + 2] = 0  # as if shard 1 was never written
    root["shard_done"][1] = False
    root.attrs["complete"] = False
    with pytest.raises(MMAError, match="unfinished"):
        check_cache_matches(fake_config(), ws)
    summary = run_cache(fake_config(), ws, cluster="serial").summary
    assert summary["shards_done_now"] == 1 and summary["shards_resumed"] == root["shard_done"].shape[0] - 1
    assert np.array_equal(zarr.open_group(str(path), mode="r")["vision"][:], before)

    args = ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), "cache", "fake", "--preset", "tiny",
            "--set", "data.crop_size=48", "--set", "data.shard_max_clips=2", "--cluster", "serial"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["up_to_date"] is True
    result = CliRunner().invoke(app, [*args, "--image-size", "48"])
    assert result.exit_code != 0 and "model.image_size" in result.output and "--force" in result.output


def test_failed_cache_shard_is_not_done_and_is_retried(cached, tmp_path):
    import shutil

    from cli import app

    src_ws, _, _ = cached
    ws = Workspace(tmp_path / "work", src_ws.manifest_dir)
    shutil.copytree(src_ws.workdir, ws.workdir)
    index = json.loads((ws.shards_dir("fake") / "index.json").read_text())
    shard = ws.shards_dir("fake") / index["shards"][1]["name"]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 3])  # truncated mid-member
    args = ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), "cache", "fake", "--preset", "tiny",
            "--set", "data.crop_size=48", "--set", "data.shard_max_clips=2", "--cluster", "serial"]
    result = CliRunner().invoke(app, [*args, "--force"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: cache unfinished: 1 shard(s) failed") and shard.name in last, last
    import zarr

    root = zarr.open_group(str(ws.cache_path("fake")), mode="r")
    assert not root["shard_done"][1] and bool(root["shard_done"][0])
    with pytest.raises(MMAError, match="unfinished"):
        check_cache_matches(fake_config(), ws)

    shard.write_bytes(good)  # the shard is repaired: a plain rerun retries only it
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["complete"] and summary["shards_done_now"] == 1 and summary["failed_shards"] == []
