"""`mma shard`: pack prep results into WebDataset tar shards grouped by test fold.

Output under `<workdir>/<ds>/shards/`:
  fold{k}-{NNNNNN}.tar   one sample per clip, key = clip id: `000000.jpg ...` (every face crop,
                         frame index in the name), `fbank.npy` (raw float16 fbank), `cls` (label),
                         `json` (the clip's meta.json plus its test fold)
  index.json             per shard: fold, clip ids, count, bytes, sha256; the prep config hash;
                         clips left out (failed/unprepped) with the reason

The five test folds partition a dataset, so fold k trains on the other four groups and tests on
its own. A shard closes at `data.shard_max_clips` clips or `data.shard_max_bytes` bytes.
Shards are byte-identical for the same input (sorted members, mtime 0, fixed owner and mode,
clips in manifest order), are written to a temp name and renamed, and index.json is rewritten
after each shard, so an interrupted run resumes: a shard whose clips, clip contents and prep
hash are unchanged is kept unless `force`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import DataConfig
from pipeline.core.disk import check_space, stop_when_full
from pipeline.core.errors import MMAError
from pipeline.core.folds import FOLDS
from pipeline.core.io import (
    atomic_path,
    atomic_write_json,
    read_json,
    read_json_or,
    read_jsonl,
    sha256_file,
    sha256_json,
)
from pipeline.core.paths import Workspace
from pipeline.core.progress import progress_bar
from pipeline.core.results import StageResult
from pipeline.data.manifest import read_manifest
from pipeline.prep.clip import clip_is_done

log = logging.getLogger(__name__)

INDEX_FORMAT = "mma-shards-v1"
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # a tar ends with 2 zero blocks, padded to a whole record


def shard_name(fold: int, seq: int) -> str:
    return f"fold{fold}-{seq:06d}.tar"


def sample_key(clip_id: str) -> str:
    """WebDataset key of a clip: its id with '.' and '/' replaced (the key ends at the first dot)."""
    return clip_id.replace(".", "_").replace("/", "_")


def _member_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def _clip_files(clip_dir: Path) -> list[Path]:
    frames = [p for p in (clip_dir / "frames").iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
    return sorted(frames, key=lambda p: int(p.stem))


def _clip_entry(clip_dir: Path, row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What the planner needs to know about one clip: files, tar bytes, a content fingerprint."""
    frames = _clip_files(clip_dir)
    meta_bytes = (clip_dir / "meta.json").read_bytes()
    sizes = [p.stat().st_size for p in frames] + [(clip_dir / "fbank.npy").stat().st_size, len(meta_bytes) + 64, 8]
    return {
        "clip_id": row["clip_id"],
        "label": int(row["label"]),
        "fold": int(row["test_fold"]),
        "dir": clip_dir,
        "frames": frames,
        "bytes": sum(_member_bytes(s) for s in sizes),
        "digest": hashlib.sha256(meta_bytes).hexdigest(),
        "meta": meta,
    }


def plan_shards(clips: list[dict[str, Any]], max_clips: int, max_bytes: int) -> list[dict[str, Any]]:
    """Group clips by test fold (manifest order kept) and cut each group at max_clips / max_bytes."""
    if max_clips < 1:
        raise MMAError(f"data.shard_max_clips={max_clips}: must be at least 1")
    shards: list[dict[str, Any]] = []
    for fold in FOLDS:
        members = [c for c in clips if c["fold"] == fold]
        seq, current, size = 0, [], 2 * TAR_BLOCK
        for clip in members:
            if current and (len(current) >= max_clips or size + clip["bytes"] > max_bytes):
                shards.append({"name": shard_name(fold, seq), "fold": fold, "members": current})
                seq, current, size = seq + 1, [], 2 * TAR_BLOCK
            current.append(clip)
            size += clip["bytes"]
        if current:
            shards.append({"name": shard_name(fold, seq), "fold": fold, "members": current})
    for s in shards:
        s["clips"] = [c["clip_id"] for c in s["members"]]
        s["clips_digest"] = sha256_json([[c["clip_id"], c["digest"], c["label"], c["fold"]] for c in s["members"]])
    return shards


def _sample(clip: dict[str, Any]) -> dict[str, Any]:
    """The tar members of one clip (bytes by WebDataset extension)."""
    meta = dict(clip["meta"], clip_id=clip["clip_id"], label=clip["label"], test_fold=clip["fold"])
    sample: dict[str, Any] = {
        "__key__": sample_key(clip["clip_id"]),
        "json": json.dumps(meta, sort_keys=True).encode(),
        "cls": str(clip["label"]).encode(),
        "fbank.npy": (clip["dir"] / "fbank.npy").read_bytes(),
    }
    for i, p in enumerate(clip["frames"]):
        sample[f"{i:06d}.jpg"] = p.read_bytes()
    return sample


