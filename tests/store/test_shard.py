"""`mma shard`: fold grouping, round trip of every clip, byte-identical rebuilds, resume, left-out clips."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from fake_prep import fake_config, make_fake_prep
from typer.testing import CliRunner

from pipeline.core.io import append_jsonl, sha256_file
from pipeline.core.paths import Workspace
from pipeline.store.shard import read_index, run_shard


@pytest.fixture
def fake_ws(tmp_path):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    rows = make_fake_prep(ws)
    return ws, rows


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, m.mtime, m.uid, m.gid, m.uname, m.mode, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_round_trip_fold_grouping_and_identical_rebuild(fake_ws):
    ws, rows = fake_ws
    cfg = fake_config()
    index = run_shard("fake", ws, cfg.data).index
    folds = {r["clip_id"]: r["test_fold"] for r in rows}
    out = ws.shards_dir("fake")

    seen = []
    for entry in index["shards"]:
        path = out / entry["name"]
        assert entry["name"].startswith(f"fold{entry['fold']}-")
        assert entry["bytes"] == path.stat().st_size and entry["sha256"] == sha256_file(path)
        assert entry["count"] == len(entry["clips"]) <= cfg.data.shard_max_clips
        members = _members(path)
        keys = sorted({name.split(".", 1)[0] for name, *_ in members})
        assert keys == sorted(entry["clips"])
        for cid in entry["clips"]:
            assert folds[cid] == entry["fold"]  # grouped by test fold
            clip_dir = ws.prep_dir("fake") / "clips" / cid
            data = {name.split(".", 1)[1]: blob for name, *_, blob in members if name.startswith(cid + ".")}
            meta = json.loads(data["json"])
            assert meta["clip_id"] == cid and meta["test_fold"] == folds[cid] and int(data["cls"]) == meta["label"]
            frames = sorted((clip_dir / "frames").iterdir())
            assert [k for k in data if k.endswith(".jpg")] == [f"{i:06d}.jpg" for i in range(len(frames))]
            assert all(data[f"{i:06d}.jpg"] == p.read_bytes() for i, p in enumerate(frames))
            fbank = np.load(io.BytesIO(data["fbank.npy"]))
            assert fbank.dtype == np.float16 and np.array_equal(fbank, np.load(clip_dir / "fbank.npy"))
        assert all(m[1:6] == (0, 0, 0, "mma", 0o444) for m in members)  # deterministic tar headers
        seen += entry["clips"]
    assert sorted(seen) == sorted(folds)  # every clip exactly once
    assert index["folds"]["1"]["clips"] == sum(1 for f in folds.values() if f == 1)
    assert read_index(ws, "fake")["complete"] is True

    again = run_shard("fake", ws, cfg.data)  # idempotent: nothing rewritten
    assert again.written == 0 and again.kept == len(index["shards"])
    hashes = {s["name"]: s["sha256"] for s in index["shards"]}
    shutil.rmtree(out)
    rebuilt = run_shard("fake", ws, cfg.data).index  # from scratch: byte-identical
    assert {s["name"]: sha256_file(out / s["name"]) for s in rebuilt["shards"]} == hashes
    forced = run_shard("fake", ws, cfg.data, force=True)
    assert forced.written == len(hashes)


def test_failed_clips_left_out_bytes_limit_and_resume(fake_ws):
    ws, rows = fake_ws
    cfg = fake_config()
    broken = rows[4]["clip_id"]
    (ws.prep_dir("fake") / "clips" / broken / "meta.json").unlink()
    append_jsonl(ws.prep_dir("fake") / "failures.jsonl", {"clip_id": broken, "stage": "faces", "error": "boom"})
    cfg.data.shard_max_clips = 100
    cfg.data.shard_max_bytes = 2048  # smaller than any clip: one clip per shard
    index = run_shard("fake", ws, cfg.data).index
    assert [e["clip_id"] for e in index["excluded"]] == [broken]
    assert "prep failed at faces: boom" in index["excluded"][0]["reason"]
    assert all(s["count"] == 1 for s in index["shards"])
    assert index["clips_sharded"] == len(rows) - 1

    # a shard lost by an interrupted run is rewritten; the others are kept
    victim = ws.shards_dir("fake") / index["shards"][3]["name"]
    victim.unlink()
    resumed = run_shard("fake", ws, cfg.data)
    assert resumed.written == 1 and victim.is_file()


def test_shard_real_prep_output(sharded, prepped, workspace):
    """The session's real prep output (MTCNN crops, kaldi fbank): every good clip in exactly one shard."""
    ids = [c for s in sharded["shards"] for c in s["clips"]]
    assert len(ids) == len(set(ids)) == prepped["clips_ok"]
    assert {e["clip_id"] for e in sharded["excluded"]} == {f["clip_id"] for f in prepped["failures"]}
    assert set(sharded["folds"]) == {"1", "2", "3", "4", "5"}


def test_cli_shard(fake_ws, tmp_path):
    from cli import app

    ws, rows = fake_ws
    result = CliRunner().invoke(app, ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), "shard",
                                      "fake", "--max-clips", "4"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["clips"] == len(rows) and out["shards"] == 5 and out["left_out"] == []
    missing = CliRunner().invoke(app, ["--workdir", str(tmp_path / "none"), "--manifests", str(tmp_path / "m"),
                                       "shard", "fake"])
    assert missing.exit_code != 0 and "error:" in missing.output and "prep" in missing.output
