"""`mma check`: compare a local dataset copy with the published split before hours of prep.

What is compared (the published split: `pipeline.data.published`):
- problems (they would change a paper number; exit 1): a clip the copy's split files list that
  is missing on disk (`missing_on_disk`) or whose video does not open (`unreadable`: a header
  probe with PyAV, no decode), and a clip whose label (`label_differs`) or test fold
  (`fold_differs`) in the copy's split files differs from the published split;
- warnings (reported with counts, never a refusal): published clips the copy's split files do
  not list (`not_in_copy`: a copy that is a subset), listed clips the published split does not
  hold (`not_published`), videos on disk in no split file (`unlisted_on_disk`), clips with
  split-file problems (`split_file_problems`), and, after `mma prep`, clips whose face-frame
  count differs from the authors' count by more than max(2, 10 %) of it (`frame_count`).
`synth` has no published split: only the copy against its own split files is checked.

The result goes to `<workdir>/<dataset>/check.json` (atomic); `check_table` renders it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Workspace
from pipeline.core.progress import progress_bar
from pipeline.core.results import StageResult, render
from pipeline.data.manifest import dataset_layout, parse_dataset, read_manifest, videos_on_disk
from pipeline.data.published import has_published_split, published_splits_path, read_published_split

log = logging.getLogger(__name__)

FIRST_FEW = 5  # clips named per finding in the table and the summary (check.json keeps 50)
KEPT = 50
PROBLEMS = ("missing_on_disk", "unreadable", "label_differs", "fold_differs")
WARNINGS = ("not_in_copy", "not_published", "unlisted_on_disk", "split_file_problems", "frame_count")
TITLES = {
    "missing_on_disk": "listed but missing on disk",
    "unreadable": "video does not open",
    "label_differs": "label differs from the published split",
    "fold_differs": "test fold differs from the published split",
    "not_in_copy": "published clips not in this copy (a subset)",
    "not_published": "listed clips not in the published split",
    "unlisted_on_disk": "videos on disk in no split file",
    "split_file_problems": "clips with split-file problems",
    "frame_count": "face frames differ from the authors' count",
}


def frame_tolerance(authors_frames: int) -> int:
    """Allowed |ours - authors'| face-frame difference: max(2, 10 % of the authors' count)."""
    return max(2, int(round(0.10 * authors_frames)))


def probe_video(path: Path) -> str | None:
    """None when the file opens and has a video stream (header only, no decode); else the reason."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    return None


def _probe_all(videos: dict[str, Path], workers: int | None) -> dict[str, str]:
    """clip_id -> reason for every video that does not open (threads, with a progress bar)."""
    bad: dict[str, str] = {}
    if not videos:
        return bad
    items = list(videos.items())
    with progress_bar("check: open videos", total=len(items), unit="videos") as bar, \
            ThreadPoolExecutor(max_workers=workers or min(16, 2 * (os.cpu_count() or 1))) as pool:
        task = bar.add_task("check: open videos", total=len(items))
        for (clip_id, _), reason in zip(items, pool.map(lambda kv: probe_video(kv[1]), items)):
            if reason is not None:
                bad[clip_id] = reason
            bar.advance(task)
    return bad


def _finding(entries: list[str]) -> dict[str, Any]:
    return {"count": len(entries), "first": entries[:KEPT]}


def _prepped_frames(ws: Workspace, dataset: str) -> dict[str, int]:
    """clip_id -> face frames of clips `mma prep` finished (empty before prep)."""
    if not ws.manifest(dataset).is_file():
        return {}
    rows = read_manifest(ws, dataset)
    return {r["clip_id"]: r["num_frames"] for r in rows
            if r.get("prep_status") == "ok" and r.get("num_frames") is not None}


