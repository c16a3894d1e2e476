"""`mma shard` and `mma cache` on a small real filesystem (tmpfs): refused before work when the estimate does
not fit; a disk that fills up midway stops with one line, leaves no half-written shard or cache chunk
marked finished, and a rerun after freeing space completes with the same output as a roomy disk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fake_prep import fake_config, make_fake_prep

from pipeline.core.disk import DiskSpaceError
from pipeline.core.errors import MMAError
from pipeline.core.io import read_json, sha256_file
from pipeline.core.paths import Workspace
from pipeline.store.cache import check_cache_matches, run_cache
from pipeline.store.shard import read_index, run_shard


def _stray_files(folder):
    """Temp files of an atomic write left behind (ours: .name.XXXX.tmp; zarr's: name.XXXX.partial)."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".partial")]


def _prep_twice(disk, tmp_path) -> tuple[Workspace, Workspace]:
    """The same prep output on the small disk (as in a real workdir) and, as the reference, on a roomy one."""
    ws = Workspace(disk / "work", tmp_path / "manifests")
    make_fake_prep(ws)
    reference = Workspace(tmp_path / "roomy", ws.manifest_dir)
    shutil.copytree(ws.workdir, reference.workdir)
    return ws, reference


def test_shard_on_a_full_disk(small_disks, tmp_path):
    disk = small_disks.mount(8 << 20)
    ws, reference = _prep_twice(disk, tmp_path)
    cfg = fake_config()
    want = {s["name"]: s["sha256"] for s in run_shard("fake", reference, cfg.data).index["shards"]}
    out = ws.shards_dir("fake")
    total = sum((reference.shards_dir("fake") / name).stat().st_size for name in want)
    ballast = small_disks.fill(disk, total // 2)

    with pytest.raises(DiskSpaceError, match=r"not enough disk space for shard fake: 10 of 10 shards: needs about"):
        run_shard("fake", ws, cfg.data)
    assert not list(out.glob("*.tar")) and not (out / "index.json").exists()  # refused before any write

    with pytest.raises(DiskSpaceError) as err:
        run_shard("fake", ws, cfg.data, space_check=False)
    assert "\n" not in str(err.value) and "disk full during mma shard fake" in str(err.value)
    written = sorted(p.name for p in out.glob("*.tar"))
    assert 0 < len(written) < len(want) and not _stray_files(out)
    assert all(sha256_file(out / name) == want[name] for name in written)  # whole shards only
    with pytest.raises(MMAError, match="unfinished"):
        read_index(ws, "fake")
    index = read_json(out / "index.json")
    assert {s["name"] for s in index["shards"]} <= set(written)

    ballast.unlink()  # space freed: a plain rerun keeps what was written and completes
    result = run_shard("fake", ws, cfg.data)
    assert result.kept == len(written) and result.written == len(want) - len(written)
    assert result.disk["checked"] and result.disk["estimate_bytes"] >= total - sum(
        (out / name).stat().st_size for name in written)
    assert {s["name"]: s["sha256"] for s in read_index(ws, "fake")["shards"]} == want


def test_cache_on_a_full_disk(small_disks, tmp_path):
    import zarr

    cfg = fake_config()
    disk = small_disks.mount(8 << 20)
    ws, reference = _prep_twice(disk, tmp_path)
    run_shard("fake", ws, cfg.data)
    run_shard("fake", reference, cfg.data)
    built = run_cache(cfg, reference, cluster="serial")
    assert built.complete
    want = zarr.open_group(str(reference.cache_path("fake")), mode="r")
    store = ws.cache_path("fake")
    estimate = built.summary["disk"]["estimate_bytes"]
    ballast = small_disks.fill(disk, estimate // 2)

    with pytest.raises(DiskSpaceError, match=r"cache\.zarr: not enough disk space for cache fake: 10 of 10 shards"):
        run_cache(cfg, ws, cluster="serial")
    assert not store.exists()

    # on the real Dask LocalCluster: the worker's OSError comes back and stops the run with one line
    with pytest.raises(DiskSpaceError) as err:
        run_cache(cfg, ws, cluster="local", workers=1, space_check=False)
    assert "\n" not in str(err.value) and "disk full during mma cache fake" in str(err.value)
    root = zarr.open_group(str(store), mode="r")
    done = root["shard_done"][:]
    assert not root.attrs["complete"] and 0 < done.sum() < len(done) and not _stray_files(store)
    with pytest.raises(MMAError, match="unfinished"):
        check_cache_matches(cfg, ws)
    align = root.attrs["layout"]["align"]
    for i, s in enumerate(root.attrs["layout"]["shards"]):
        if done[i]:  # a shard marked done holds exactly the roomy disk's rows
            rows = slice(s["start"], s["start"] + align)
            assert np.array_equal(root["vision"][rows], want["vision"][rows])
            assert np.array_equal(root["valid"][rows], want["valid"][rows])

    ballast.unlink()
    again = run_cache(cfg, ws, cluster="serial")
    assert again.complete and again.summary["shards_resumed"] == int(done.sum())
    root = zarr.open_group(str(store), mode="r")
    for name in ("vision", "audio", "valid", "label", "fold", "clip_id"):
        assert np.array_equal(root[name][:], want[name][:]), name
