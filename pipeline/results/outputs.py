"""`mma predict --out DIR`: one folder per video and the run's predictions.csv.

`<out>/<stem>/` appears atomically and holds windows.csv (start, end, one probability column per
class, top_class, faces_found, frames), summary.json (clip distribution = mean over windows, top
class, checkpoint + model provenance, settings, warnings), timeline.png, annotated.mp4 and
index.html. A finished folder made from the same video, checkpoint and settings is reused
(resumable); any other existing folder is kept unless `force`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text, read_json_or
from pipeline.results.annotate import write_annotated
from pipeline.results.html_report import write_index_html
from pipeline.results.timeline import plot_timeline

VIDEO_FILES = ("windows.csv", "summary.json", "timeline.png", "annotated.mp4", "index.html")


def output_names(videos: Sequence[Path]) -> dict[Path, str]:
    """Output folder name per video: its stem, with -2, -3, ... for repeated stems (in input order)."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for video in videos:
        name, k = video.stem, 1
        while name in used:
            k += 1
            name = f"{video.stem}-{k}"
        used.add(name)
        names[video] = name
    return names


def windows_csv(windows: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """windows.csv text: start, end, one probability column per class, top_class, faces_found, frames."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["start", "end", *classes, "top_class", "faces_found", "frames"])
    for w in windows:
        writer.writerow([f"{w['start']:.3f}", f"{w['end']:.3f}", *(f"{w['distribution'][c]:.6f}" for c in classes),
                         w["top_class"], w["faces_found"], w["frames"]])
    return buf.getvalue()


def read_windows_csv(path: Path, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The window dicts a windows.csv was written from."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            dist = {c: float(row[c]) for c in classes}
            rows.append({"start": float(row["start"]), "end": float(row["end"]), "top_class": row["top_class"],
                         "probability": dist[row["top_class"]], "distribution": dist,
                         "faces_found": int(row["faces_found"]), "frames": int(row["frames"])})
    return rows


def finished_result(video_out: Path, video: Path, provenance: dict[str, Any],
                    settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result if `video_out` is complete and made from this video, checkpoint and settings."""
    summary = read_json_or(video_out / "summary.json", None)
    if not isinstance(summary, dict) or not all((video_out / f).is_file() for f in VIDEO_FILES):
        return None
    if (Path(str(summary.get("video"))).resolve() != video.resolve() or summary.get("settings") != settings
            or summary.get("checkpoint") != provenance["checkpoint"]):
        return None
    classes = summary["model"]["classes"]
    return {**summary, "windows": read_windows_csv(video_out / "windows.csv", classes), "output": str(video_out)}


def write_video_outputs(video_out: Path, analysis: Any, result: dict[str, Any], classes: Sequence[str], *,
                        force: bool = False) -> Path:
    """Write one video's folder atomically (all five files or none); an existing one only with `force`."""
    summary = {k: v for k, v in result.items() if k not in ("windows", "output")}
    try:
        with atomic_dir(video_out, overwrite=force) as tmp:
            atomic_write_text(tmp / "windows.csv", windows_csv(result["windows"], classes))
            atomic_write_json(tmp / "summary.json", summary)
            plot_timeline(tmp / "timeline.png", analysis, classes)
            write_annotated(tmp / "annotated.mp4", analysis, classes)
            write_index_html(tmp / "index.html", result, classes, tmp / "timeline.png", tmp / "annotated.mp4")
    except FileExistsError:
        raise MMAError(f"{video_out}: already exists (made from another video, checkpoint or settings); "
                       "pass --force to overwrite") from None
    return video_out


def write_predictions_csv(path: Path, results: Sequence[dict[str, Any]], classes: Sequence[str]) -> Path:
    """predictions.csv: one row per video (failed ones with their error)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "output", "top_class", "probability", *classes, "duration", "num_windows",
                     "warnings", "error"])
    for r in results:
        if "error" in r:
            writer.writerow([r["video"], "", "", "", *([""] * len(classes)), "", "", "", r["error"]])
            continue
        writer.writerow([r["video"], Path(r["output"]).name if r.get("output") else "", r["top_class"],
                         f"{r['probability']:.6f}", *(f"{r['distribution'][c]:.6f}" for c in classes),
                         r["duration"], r["num_windows"], "; ".join(r["warnings"]), ""])
    return atomic_write_text(path, buf.getvalue())

