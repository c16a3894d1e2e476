"""`mma predict`: emotion over time in a user's own videos, from a trained checkpoint.

Each video is prepped once by prep's per-clip function (`pipeline.prep.clip.process_video`:
decode, MTCNN faces detected once and tracked, crops, one fbank) into a temporary clip
directory, read back as one in-memory sample, and cut into sliding windows (default 2 s every
1 s, `pipeline.results.windows`) that share those frames and that spectrogram; each window is
sampled by the test transform and the windows go through the model in batches. The clip-level
distribution is the mean over windows. Folders expand (recursively, sorted) to the video files
in them; a failing file is reported in its entry and never stops the others.

With `out`, every video also gets `<out>/<stem>/` (windows.csv, summary.json, timeline.png,
annotated.mp4, index.html; `pipeline.results.outputs`) and `<out>/predictions.csv` one row per
video. Without it, the result is a readable table (per-window rows with `show_windows`) or JSON
(summary + windows per video).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from model.checkpoint import load_model_checkpoint
from pipeline.core.config import RunConfig, saved_run_config, to_dict
from pipeline.core.device import pick_device
from pipeline.core.errors import MMAError
from pipeline.core.io import sha256_file
from pipeline.core.paths import Workspace
from pipeline.core.progress import progress_bar
from pipeline.core.results import StageResult
from pipeline.data.manifest import label_set
from pipeline.engine.evaluate import load_model_for_eval
from pipeline.engine.official import official_run_config
from pipeline.prep.clip import process_video
from pipeline.results.outputs import finished_result, output_names, write_predictions_csv, write_video_outputs
from pipeline.results.windows import WindowSpan, check_window_settings, predict_windows, window_spans
from pipeline.store.sampling import load_clip_dir
from pipeline.weights.resolve import check_trained_checkpoint

log = logging.getLogger(__name__)

PREDICT_DETECT_SIDE = 320  # longer side of the frames MTCNN sees in `mma predict` (prep uses 640)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
NO_AUDIO_WARNING = "no audio track: silence used"
NO_FACE_WARN_FRACTION = 0.05  # warn when at least this share of frames has no detected face


def load_predictor(checkpoint: str | Path, *, official: bool = False, dataset: str | None = None,
                   image_size: int | None = None, workspace: Workspace | None = None,
                   device: str | None = None) -> tuple[torch.nn.Module, RunConfig, list[str]]:
    """(model on device in eval mode, its run config, class names) for a checkpoint.

    `dataset` names the label set the caller expects: a checkpoint trained on another dataset
    is a one-line error naming the checkpoint. An authors' checkpoint gets `official_run_config`
    (the paper's model at `image_size`, default the paper's S).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise MMAError(f"{path}: checkpoint file not found")
    if official:
        if dataset not in ("dfew", "mafw"):
            raise MMAError("--official needs --dataset dfew or mafw (the label set the authors trained on)")
        cfg, classes = official_run_config(dataset, image_size=image_size)
    else:
        ck = load_model_checkpoint(path, map_location="cpu")  # MMAError unless an mma checkpoint
        cfg = saved_run_config(ck["config"])
        if dataset is not None and cfg.dataset and dataset != cfg.dataset:
            raise MMAError(f"{path}: checkpoint was trained on {cfg.dataset}'s {cfg.model.num_classes} classes, "
                           f"not on the {dataset} label set asked for with --dataset")
        classes = list(ck.get("classes") or []) or label_set(dataset or cfg.dataset, workspace)
        if len(classes) != cfg.model.num_classes:
            raise MMAError(f"{path}: checkpoint predicts {cfg.model.num_classes} classes, "
                           f"label set has {len(classes)}")
    cfg.train.precision = "fp32" if pick_device(device).type == "cpu" else cfg.train.precision
    net, cfg, _ = load_model_for_eval(cfg, path, official=official)
    net.to(pick_device(device)).eval()
    return net, cfg, classes


# --------------------------------------------------------------------------- inputs