def write_shard(path: Path, members: list[dict[str, Any]], on_clip: Any = None) -> list[list[int]]:
    """Write one tar (deterministically) to a temp name and rename it to `path`.

    Returns each clip's [first byte, end byte) in the tar: its members are adjacent, so the
    training loader reads a clip in one contiguous read (the index keeps these `ranges`).
    """
    import webdataset as wds

    ranges: list[list[int]] = []
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            # mtime an int: a float one (0.0) makes tarfile add a PAX header to every member (+1 kB each)
            writer = wds.TarWriter(fh, user="mma", group="mma", mode=0o444, mtime=0, encoder=False)
            try:
                for clip in members:
                    start = writer.tarstream.offset  # the tar's own position (its stream buffers, fh.tell() lags)
                    writer.write(_sample(clip))
                    ranges.append([start, writer.tarstream.offset])
                    if on_clip is not None:
                        on_clip()
                writer.close()
            except BaseException:
                # the temp file is discarded; closing the tar stream now (while its file is open) keeps its
                # garbage collection from writing to a closed file later (a traceback after a full disk)
                with contextlib.suppress(OSError):
                    writer.close()
                raise
    return ranges


def read_index(ws: Workspace, dataset: str) -> dict[str, Any]:
    """index.json of a dataset's shards; MMAError if absent, unreadable or unfinished."""
    path = ws.shards_dir(dataset) / "index.json"
    index = read_json(path, f"no shard index: run `mma shard {dataset}` first")
    if index.get("format") != INDEX_FORMAT or not index.get("complete"):
        raise MMAError(f"{path}: shard index is unfinished or of another format (rerun `mma shard {dataset}`)")
    return index


def _load_previous(path: Path) -> dict[str, dict[str, Any]]:
    old = read_json_or(path, {})
    if not isinstance(old, dict) or old.get("format") != INDEX_FORMAT:
        return {}
    return {s["name"]: {**s, "prep_hash": old.get("prep_hash")} for s in old.get("shards", [])}


def _reusable(previous: dict[str, Any] | None, planned: dict[str, Any], prep_hash: str, shard: Path) -> bool:
    if previous is None or previous.get("prep_hash") != prep_hash:
        return False
    if previous.get("clips_digest") != planned["clips_digest"] or previous.get("clips") != planned["clips"]:
        return False
    return shard.is_file() and shard.stat().st_size == previous.get("bytes")


def _finished_clips(dataset: str, ws: Workspace) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], int]:
    """(prep hash, clip entries to shard, clips left out with the reason, manifest rows) from prep's output."""
    prep_dir = ws.prep_dir(dataset)
    config_path = prep_dir / "prep_config.json"
    prep_hash = read_json(config_path, f"run `mma prep {dataset}` first").get("hash")
    if not prep_hash:
        raise MMAError(f"{config_path}: has no prep hash; rerun `mma prep {dataset}`")
    rows = read_manifest(ws, dataset)
    failures = {f["clip_id"]: f"prep failed at {f.get('stage')}: {f.get('error')}"
                for f in read_jsonl(prep_dir / "failures.jsonl")}
    clips, excluded = [], []
    for row in rows:
        cid = row["clip_id"]
        fold = row.get("test_fold")
        if fold is None or int(fold) not in FOLDS:
            excluded.append({"clip_id": cid, "reason": f"no valid test fold ({row.get('problem') or fold})"})
            continue
        meta = clip_is_done(prep_dir / "clips" / cid, prep_hash, cid)
        if meta is None:
            excluded.append({"clip_id": cid, "reason": failures.get(cid, "not prepped (or prep incomplete)")})
            continue
        clips.append(_clip_entry(prep_dir / "clips" / cid, row, meta))
    if not clips:
        raise MMAError(f"{prep_dir}: no prepped clip to shard ({len(excluded)} left out; see failures.jsonl)")
    return prep_hash, clips, excluded, len(rows)


def shards_to_write(plan: list[dict[str, Any]], out: Path, prep_hash: str, previous: dict[str, Any]) -> set[str]:
    """Names of the planned shards whose content changed or whose file is missing (the others are kept)."""
    return {s["name"] for s in plan if not _reusable(previous.get(s["name"]), s, prep_hash, out / s["name"])}


def estimate_shard_bytes(plan: list[dict[str, Any]], todo: set[str]) -> int:
    """Bytes the shards in `todo` will take: their clips' tar members (exact), headers and end padding."""
    return sum(sum(c["bytes"] for c in s["members"]) + TAR_RECORD for s in plan if s["name"] in todo)


def _replaced_bytes(out: Path, todo: set[str]) -> int:
    """What replacing the shards in `todo` frees: their old files, less the largest (old and new
    coexist until the rename, one shard at a time)."""
    sizes = [(out / name).stat().st_size for name in todo if (out / name).is_file()]
    return sum(sizes) - max(sizes) if sizes else 0


