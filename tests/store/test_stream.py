"""Streaming loader and clip sampling: DDP/worker splitting, augmentation, windows, broken shards."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch
from fake_prep import fake_config, make_fake_prep

from pipeline.core.paths import Workspace
from pipeline.store.sampling import (
    FBANK_MEAN,
    FBANK_STD,
    ClipSampler,
    audio_window_start,
    clip_rng,
    load_clip_dir,
    make_test_input,
    normalise_fbank,
    sample_frame_indices,
)
from pipeline.store.shard import run_shard
from pipeline.store.stream import build_dataset, build_loader


@pytest.fixture(scope="module")
def fake_sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    ws = Workspace(root / "work", root / "manifests")
    rows = make_fake_prep(ws)
    run_shard("fake", ws, fake_config().data)
    return ws, rows


def _ids(cfg, ws, split, **kw):
    return [cid for batch in build_loader(cfg, ws, split, **kw) for cid in batch[3]]


def test_frame_indices():
    rng = np.random.default_rng(0)
    train = sample_frame_indices(40, 16, train=True, rng=rng)
    assert all(2 * k <= i < 2 * k + 2 for k, i in enumerate(train))  # one frame per segment of 2
    assert sample_frame_indices(32, 16, train=False) == [2 * k + 1 for k in range(16)]  # segment centres
    v0 = sample_frame_indices(64, 16, train=False, view=0, num_views=2)
    v1 = sample_frame_indices(64, 16, train=False, view=1, num_views=2)
    assert v0 == [4 * k + 1 for k in range(16)] and v1 == [4 * k + 3 for k in range(16)]
    assert sample_frame_indices(5, 8, train=True, rng=rng) == [0, 1, 2, 3, 4, 4, 4, 4]  # short: repeat last
    assert sample_frame_indices(5, 8, train=False) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_fbank_window_and_normalisation():
    silence = normalise_fbank(np.zeros((0, 128), np.float16))
    assert silence.shape == (1, 512, 128) and silence.dtype == torch.float32
    assert torch.allclose(silence, torch.full_like(silence, -FBANK_MEAN / (2 * FBANK_STD)))
    raw = np.arange(700)[:, None].repeat(128, 1).astype(np.float16)
    cut = normalise_fbank(raw)
    assert torch.allclose(cut[0, :, 0] * 2 * FBANK_STD + FBANK_MEAN, torch.arange(512.0), atol=1e-3)
    # aligned: frames 100..199 of a 25 fps clip span 4..8 s -> window centred on 6 s (row 600), clamped to the end
    assert audio_window_start(list(range(100, 200, 7)) + [199], 25.0, 700, 512, "aligned") == 188
    assert audio_window_start([0, 1], 25.0, 700, 512, "aligned") == 0
    assert audio_window_start([100, 199], 25.0, 700, 512, "start") == 0
    shifted = normalise_fbank(raw, start=188)
    assert float(shifted[0, 0, 0] * 2 * FBANK_STD + FBANK_MEAN) == pytest.approx(188, abs=1e-2)


def test_augmentation_is_one_draw_per_clip(fake_sharded):
    ws, _ = fake_sharded
    clip = load_clip_dir(ws.prep_dir("fake") / "clips" / "00004")
    same = dict(clip, frames=[clip["frames"][0]] * len(clip["frames"]))  # every frame the same picture
    sampler = ClipSampler.from_config(fake_config())
    plain, _ = sampler(same, train=False)
    outputs = []
    for epoch in range(6):
        frames, _ = sampler(same, train=True, rng=clip_rng(1, epoch, "00004"))
        assert frames.shape == (16, 3, 32, 32) and frames.dtype == torch.uint8
        assert all(torch.equal(frames[0], f) for f in frames[1:])  # identical across the 16 frames
        outputs.append(frames[0])
    assert any(not torch.equal(o, plain[0]) for o in outputs)  # and actually augmented
    assert len({o.numpy().tobytes() for o in outputs}) > 1  # a new draw per epoch
    again, _ = sampler(same, train=True, rng=clip_rng(1, 3, "00004"))
    assert torch.equal(again[0], outputs[3])  # deterministic per (seed, epoch, clip)


def test_train_and_test_splits(fake_sharded):
    ws, rows = fake_sharded
    cfg = fake_config(fold=2)
    test_ids = _ids(cfg, ws, "test")
    assert sorted(test_ids) == sorted(r["clip_id"] for r in rows if r["test_fold"] == 2)
    assert _ids(cfg, ws, "test") == test_ids  # deterministic
    epoch0 = _ids(cfg, ws, "train", epoch=0)
    assert sorted(epoch0) == sorted(r["clip_id"] for r in rows if r["test_fold"] != 2)
    assert _ids(cfg, ws, "train", epoch=0) == epoch0 and _ids(cfg, ws, "train", epoch=1) != epoch0
    batch = next(iter(build_loader(cfg, ws, "train")))
    frames, fbank, labels, ids = batch
    assert frames.dtype == torch.uint8 and frames.shape[1:] == (16, 3, 32, 32)
    assert fbank.dtype == torch.float32 and fbank.shape[1:] == (1, 512, 128)
    assert labels.dtype == torch.int64 and isinstance(ids, list)
    assert len(build_dataset(cfg, ws, "train")) == len(epoch0)


@pytest.mark.parametrize("split,shuffle", [("test", "permutation"), ("train", "permutation"), ("train", "buffer")])
def test_two_ranks_two_workers_visit_each_clip_once(fake_sharded, split, shuffle):
    """test: 2 shards < 4 readers (sample-level split); train, permutation: positions dealt out;
    train, buffer: 8 shards >= 4 (shards dealt out)."""
    ws, rows = fake_sharded
    cfg = fake_config(fold=1)
    cfg.data.shuffle = shuffle
    seen = Counter()
    for rank in range(2):
        seen.update(_ids(cfg, ws, split, rank=rank, world_size=2, num_workers=2))
    want = {r["clip_id"] for r in rows if (r["test_fold"] == 1) == (split == "test")}
    assert set(seen) == want and set(seen.values()) == {1}


def test_test_input_matches_loader(fake_sharded):
    """predict's make_test_input on a prep folder gives the loader's test tensors for that clip."""
    ws, _ = fake_sharded
    cfg = fake_config(fold=1)
    batch = next(iter(build_loader(cfg, ws, "test", view=1, num_views=2)))
    i = batch[3].index("00002")  # the short clip
    frames, fbank = make_test_input(load_clip_dir(ws.prep_dir("fake") / "clips" / "00002"), cfg, view=1, num_views=2)
    assert torch.equal(frames, batch[0][i]) and torch.equal(fbank, batch[1][i])


def test_truncated_shard_is_skipped_and_reported(tmp_path, caplog):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    rows = make_fake_prep(ws)
    cfg = fake_config(fold=3)
    index = run_shard("fake", ws, cfg.data).index
    victim = next(s for s in index["shards"] if s["fold"] == 3 and s["count"] == 2)
    path = ws.shards_dir("fake") / victim["name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # cut inside the second clip
    dataset = build_dataset(cfg, ws, "test")
    with caplog.at_level(logging.WARNING, logger="pipeline.store.stream"):
        got = [s[3] for s in dataset]
    fold3 = [r["clip_id"] for r in rows if r["test_fold"] == 3]
    assert set(got) < set(fold3) and len(got) == len(fold3) - dataset.report.skipped
    assert dataset.report.skipped >= 1
    ledger = [json.loads(x) for x in (ws.shards_dir("fake") / "read_errors.jsonl").read_text().splitlines()]
    assert ledger[-1]["shard"] == str(path) and ledger[-1]["offset"] is not None and ledger[-1]["skipped"] >= 1
    assert any(victim["name"] in r.message and "truncated" in r.message for r in caplog.records)


def test_training_order_is_the_epochs_uniform_permutation(fake_sharded):
    """One reader yields the train clips exactly in the seeded per-epoch permutation of the split."""
    import random

    from pipeline.store.shard import sample_key

    ws, rows = fake_sharded
    cfg = fake_config(fold=2)
    dataset = build_dataset(cfg, ws, "train", epoch=3)
    keys = [sample_key(c) for e in dataset.entries for c in e["clips"]]
    random.Random(f"{cfg.train.seed}|clips|3").shuffle(keys)
    assert [key for key, _ in dataset.permutation()] == keys
    assert [sample_key(s[3]) for s in dataset] == keys  # read in that order, each clip once
    # every order is possible: across epochs, the first clip comes from more than one shard
    firsts = {build_dataset(cfg, ws, "train", epoch=e).permutation()[0][1]["name"] for e in range(12)}
    assert len(firsts) > 1


def test_permutation_reader_skips_and_records_a_corrupt_clip(tmp_path):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    rows = make_fake_prep(ws)
    cfg = fake_config(fold=3)
    index = run_shard("fake", ws, cfg.data).index
    victim = next(s for s in index["shards"] if s["fold"] != 3 and s["count"] == 2)
    path = ws.shards_dir("fake") / victim["name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # the shard's second clip is cut off
    dataset = build_dataset(cfg, ws, "train")
    got = [s[3] for s in dataset]
    train = [r["clip_id"] for r in rows if r["test_fold"] != 3]
    assert set(got) < set(train) and len(got) == len(train) - dataset.report.skipped >= len(train) - 2
    assert dataset.report.skipped >= 1


def test_index_byte_ranges_match_the_tar_headers(fake_sharded):
    """`mma shard` records each clip's byte range; they are what a scan of the tar headers finds."""
    import copy

    ws, _ = fake_sharded
    dataset = build_dataset(fake_config(fold=2), ws, "train")
    for entry in dataset.entries:
        assert len(entry["ranges"]) == len(entry["clips"])
        from_index = dataset._byte_ranges(entry)
        scanned = build_dataset(fake_config(fold=2), ws, "train")._byte_ranges(
            {k: v for k, v in copy.deepcopy(entry).items() if k != "ranges"})
        assert from_index == scanned


def test_one_persistent_loader_serves_every_epoch_in_batches_independent_of_workers(fake_sharded):
    """set_epoch reaches persistent workers; training batches are consecutive slices of the epoch's
    permutation whatever the workers; drop_last leaves out the last partial batch."""
    ws, _ = fake_sharded
    cfg = fake_config(fold=2)
    cfg.train.batch_size = 2

    def batches(loader):
        return [b[3] for b in loader]

    persistent = build_loader(cfg, ws, "train", num_workers=2)
    assert persistent.persistent_workers
    epoch0 = batches(persistent)
    persistent.dataset.set_epoch(1)
    epoch1 = batches(persistent)
    assert epoch1 == batches(build_loader(cfg, ws, "train", epoch=1, num_workers=0)) != epoch0
    order = [key for key, _ in build_dataset(cfg, ws, "train", epoch=1).permutation()]
    assert [cid for b in epoch1 for cid in b] == order  # sample keys are the clip ids here
    dropped = build_loader(cfg, ws, "train", epoch=1, num_workers=2, drop_last=True)
    assert batches(dropped) == [b for b in epoch1 if len(b) == 2]
    assert dropped.dataset.epoch_clips() == len(order) - len(order) % 2