def expand_videos(paths: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Video files named or found (recursively, sorted) in the folders named; plus failure entries.

    A path that does not exist, or a folder holding no video file, becomes a failure entry
    ({"video", "error"}); a file named explicitly is kept whatever its extension (decoding
    tells whether it is a video).
    """
    videos: list[Path] = []
    failures: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                failures.append({"video": str(path), "error": f"{path}: folder holds no video file "
                                                              f"({', '.join(VIDEO_EXTENSIONS)})"})
            videos.extend(found)
        elif path.is_file():
            videos.append(path)
        else:
            failures.append({"video": str(path), "error": f"{path}: video file not found"})
    return videos, failures


# --------------------------------------------------------------------------- one video


@dataclass
class VideoAnalysis:
    """Everything one video's outputs are made from: prep's meta and sample, the windows and their probabilities."""

    video: Path
    meta: dict[str, Any]
    sample: dict[str, Any]  # `load_clip_dir` layout: JPEG face crops of every frame, whole-clip fbank
    spans: list[WindowSpan]
    probs: np.ndarray  # (n_windows, n_classes)
    warnings: list[str]

    @property
    def face_found(self) -> np.ndarray:
        """(num_frames,) bool: MTCNN found at least one face in the frame."""
        found = self.meta.get("faces_found") or [1] * int(self.meta["num_frames"])
        return np.asarray(found) > 0

    @property
    def duration(self) -> float:
        return int(self.meta["num_frames"]) / float(self.meta["fps"])


def _video_warnings(meta: dict[str, Any]) -> list[str]:
    """Prep's warnings, phrased for a person looking at one video's result."""
    warnings = []
    for w in meta.get("warnings", []):
        if w == "no audio track":
            w = NO_AUDIO_WARNING
        elif w.startswith("face not found in "):
            continue  # restated below as a share of frames
        warnings.append(str(w))
    if not meta.get("has_audio", True) and NO_AUDIO_WARNING not in warnings:
        warnings.append(NO_AUDIO_WARNING)
    found = np.asarray(meta.get("faces_found") or [1]) > 0
    missing = 1.0 - float(found.mean())
    if NO_FACE_WARN_FRACTION <= missing < 1.0:
        warnings.append(f"no face in {100 * missing:.0f}% of frames")
    return warnings


def analyse_video(net: torch.nn.Module, cfg: RunConfig, video: str | Path, *, window: float, stride: float,
                  device: torch.device) -> VideoAnalysis:
    """Prep `video` once (faces, fbank) and predict every sliding window of it."""
    video = Path(video)
    if not video.is_file():
        raise MMAError(f"{video}: video file not found")
    data_cfg = dataclasses.replace(cfg.data, faces="detect")
    with tempfile.TemporaryDirectory(prefix="mma-predict-") as tmp:
        meta = process_video(video, Path(tmp) / "clip", data_cfg, clip_id=video.stem, device=str(device))
        sample = load_clip_dir(Path(tmp) / "clip")
    spans = window_spans(int(meta["num_frames"]), float(meta["fps"]), window, stride)
    probs = predict_windows(net, cfg, sample, spans, device)
    warnings = _video_warnings(meta)
    for w in warnings:
        log.warning("%s: %s", video, w)
    return VideoAnalysis(video, meta, sample, spans, probs, warnings)


def _distribution(probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    i = int(np.argmax(probs))
    return {"top_class": classes[i], "probability": round(float(probs[i]), 6),
            "distribution": {c: round(float(p), 6) for c, p in zip(classes, probs)}}


def video_result(analysis: VideoAnalysis, classes: Sequence[str], provenance: dict[str, Any],
                 settings: dict[str, Any]) -> dict[str, Any]:
    """summary.json's content plus "windows" (one dict per window) for one analysed video."""
    found = analysis.face_found
    windows = [{"start": s.start, "end": s.end, **_distribution(p, classes),
                "faces_found": int(found[s.first:s.stop].sum()), "frames": s.stop - s.first}
               for s, p in zip(analysis.spans, analysis.probs)]
    meta = analysis.meta
    summary = {
        "video": str(analysis.video),
        **_distribution(analysis.probs.mean(axis=0), classes),
        "duration": round(analysis.duration, 4),
        "num_frames": int(meta["num_frames"]),
        "fps": float(meta["fps"]),
        "size": meta.get("source_size"),
        "has_audio": bool(meta.get("has_audio", False)),
        "num_windows": len(windows),
        "no_face_frames": int((~found).sum()),
        "warnings": list(analysis.warnings),
        **provenance,
        "settings": settings,
    }
    return {**summary, "windows": windows}


# --------------------------------------------------------------------------- rendering


def format_predictions(results: Sequence[dict[str, Any]], classes: Sequence[str], *, show_windows: bool = False) -> str:
    """Human-readable table: one block per video (top class, distribution), windows below it if asked."""
    width = max(len(c) for c in classes)
    lines: list[str] = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['video']}: error: {r['error']}")
            continue
        lines.append(f"{r['video']}: {r['top_class']} ({100 * r['probability']:.1f}%)")
        for c, p in sorted(r["distribution"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {c:<{width}} {100 * p:5.1f}% {'#' * int(round(30 * p))}")
        if show_windows:
            lines.append(f"  {'window':<21} {'top class':<{width}}  {'prob':>6}  faces")
            for w in r.get("windows", []):
                lines.append(f"  [{w['start']:7.2f}s - {w['end']:7.2f}s] {w['top_class']:<{width}} "
                             f"{100 * w['probability']:5.1f}%  {w['faces_found']}/{w['frames']}")
        for warn in r["warnings"]:
            lines.append(f"  warning: {warn}")
        if r.get("output"):
            lines.append(f"  output: {r['output']}")
    return "\n".join(lines)


def _settings(cfg: RunConfig, window: float, stride: float, device: torch.device) -> dict[str, Any]:
    return {"window": window, "stride": stride, "num_frames": cfg.model.num_frames,
            "image_size": cfg.model.image_size, "crop_size": cfg.data.crop_size,
            "face_select": cfg.data.face_select, "audio_rate": cfg.data.audio_rate,
            "detect_max_side": cfg.data.detect_max_side,
            "audio_window": cfg.data.audio_window, "spec_frames": cfg.data.spec_frames, "device": device.type}


def _provenance(checkpoint: Path, cfg: RunConfig, classes: Sequence[str], official: bool) -> dict[str, Any]:
    return {"checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint), "official": official},
            "model": {"dataset": cfg.dataset, "preset": cfg.name, "classes": list(classes), **to_dict(cfg.model)}}


@dataclass(frozen=True)
class PredictResult(StageResult):
    """Every video's result (summary + windows, or {"video", "error"} for one that failed)."""

    checkpoint: str
    classes: list[str]
    videos: list[dict[str, Any]]
    show_windows: bool = False

    @property
    def failed(self) -> list[str]:
        """The videos (paths as given or found) that could not be analysed."""
        return [v["video"] for v in self.videos if "error" in v]

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "classes": list(self.classes), "videos": self.videos,
                "failed": len(self.failed)}

    def text(self) -> str:
        return format_predictions(self.videos, self.classes, show_windows=self.show_windows)

    @property
    def errors(self) -> tuple[str, ...]:
        failed = self.failed
        return (f"{len(failed)} of {len(self.videos)} failed: {', '.join(failed)}",) if failed else ()


def predict_videos(videos: Sequence[str | Path], checkpoint: str | Path, *, official: bool = False,
                   dataset: str | None = None, window: float | None = None, stride: float | None = None,
                   out: str | Path | None = None, force: bool = False,
                   device: str | None = None, workspace: Workspace | None = None,
                   image_size: int | None = None, detect_side: int = PREDICT_DETECT_SIDE) -> PredictResult:
    """Predict every video (files or folders); a failing video is reported in its entry and the others go on.

    Faces are tracked with MTCNN on frames downscaled to `detect_side` pixels on their longer side
    (320 by default: about 6x faster on CPU than prep's 640, for the large faces of most videos
    people record; raise it for small or distant faces). An authors' checkpoint uses their union
    rule, which detects at full resolution.

    The result's text lists the windows when `window` was given.
    """
    win, step = check_window_settings(window, stride)
    files, failures = expand_videos(videos)
    check_trained_checkpoint(checkpoint, official=official)
    net, cfg, classes = load_predictor(checkpoint, official=official, dataset=dataset, image_size=image_size,
                                       workspace=workspace, device=device)
    cfg.data.detect_max_side = int(detect_side)
    cfg.data.validate()
    dev = pick_device(device)
    provenance = _provenance(Path(checkpoint), cfg, classes, official)
    settings = _settings(cfg, win, step, dev)
    out_dir = Path(out) if out is not None else None
    names: dict[Path, str] = {}
    if out_dir is not None:
        names = output_names(files)
    results: list[dict[str, Any]] = list(failures)
    for f in failures:
        log.error("%s", f["error"])
    with progress_bar("predict", len(files), unit="videos") as bar:
        task = bar.add_task("predict", total=len(files))
        for video in files:
            try:
                results.append(_one_video(net, cfg, classes, video, dev, win, step, provenance, settings,
                                          out_dir / names[video] if out_dir is not None else None, force))
            except MMAError as exc:
                log.error("%s", exc)
                results.append({"video": str(video), "error": str(exc)})
            bar.advance(task)
    if out_dir is not None:
        write_predictions_csv(out_dir / "predictions.csv", results, classes)
    return PredictResult(str(checkpoint), list(classes), results, show_windows=window is not None)


def _one_video(net: torch.nn.Module, cfg: RunConfig, classes: Sequence[str], video: Path, dev: torch.device,
               window: float, stride: float, provenance: dict[str, Any], settings: dict[str, Any],
               video_out: Path | None, force: bool) -> dict[str, Any]:
    """One video's result; with `video_out`, its output folder is written (or reused when finished)."""
    if video_out is not None and not force:
        done = finished_result(video_out, video, provenance, settings)
        if done is not None:
            log.info("%s: already predicted in %s (pass --force to redo)", video, video_out)
            return done
    analysis = analyse_video(net, cfg, video, window=window, stride=stride, device=dev)
    result = video_result(analysis, classes, provenance, settings)
    if video_out is not None:
        write_video_outputs(video_out, analysis, result, classes, force=force)
        result["output"] = str(video_out)
    return result