def _write_planned(plan: list[dict[str, Any]], out: Path, index: dict[str, Any], previous: dict[str, Any],
                   todo: set[str], label: str) -> tuple[int, int]:
    """Write the shards in `todo` (reuse the others); index.json is updated after each. (written, kept)

    Until the last shard, index.json is marked unfinished and also lists the previous run's entries
    of the shards not reached yet, so a run stopped midway (killed, disk full) resumes with them.
    """
    index_path = out / "index.json"
    pending = {name: {k: v for k, v in entry.items() if k != "prep_hash"} for name, entry in previous.items()}
    # compact JSON while unfinished: the index is rewritten after every shard (O(shards x clips) bytes)
    atomic_write_json(index_path, {**index, "shards": list(pending.values())}, indent=None)  # before any rename
    written = kept = 0
    total = sum(len(s["members"]) for s in plan if s["name"] in todo)
    with progress_bar(label, total, "clips") as progress:
        task = progress.add_task(label, total=total)
        for s in plan:
            path = out / s["name"]
            if s["name"] in todo:
                ranges = write_shard(path, s["members"], on_clip=lambda: progress.advance(task))
                written += 1
                entry = {"bytes": path.stat().st_size, "sha256": sha256_file(path), "ranges": ranges}
            else:
                kept += 1
                entry = {k: previous[s["name"]][k] for k in ("bytes", "sha256", "ranges") if k in previous[s["name"]]}
            index["shards"].append({"name": s["name"], "fold": s["fold"], "count": len(s["clips"]), **entry,
                                    "clips": s["clips"], "clips_digest": s["clips_digest"]})
            pending.pop(s["name"], None)
            atomic_write_json(index_path, {**index, "shards": index["shards"] + list(pending.values())}, indent=None)
    planned_names = {s["name"] for s in plan}
    for old in out.glob("fold*-*.tar"):
        if old.name not in planned_names:
            log.info("removing %s (no longer in the shard plan)", old)
            old.unlink()
    return written, kept


@dataclass(frozen=True)
class ShardResult(StageResult):
    """What `run_shard` did: shard counts, clips per fold, the clips left out, the disk estimate
    (`pipeline.core.disk.SpaceEstimate.to_json`), and index.json's content."""

    shards: int
    written: int
    kept: int
    clips: int
    clips_per_fold: dict[str, int]
    left_out: list[dict[str, Any]]
    prep_hash: str
    seconds: float
    disk: dict[str, Any]
    index: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """What `mma shard` prints: everything but the index itself (it is index.json)."""
        out = super().to_json()
        out.pop("index")
        return out


def run_shard(dataset: str, ws: Workspace, data_cfg: DataConfig, *, force: bool = False,
              space_check: bool = True) -> ShardResult:
    """Pack every successfully prepped clip of `dataset` into fold-grouped shards; index.json beside them.

    The shards to write are measured first (their exact tar bytes) and the run refused when they
    do not fit (`space_check=False` tries anyway); a disk that fills up midway stops it with one
    line, with no half-written shard in place and index.json marked unfinished (a rerun resumes).
    """
    start = time.perf_counter()
    prep_hash, clips, excluded, clips_total = _finished_clips(dataset, ws)
    plan = plan_shards(clips, data_cfg.shard_max_clips, data_cfg.shard_max_bytes)
    out = ws.shards_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    with stop_when_full(out, f"mma shard {dataset}", f"mma shard {dataset}"):
        for stale in out.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        index_path = out / "index.json"
        previous = {} if force else _load_previous(index_path)
        todo = shards_to_write(plan, out, prep_hash, previous)
        disk = check_space(out, estimate_shard_bytes(plan, todo), f"shard {dataset}: {len(todo)} of {len(plan)} "
                           "shards", space_check=space_check, freed=_replaced_bytes(out, todo))
        index: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "dataset": dataset,
            "prep_hash": prep_hash,
            "complete": False,
            "max_clips": data_cfg.shard_max_clips,
            "max_bytes": data_cfg.shard_max_bytes,
            "shards": [],
            "folds": {},
            "clips_total": clips_total,
            "clips_sharded": len(clips),
            "excluded": excluded,
        }
        written, kept = _write_planned(plan, out, index, previous, todo, f"shard {dataset}")
        for fold in FOLDS:
            names = [s["name"] for s in index["shards"] if s["fold"] == fold]
            index["folds"][str(fold)] = {"shards": names,
                                         "clips": sum(s["count"] for s in index["shards"] if s["fold"] == fold)}
        index["complete"] = True
        atomic_write_json(index_path, index)
    seconds = time.perf_counter() - start
    log.info("shard %s: %d clips in %d shards (%d written, %d kept), %d clip(s) left out -> %s (%.1f s)", dataset,
             len(clips), len(plan), written, kept, len(excluded), out, seconds)
    for e in excluded[:10]:
        log.warning("left out %s: %s", e["clip_id"], e["reason"])
    if len(excluded) > 10:
        log.warning("... %d more clip(s) left out: see %s", len(excluded) - 10, index_path)
    return ShardResult(shards=len(index["shards"]), written=written, kept=kept, clips=index["clips_sharded"],
                       clips_per_fold={k: v["clips"] for k, v in index["folds"].items()}, left_out=excluded,
                       prep_hash=prep_hash, seconds=round(seconds, 2), disk=disk.to_json(), index=index)
