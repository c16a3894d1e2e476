"""`mma prep` on a small real filesystem (tmpfs): the estimate against what prep really writes, the refusal
before work, a disk that fills up midway (no half-written clip folder, no clip counted as failed), and a
rerun after freeing space that completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import DataConfig
from pipeline.core.disk import DiskSpaceError, block_bytes, tree_bytes
from pipeline.core.io import read_json, read_jsonl
from pipeline.core.paths import Workspace
from pipeline.data.synth import make_synth_dataset
from pipeline.prep.clip import clip_is_done, settings_hash
from pipeline.prep.estimate import estimate_prep_bytes
from pipeline.prep.run import run_prep

CLIPS = 8


@pytest.fixture(scope="module")
def dfew_root(tmp_path_factory) -> Path:
    """A synth dataset in DFEW's layout with its official face frames (prep without MTCNN: fast)."""
    root = tmp_path_factory.mktemp("dfew") / "DFEW"
    make_synth_dataset(root, layout="dfew", clips_per_class=CLIPS, seconds=0.4, classes=1, seed=5)
    return root


def test_prep_on_a_full_disk(small_disks, tmp_path, dfew_root):
    cfg = DataConfig(crop_size=48, faces="official")
    disk = small_disks.mount(4 << 20)
    ws = Workspace(disk / "work", tmp_path / "manifests")
    clips = ws.prep_dir("dfew") / "clips"
    ballast = small_disks.fill(disk, 160 << 10)  # room for about 3 of the 8 clip folders

    with pytest.raises(DiskSpaceError, match=rf"clips: not enough disk space for prep dfew: {CLIPS} clips"):
        run_prep("dfew", dfew_root, ws, cfg, cluster="serial")
    assert not [p for p in clips.iterdir()]  # refused before any clip

    with pytest.raises(DiskSpaceError) as err:
        run_prep("dfew", dfew_root, ws, cfg, cluster="serial", space_check=False)
    assert "\n" not in str(err.value) and "disk full during mma prep dfew" in str(err.value)
    digest = settings_hash(cfg.resolved("dfew", dfew_root))
    kept = sorted(p.name for p in clips.iterdir())
    assert 0 < len(kept) < CLIPS and all(not name.startswith(".") for name in kept)  # no temp folder left
    assert all(clip_is_done(clips / name, digest, name) for name in kept)  # each folder left is a whole clip
    assert not read_jsonl(ws.prep_dir("dfew") / "failures.jsonl")  # the disk failed, not the clips

    ballast.unlink()  # space freed: a plain rerun keeps the finished clips and does the rest
    result = run_prep("dfew", dfew_root, ws, cfg, cluster="serial")
    assert result.clips_ok == CLIPS and result.clips_failed == 0
    assert result.summary["skipped"] == len(kept) and result.summary["processed"] == CLIPS - len(kept)

    # the estimate against what prep wrote: the formula (no finished clip to measure) within 2x, and
    # once clips are finished, measured on them, within 10 %
    block = block_bytes(clips)
    written = sum(tree_bytes(clips / f"{i:05d}") for i in range(1, CLIPS + 1))
    rows = [{"clip_id": f"{i:05d}"} for i in range(1, CLIPS + 1)]
    guess = estimate_prep_bytes(rows, "dfew", dfew_root, cfg, [], block)
    measured = estimate_prep_bytes(rows, "dfew", dfew_root, cfg, [clips / kept[0]], block)
    assert written / 2 < guess < written * 2 and abs(measured - written) < 0.1 * written, (guess, measured, written)


def test_a_truncated_file_in_a_clip_folder_is_not_finished(tmp_path):
    """What a torn write leaves (a fbank.npy cut short, a frame missing) never passes as a finished clip."""
    from fake_prep import make_fake_prep

    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    make_fake_prep(ws, clips_per_fold=1)
    clips = ws.prep_dir("fake") / "clips"
    digest = read_json(ws.prep_dir("fake") / "prep_config.json")["hash"]
    assert all(clip_is_done(clips / cid, digest, cid) for cid in ("00001", "00002", "00004"))
    fbank = clips / "00001" / "fbank.npy"
    fbank.write_bytes(fbank.read_bytes()[:-1])  # one byte short of its header's shape
    (clips / "00004" / "frames" / "000003.jpg").unlink()
    assert clip_is_done(clips / "00001", digest, "00001") is None
    assert clip_is_done(clips / "00004", digest, "00004") is None
    assert clip_is_done(clips / "00002", digest, "00002") is not None
