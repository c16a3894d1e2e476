"""`mma prep`: the `mma check` comparison (logged), the manifest, then every clip through `pipeline.prep.clip.process_video` on Dask.

Per clip, `<workdir>/<ds>/prep/clips/<clip_id>/` (see `pipeline.prep.clip`). Beside them: `prep_config.json` (the settings and their `hash`), `failures.jsonl` (clip_id,
stage, error), `summary.json`. A rerun skips clips whose directory validates against the
current settings; `force` redoes them. `process_video` is the one per-clip function: the same
code runs in-process ("serial"), on a LocalCluster, or on SLURM (pipeline.prep.cluster).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from model.config import ModelConfig
from pipeline.core.config import DataConfig, to_dict, update_dataclass
from pipeline.core.disk import SpaceEstimate, block_bytes, check_space, stop_when_full
from pipeline.core.errors import MMAError
from pipeline.core.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_json_or,
    read_jsonl,
)
from pipeline.core.paths import Workspace
from pipeline.core.results import StageResult, render
from pipeline.data.check import check_for_prep
from pipeline.data.manifest import build_manifest, write_manifest
from pipeline.prep.clip import check_prep_settings, clip_is_done, prep_settings, process_video, settings_hash
from pipeline.prep.cluster import ClusterSpec, map_tasks, open_client
from pipeline.prep.estimate import CALIBRATION_CLIPS, estimate_prep_bytes
from pipeline.prep.video import ClipError

log = logging.getLogger(__name__)

DEFAULT_MAX_FAILED = 0.01  # `mma prep` fails (exit 1) when more than this fraction of the clips failed


def parse_max_failed(text: str) -> float:
    """`--max-failed` as a fraction: '1%' -> 0.01, '0.05' -> 0.05; MMAError for anything else."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise MMAError(f"--max-failed {text!r}: give a percentage like 1% or a fraction like 0.01") from None
    if not 0.0 <= value <= 1.0:
        raise MMAError(f"--max-failed {text!r}: must be between 0% and 100%")
    return value

# --------------------------------------------------------------------------- the task Dask runs


_THREADS_SET = False


def _prep_task(row: dict[str, Any], *, clips_dir: str, data: dict[str, Any], device: str | None,
               threads: int | None, frames_per_clip: int) -> dict[str, Any]:
    """Process one manifest row; never raises for a bad clip (returns ok=False, stage, error)."""
    global _THREADS_SET
    if threads and not _THREADS_SET:
        import torch

        torch.set_num_threads(int(threads))
        _THREADS_SET = True
    cfg = update_dataclass(DataConfig(), data)
    clip_id = row["clip_id"]
    try:
        meta = process_video(
            row.get("video") or None,
            Path(clips_dir) / clip_id,
            cfg,
            clip_id=clip_id,
            label=int(row["label"]),
            device=device,
            frames_dir=row.get("frames_dir") or None,
            frames_per_clip=frames_per_clip,
        )
    except ClipError as exc:
        return {"clip_id": clip_id, "ok": False, "stage": exc.stage, "error": str(exc)}
    return {"clip_id": clip_id, "ok": True, "num_frames": meta["num_frames"], "has_audio": meta["has_audio"]}


# --------------------------------------------------------------------------- the stage


