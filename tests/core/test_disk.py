"""Disk space before work (pipeline.core.disk): the refusal on a real small filesystem, a full disk as one
line, and the stage estimates at DFEW's size (the cache at S=160 with 4 views is about 200 GB)."""

from __future__ import annotations

import errno
import os

import pytest

from pipeline.core.config import DataConfig, paper
from pipeline.core.disk import (
    DiskSpaceError,
    check_space,
    free_bytes,
    human_bytes,
    stop_when_full,
    tree_bytes,
)
from pipeline.core.folds import FOLDS
from pipeline.data.published import read_published_split
from pipeline.prep.estimate import estimate_prep_bytes, frames_per_clip, jpeg_bytes
from pipeline.store.cache import estimate_cache_bytes, plan_layout


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 1_234_567, 206e9, 3.5e12)] == \
        ["0 B", "999 B", "1.0 kB", "1.2 MB", "206.0 GB", "3.5 TB"]


def test_refusal_names_folder_estimate_and_free_space(small_disks):
    disk = small_disks.mount(1 << 20)
    folder = disk / "work" / "dfew" / "shards"  # not there yet: the filesystem that will hold it counts
    free = free_bytes(folder)
    assert 0 < free <= 1 << 20
    ok = check_space(folder, free // 2, "shard dfew: 3 shards")
    assert ok.fits and ok.to_json()["estimate_bytes"] == free // 2 and not folder.exists()
    with pytest.raises(DiskSpaceError) as err:
        check_space(folder, 5_000_000, "shard dfew: 3 shards")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{folder}: not enough disk space for shard dfew: 3 shards")
    assert f"needs about 5.0 MB, {human_bytes(free)} free" in message and "--no-space-check" in message
    # what the stage deletes first (a store it rebuilds) counts as free; space_check=False only warns
    assert check_space(folder, 5_000_000, "cache", freed=5_000_000).fits
    tried = check_space(folder, 5_000_000, "shard dfew: 3 shards", space_check=False)
    assert not tried.fits and not tried.checked


def test_a_full_disk_is_one_line_and_other_errors_pass(small_disks):
    disk = small_disks.mount(64 << 10)
    with pytest.raises(DiskSpaceError) as err:
        with stop_when_full(disk, "mma shard dfew", "mma shard dfew"):
            with open(disk / "big", "wb") as fh:
                fh.write(b"x" * (1 << 20))
    message = str(err.value)
    assert "\n" not in message and "disk full during mma shard dfew" in message
    assert message.endswith("free some space and rerun `mma shard dfew` to resume")
    assert tree_bytes(disk) <= 64 << 10 and tree_bytes(disk / "missing") == 0
    with pytest.raises(PermissionError):  # not a full disk: untouched
        with stop_when_full(disk, "mma shard dfew", "mma shard dfew"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(disk))


def _dfew_index(max_clips: int = 500) -> dict:
    """A shard index with DFEW's clips per test fold (from the published split), cut into shards of max_clips."""
    published = read_published_split("dfew")
    shards = []
    for fold in FOLDS:
        n = sum(1 for c in published.values() if c.test_fold == fold)
        for seq, lo in enumerate(range(0, n, max_clips)):
            shards.append({"name": f"fold{fold}-{seq:06d}.tar", "fold": fold, "count": min(max_clips, n - lo)})
    return {"shards": shards}


def test_dfew_cache_at_160_with_4_views_is_about_200_gb():
    cfg = paper()
    cfg.dataset, cfg.model.image_size, cfg.data.cache_views = "dfew", 160, 4
    layout = plan_layout(cfg, _dfew_index())
    assert sum(s["count"] for s in layout["shards"]) == 11_697
    every = list(range(len(layout["shards"])))
    total = estimate_cache_bytes(layout, every, 4096)
    # 11,697 clips x (4 train + 3 test views x 16 frames x 100 tokens + 1 audio view x 256 tokens) x 768 x 2 bytes
    tokens = 11_697 * 2 * 768 * (7 * 16 * 100 + 256)
    assert tokens <= total < tokens * 1.01 and 200e9 < total < 210e9
    # a resumed run counts only the shards still to do
    assert estimate_cache_bytes(layout, every[1:], 4096) == total - estimate_cache_bytes(layout, every[:1], 4096)
    cfg.data.audio_window = "aligned"  # one audio view per view
    assert estimate_cache_bytes(plan_layout(cfg, _dfew_index()), every, 4096) > total + 6 * 11_697 * 256 * 768 * 2


def test_dfew_prep_estimate_from_the_published_frame_counts(tmp_path):
    published = read_published_split("dfew")
    rows = [{"clip_id": cid} for cid in published]
    frames = frames_per_clip(rows, "dfew", tmp_path)  # a root without synth.json: the published counts
    assert sum(frames) == sum(c.authors_num_frames for c in published.values())
    cfg = DataConfig()  # 224 px crops at JPEG quality 95
    total = estimate_prep_bytes(rows, "dfew", tmp_path, cfg, [], 4096)
    assert 14e9 < total < 25e9  # ~900k face frames of ~17.5 kB (rounded to 4 kB blocks), the fbanks, meta
    assert jpeg_bytes(112, 95) < jpeg_bytes(224, 95) and jpeg_bytes(224, 75) < jpeg_bytes(224, 95)
    assert frames_per_clip([{"clip_id": "not-published"}], "dfew", tmp_path) == [100]