@dataclass(frozen=True)
class CheckResult(StageResult):
    """`mma check`: `record` is check.json's content (counts, problems, warnings, ok, summary); exit
    status 1 when the copy has problems (missing, unreadable or relabelled clips)."""

    record: dict[str, Any]
    path: Path

    @property
    def ok(self) -> bool:
        return bool(self.record["ok"])

    @property
    def summary(self) -> str:
        return str(self.record["summary"])

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)

    def text(self) -> str:
        return f"{render(check_table(self.record))}\n{self.summary}\nwritten: {self.path}"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def check_dataset(dataset: str, root: str | Path, ws: Workspace, *, probe: bool = True,
                  workers: int | None = None) -> CheckResult:
    """Compare the copy at `root` with the published split; write and return the check result."""
    root = Path(root)
    rows, _classes, file_problems = parse_dataset(dataset, root)
    layout = dataset_layout(dataset, root)
    published = read_published_split(dataset) if has_published_split(dataset) else None
    listed = {r["clip_id"]: r for r in rows}
    on_disk = videos_on_disk(layout, root)

    missing = [cid for cid, r in listed.items()
               if not Path(r["video"]).is_file() and not (r["frames_dir"] and Path(r["frames_dir"]).is_dir())]
    probed = {cid: on_disk[cid] for cid in listed if cid in on_disk} if probe else {}
    unreadable = _probe_all(probed, workers)

    found: dict[str, list[str]] = {k: [] for k in (*PROBLEMS, *WARNINGS)}
    found["missing_on_disk"] = missing
    found["unreadable"] = [f"{cid} ({reason})" for cid, reason in unreadable.items()]
    found["unlisted_on_disk"] = sorted(set(on_disk) - set(listed))
    found["split_file_problems"] = [f"{cid} ({r['problem']})" for cid, r in listed.items()
                                    if r["problem"] and not r["problem"].startswith("video missing")]
    found["split_file_problems"] += file_problems
    if published is not None:
        for cid, r in listed.items():
            pub = published.get(cid)
            if pub is None:
                found["not_published"].append(cid)
                continue
            if r["label"] != pub.label:
                yours = r["label_name"] or f"unknown {r['label_raw']!r}"
                found["label_differs"].append(f"{cid} (yours: {yours}, published: {pub.label_name})")
            if r["test_fold"] != pub.test_fold:
                found["fold_differs"].append(f"{cid} (yours: {r['test_fold'] or 'none'}, published: {pub.test_fold})")
        found["not_in_copy"] = sorted(set(published) - set(listed))
        for cid, frames in _prepped_frames(ws, dataset).items():
            pub = published.get(cid)
            if pub is not None and abs(frames - pub.authors_num_frames) > frame_tolerance(pub.authors_num_frames):
                found["frame_count"].append(f"{cid} (ours: {frames}, authors': {pub.authors_num_frames})")

    result: dict[str, Any] = {
        "dataset": dataset,
        "root": str(root.resolve()),
        "published_split": str(published_splits_path(dataset)) if published is not None else None,
        "counts": {"published": len(published) if published is not None else None, "listed": len(listed),
                   "on_disk": len(on_disk), "probed": len(probed)},
        "frame_tolerance": "max(2, 10% of the authors' count)",
        "problems": {k: _finding(found[k]) for k in PROBLEMS},
        "warnings": {k: _finding(found[k]) for k in WARNINGS},
    }
    result["ok"] = not any(v["count"] for v in result["problems"].values())
    result["summary"] = summary_line(result)
    path = ws.dataset_dir(dataset) / "check.json"
    atomic_write_json(path, result)
    return CheckResult(result, path)


def _named(finding: dict[str, Any]) -> str:
    first = finding["first"][:FIRST_FEW]
    more = finding["count"] - len(first)
    return ", ".join(first) + (f" and {more} more" if more > 0 else "")


def summary_line(result: dict[str, Any]) -> str:
    """One line: counts, then each problem (first few named + count), then the warnings' counts."""
    c = result["counts"]
    head = f"check {result['dataset']}: {c['listed']} clips listed, {c['on_disk']} videos on disk"
    if c["published"] is not None:
        head += f", published split {c['published']}"
    else:
        head += " (no published split: checked against its own split files)"
    problems = [f"{p['count']} {TITLES[k]}: {_named(p)}" for k, p in result["problems"].items() if p["count"]]
    warnings = [f"{w['count']} {TITLES[k]}" for k, w in result["warnings"].items() if w["count"]]
    line = head + ("; PROBLEMS: " + "; ".join(problems) if problems else "; no problems")
    return line + ("; warnings: " + ", ".join(warnings) if warnings else "")


def check_table(result: dict[str, Any]) -> Table:
    """A short rich Table of a check result."""
    status = "OK" if result["ok"] else "PROBLEMS"
    table = Table(title=f"mma check {result['dataset']}: {status}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("clips (first few)")
    c = result["counts"]
    table.add_row("published clips", "-" if c["published"] is None else str(c["published"]), "")
    table.add_row("listed by your split files", str(c["listed"]), "")
    table.add_row("videos on disk", str(c["on_disk"]), "")
    for group, style in (("problems", "red"), ("warnings", "yellow")):
        for key, finding in result[group].items():
            if finding["count"]:
                table.add_row(f"[{style}]{TITLES[key]}", str(finding["count"]), _named(finding))
    return table


def check_for_prep(dataset: str, root: str | Path, ws: Workspace) -> CheckResult | None:
    """The same comparison `mma prep` runs first: its one-line summary is logged; it never fails prep."""
    try:
        result = check_dataset(dataset, root, ws)
    except MMAError as exc:
        log.warning("check before prep skipped: %s", str(exc).splitlines()[0])
        return None
    (log.info if result.ok else log.warning)("%s (details: %s)", result.summary, result.path)
    return result