def _clean_stale_temps(clips_dir: Path) -> int:
    """Remove temp dirs left by a killed run (finished clips are never temp dirs)."""
    n = 0
    for p in clips_dir.glob(".*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    for p in clips_dir.glob(".*.old"):
        shutil.rmtree(p, ignore_errors=True)
    return n


def _check_prep_config(path: Path, settings: dict[str, Any], digest: str, force: bool) -> None:
    if not path.exists() or force:
        return
    old = read_json_or(path, None)
    if not isinstance(old, dict) or old.get("hash") == digest:
        return
    before = old.get("settings", {})
    diff = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
    raise MMAError(f"{path}: this prep was made with other settings ({', '.join(diff) or 'unknown'}); "
                   "use --force to redo it, or another --workdir")


def _plan_clips(scope: list[dict[str, Any]], clips_dir: Path, digest: str,
                force: bool) -> tuple[dict[str, dict], list[dict[str, Any]], list[dict[str, Any]]]:
    """(finished clips' meta by id, rows to process, rows the manifest marks unusable)."""
    done: dict[str, dict] = {}
    todo: list[dict[str, Any]] = []
    unusable: list[dict[str, Any]] = []
    for r in scope:
        if not r["usable"]:
            unusable.append(r)
            continue
        meta = None if force else clip_is_done(clips_dir / r["clip_id"], digest, r["clip_id"])
        if meta is not None:
            done[r["clip_id"]] = meta
        else:
            todo.append(r)
    return done, todo, unusable


def _reset_ledger(failures_path: Path, todo: list[dict[str, Any]], unusable: list[dict[str, Any]],
                  done: dict[str, dict]) -> None:
    """Drop old failures of the clips this run retries (or found done); record the unusable rows again."""
    retried = {r["clip_id"] for r in todo} | {r["clip_id"] for r in unusable} | set(done)
    kept = [f for f in read_jsonl(failures_path) if f.get("clip_id") not in retried]
    atomic_write_text(failures_path, "".join(json.dumps(f) + "\n" for f in kept))
    for r in unusable:
        append_jsonl(failures_path, {"clip_id": r["clip_id"], "stage": "manifest", "error": r["problem"],
                                     "video": r["video"]})


def _check_space(dataset: str, root: Path, data_cfg: DataConfig, clips_dir: Path, done: dict[str, dict],
                 todo: list[dict[str, Any]], space_check: bool) -> SpaceEstimate:
    """The clip folders `todo` will write against the free space (a folder being redone counts as freed)."""
    block = block_bytes(clips_dir)
    done_dirs = [clips_dir / cid for cid in list(done)[:CALIBRATION_CLIPS]]
    needed = estimate_prep_bytes(todo, dataset, root, data_cfg, done_dirs, block)
    replaced = [r for r in todo if (clips_dir / r["clip_id"]).is_dir()]
    freed = estimate_prep_bytes(replaced, dataset, root, data_cfg, done_dirs, block) if replaced else 0
    return check_space(clips_dir, needed, f"prep {dataset}: {len(todo)} clips", space_check=space_check,
                       freed=freed)


def _process(task: Any, todo: list[dict[str, Any]], spec: Any, failures_path: Path, label: str) -> None:
    """Run the clip task over `todo` on Dask; each clip that fails is appended to the ledger as it returns."""
    def on_result(row: dict, result: dict) -> None:
        if result["ok"]:
            return
        record = {"clip_id": row["clip_id"], "stage": result["stage"], "error": result["error"], "video": row["video"]}
        append_jsonl(failures_path, record)
        log.warning("clip %s failed at %s: %s", row["clip_id"], result["stage"], result["error"])

    def on_error(row: dict, exc: BaseException) -> None:  # the worker process died on this clip
        on_result(row, {"ok": False, "stage": "worker", "error": f"worker died ({type(exc).__name__}: {exc})"})

    with open_client(spec) as client:
        map_tasks(task, todo, client, description=label, unit="clips", on_result=on_result, on_error=on_error)


def run_prep(
    dataset: str,
    root: str | Path,
    ws: Workspace,
    data_cfg: DataConfig,
    *,
    workers: int = 2,
    threads_per_worker: int = 1,
    cluster: str = "local",
    limit: int | None = None,
    force: bool = False,
    device: str | None = None,
    slurm: dict[str, Any] | None = None,
    max_failed: float = DEFAULT_MAX_FAILED,
    frames_per_clip: int = ModelConfig.num_frames,
    space_check: bool = True,
) -> PrepResult:
    """Build the manifest, then prep every (or the first `limit`) clip; returns the summary.

    The summary's `too_many_failed` is true when more than `max_failed` (a fraction) of the clips
    in scope failed; the result's exit code is 1 then. The ledger and summary are written either
    way. `frames_per_clip` (model.num_frames) is what "short clip" means in the summary.

    Before any clip, the size of the clip folders is estimated (`pipeline.prep.estimate`) and the
    run refused when it does not fit (`space_check=False` tries anyway); a disk that fills up
    mid-run stops it with one line (finished clips are kept; a rerun resumes).

    Raises MMAError only when the run itself is broken (bad root, unreadable split files,
    settings clash, no disk space); per-clip failures go to failures.jsonl and the run goes on.
    """
    root = Path(root)
    data_cfg = data_cfg.resolved(dataset, root)  # data.compat -> concrete choices (recorded in prep_config.json)
    check_prep_settings(data_cfg)
    start = time.perf_counter()
    check_for_prep(dataset, root, ws)  # the `mma check` comparison; logs one line, never fails prep
    rows, classes = build_manifest(dataset, root, ws, check_frames=data_cfg.faces == "official")
    if data_cfg.faces == "official" and not any(r["frames_dir"] for r in rows):
        raise MMAError(f"{root}: --faces official needs DFEW's Clip/clip_224x224 frame folders")
    scope = rows[: limit] if limit is not None else rows
    prep_dir = ws.prep_dir(dataset)
    clips_dir = prep_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    settings = prep_settings(data_cfg)
    digest = settings_hash(data_cfg)
    config_path = prep_dir / "prep_config.json"
    _check_prep_config(config_path, settings, digest, force)
    with stop_when_full(prep_dir, f"mma prep {dataset}", f"mma prep {dataset}"):
        atomic_write_json(config_path, {"hash": digest, "settings": settings, "dataset": dataset,
                                        "root": str(root.resolve()), "classes": classes})
        stale = _clean_stale_temps(clips_dir)
        if stale:
            log.info("removed %d unfinished clip folders left by an interrupted run", stale)

        done, todo, unusable = _plan_clips(scope, clips_dir, digest, force)
        log.info("prep %s: %d clips in scope, %d already done, %d to process, %d unusable in the manifest",
                 dataset, len(scope), len(done), len(todo), len(unusable))
        disk = _check_space(dataset, root, data_cfg, clips_dir, done, todo, space_check)
        failures_path = prep_dir / "failures.jsonl"
        _reset_ledger(failures_path, todo, unusable, done)
        if todo:
            task = functools.partial(_prep_task, clips_dir=str(clips_dir), data=to_dict(data_cfg), device=device,
                                     threads=threads_per_worker if cluster != "serial" else None,
                                     frames_per_clip=frames_per_clip)
            # SLURM worker jobs log into the prep dir, not slurm-<id>.out files in the current directory
            slurm = {"log_directory": str(prep_dir / "dask-logs"), **(slurm or {})}
            spec = ClusterSpec(kind=cluster, workers=workers, threads_per_worker=threads_per_worker, slurm=slurm)
            _process(task, todo, spec, failures_path, f"prep {dataset}")

        summary = _summarise(dataset, root, ws, scope, clips_dir, digest, failures_path, frames_per_clip)
        seconds = time.perf_counter() - start
        summary.update(disk=disk.to_json(), skipped=len(done), processed=len(todo), seconds=round(seconds, 2),
                       clips_per_second=round(len(todo) / max(seconds, 1e-9), 3))
        failed_fraction = summary["clips_failed"] / summary["clips_total"] if summary["clips_total"] else 0.0
        summary.update(failed_fraction=round(failed_fraction, 6), max_failed=max_failed,
                       too_many_failed=failed_fraction > max_failed)
        atomic_write_json(prep_dir / "summary.json", summary)
        _enrich_manifest(ws, dataset, rows, clips_dir, digest, failures_path, classes)
        log.info("prep %s: %d/%d clips ok, %d failed, %d no-audio, %d frames without a face -> %s", dataset,
                 summary["clips_ok"], summary["clips_total"], summary["clips_failed"], summary["no_audio"],
                 summary["no_face_frames"], prep_dir)
    return PrepResult(summary)


def _summarise(dataset: str, root: Path, ws: Workspace, scope: list[dict], clips_dir: Path, digest: str,
               failures_path: Path, frames_per_clip: int) -> dict[str, Any]:
    """Counts over the clips in scope, from what is on disk (so a resumed run reports the whole)."""
    ok, no_audio, no_face_frames, no_face_clips, short, frames = 0, 0, 0, 0, 0, 0
    for r in scope:
        meta = clip_is_done(clips_dir / r["clip_id"], digest, r["clip_id"])
        if meta is None:
            continue
        ok += 1
        frames += meta["num_frames"]
        no_audio += 0 if meta["has_audio"] else 1
        no_face_frames += int(meta.get("no_face_frames", 0))
        no_face_clips += 1 if meta.get("no_face_frames", 0) >= meta["num_frames"] else 0
        short += 1 if meta["num_frames"] < frames_per_clip else 0
    in_scope = {r["clip_id"] for r in scope}
    failures = [f for f in read_jsonl(failures_path) if f.get("clip_id") in in_scope]
    by_stage: dict[str, int] = {}
    for f in failures:
        by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
    return {
        "dataset": dataset,
        "root": str(root.resolve()),
        "prep_dir": str(clips_dir.parent),
        "config_hash": digest,
        "clips_total": len(scope),
        "clips_ok": ok,
        "clips_failed": len(scope) - ok,
        "no_face_frames": no_face_frames,
        "no_face_clips": no_face_clips,
        "no_audio": no_audio,
        "short_clips": short,
        "frames_per_clip": frames_per_clip,
        "frames": frames,
        "failures_by_stage": by_stage,
        "failures": [{"clip_id": f["clip_id"], "stage": f["stage"], "error": f["error"]} for f in failures],
    }


def _enrich_manifest(ws: Workspace, dataset: str, rows: list[dict], clips_dir: Path, digest: str,
                     failures_path: Path, classes: list[str]) -> None:
    """Add num_frames, fps, has_audio, audio_seconds and prep_status to the manifest rows."""
    failed = {f["clip_id"]: f["stage"] for f in read_jsonl(failures_path)}
    for r in rows:
        meta = clip_is_done(clips_dir / r["clip_id"], digest, r["clip_id"])
        if meta is not None:
            r.update(num_frames=meta["num_frames"], fps=meta["fps"], has_audio=meta["has_audio"],
                     audio_seconds=meta["audio_seconds"], prep_status="ok")
        else:
            r.update(num_frames=None, fps=None, has_audio=None, audio_seconds=None,
                     prep_status=f"failed:{failed[r['clip_id']]}" if r["clip_id"] in failed else "pending")
    write_manifest(ws, dataset, rows, classes)


def summary_table(summary: dict[str, Any]) -> Table:
    """A one-screen rich Table of a prep summary, failures listed below the counts."""
    table = Table(title=f"mma prep {summary['dataset']}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    short = f"clips < {summary.get('frames_per_clip', ModelConfig.num_frames)} frames"
    for key, label in (("clips_total", "clips"), ("clips_ok", "ok"), ("clips_failed", "failed"),
                       ("skipped", "already done (skipped)"), ("processed", "processed now"),
                       ("no_audio", "no audio track"), ("no_face_clips", "clips without any face"),
                       ("no_face_frames", "frames without a face"), ("short_clips", short)):
        if key in summary:
            style = "red" if key == "clips_failed" and summary[key] else None
            table.add_row(label, str(summary[key]), style=style)
    if "seconds" in summary:
        table.add_row("seconds", f"{summary['seconds']:.1f}")
    shown = summary.get("failures", [])[:8]
    for f in shown:
        table.add_row(f"[red]failed {f['clip_id']} ({f['stage']})", f["error"][-60:])
    if len(summary.get("failures", [])) > len(shown):
        table.add_row(f"... {len(summary['failures']) - len(shown)} more", "see failures.jsonl")
    return table


@dataclass(frozen=True)
class PrepResult(StageResult):
    """What `run_prep` did: `summary` is the content of prep/summary.json (counts, failures, timing)."""

    summary: dict[str, Any]

    @property
    def clips_ok(self) -> int:
        return int(self.summary["clips_ok"])

    @property
    def clips_failed(self) -> int:
        return int(self.summary["clips_failed"])

    def to_json(self) -> dict[str, Any]:
        return dict(self.summary)

    def text(self) -> str:
        lines = [render(summary_table(self.summary))]
        if self.clips_failed:
            lines.append(f"{self.clips_failed} clip(s) failed: see {Path(self.summary['prep_dir']) / 'failures.jsonl'}")
        return "\n".join(lines)

    @property
    def errors(self) -> tuple[str, ...]:
        s = self.summary
        if not s.get("too_many_failed"):
            return ()
        return (f"{s['clips_failed']} of {s['clips_total']} clips failed "
                f"({100 * s['failed_fraction']:.1f}% > --max-failed {100 * s['max_failed']:g}%)",)
