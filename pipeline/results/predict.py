"""`mma predict`: emotion distribution of a user's own video files, from a trained checkpoint.

Each video goes through prep's per-clip function (`pipeline.prep.clip.process_video`: decode, face
crops, fbank) into a temporary clip directory, then the test-time input of the loader
(`pipeline.store.sampling.make_test_input`) and the model. With `window` seconds the clip is also
cut into consecutive windows (frames and fbank rows of each time span, written as clip
directories of their own) to give the distribution over time. A video without an audio
track is predicted from the silence spectrogram, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.core.config import RunConfig, from_dict, paper
from pipeline.core.device import pick_device
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.prep.audio import FBANK_ROWS_PER_SECOND
from pipeline.weights.resolve import check_trained_checkpoint

log = logging.getLogger(__name__)


def _classes_for(dataset: str | None, ws: Workspace | None, saved: list[str] | None) -> list[str]:
    if saved:
        return list(saved)
    if dataset is None:
        raise MMAError("the checkpoint does not name its classes; pass --dataset")
    if ws is not None and ws.classes(dataset).exists():
        from pipeline.data.manifest import read_classes

        return list(read_classes(ws, dataset))
    from pipeline.data.datasets import dataset_spec

    try:
        return list(dataset_spec(dataset).classes)
    except ValueError as exc:
        raise MMAError(str(exc)) from None


def load_predictor(checkpoint: str | Path, *, official: bool = False, dataset: str | None = None,
                   image_size: int | None = None, workspace: Workspace | None = None,
                   device: str | None = None) -> tuple[torch.nn.Module, RunConfig, list[str]]:
    """(model on device in eval mode, its run config, class names) for a checkpoint."""
    from pipeline.engine.evaluate import load_model_for_eval

    path = Path(checkpoint)
    if not path.is_file():
        raise MMAError(f"{path}: checkpoint file not found")
    if official:
        if dataset not in ("dfew", "mafw"):
            raise MMAError("--official needs --dataset dfew or mafw (the label set the authors trained on)")
        classes = _classes_for(dataset, None, None)
        cfg = paper()
        cfg.dataset = dataset
        cfg.model.num_classes = len(classes)
        if image_size:
            cfg.model.image_size = image_size
    else:
        from model.checkpoint import load_model_checkpoint

        ck = load_model_checkpoint(path, map_location="cpu")  # MMAError unless an mma checkpoint
        cfg = from_dict(ck["config"], base=RunConfig())
        classes = _classes_for(dataset or cfg.dataset, workspace, ck.get("classes"))
        if len(classes) != cfg.model.num_classes:
            raise MMAError(f"{path}: checkpoint predicts {cfg.model.num_classes} classes, "
                           f"label set has {len(classes)}")
    cfg.train.precision = "fp32" if pick_device(device).type == "cpu" else cfg.train.precision
    net, cfg, _ = load_model_for_eval(cfg, path, official=official)
    net.to(pick_device(device)).eval()
    return net, cfg, classes


def _window_dir(clip_dir: Path, out: Path, meta: dict[str, Any], fbank: np.ndarray, frames: list[Path],
                t0: float, t1: float) -> Path | None:
    """A clip directory holding the frames and fbank rows of [t0, t1); None when it has no frame."""
    fps = float(meta["fps"])
    idx = [i for i in range(len(frames)) if t0 <= i / fps < t1]
    if not idx:
        return None
    (out / "frames").mkdir(parents=True)
    for j, i in enumerate(idx):
        os.symlink(frames[i].resolve(), out / "frames" / f"{j:06d}{frames[i].suffix}")
    lo, hi = int(round(t0 * FBANK_ROWS_PER_SECOND)), int(round(t1 * FBANK_ROWS_PER_SECOND))
    part = fbank[lo:hi] if len(fbank) else fbank
    np.save(out / "fbank.npy", part)
    sub = dict(meta, num_frames=len(idx), audio_seconds=len(part) / FBANK_ROWS_PER_SECOND,
               window=[t0, t1], clip_id=f"{meta.get('clip_id', clip_dir.name)}@{t0:g}")
    (out / "meta.json").write_text(json.dumps(sub))
    return out


def _distribution(net: torch.nn.Module, cfg: RunConfig, clip_dir: Path, device: torch.device) -> np.ndarray:
    from pipeline.engine.batches import autocast, autocast_dtype
    from pipeline.store.sampling import load_clip_dir, make_test_input

    frames, fbank = make_test_input(load_clip_dir(clip_dir), cfg)
    x = frames.unsqueeze(0).to(device).float().div_(255)
    spec = fbank.unsqueeze(0).to(device).float()
    with torch.inference_mode(), autocast(device, autocast_dtype(cfg.train.precision, device, cfg.data.compat)):
        logits = net(x, spec)
    return torch.softmax(logits.float(), dim=-1)[0].cpu().numpy()


def _top(probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    i = int(np.argmax(probs))
    return {"emotion": classes[i], "probability": float(probs[i]),
            "distribution": {c: float(p) for c, p in zip(classes, probs)}}


def predict_video(net: torch.nn.Module, cfg: RunConfig, classes: Sequence[str], video: str | Path, *,
                  window: float | None = None, device: str | None = None) -> dict[str, Any]:
    """Prediction for one video: top emotion, distribution, warnings, and per-window results."""
    from pipeline.prep.clip import process_video

    video = Path(video)
    if not video.is_file():
        raise MMAError(f"{video}: video file not found")
    dev = pick_device(device)
    with tempfile.TemporaryDirectory(prefix="mma-predict-") as tmp:
        clip_dir = Path(tmp) / "clip"
        meta = process_video(video, clip_dir, cfg.data, clip_id=video.stem, device=str(dev))
        if (clip_dir / "meta.json").exists():
            meta = {**json.loads((clip_dir / "meta.json").read_text()), **(meta or {})}
        warnings = [str(w) for w in meta.get("warnings", [])]
        if not meta.get("has_audio", True) and not any("no audio" in w for w in warnings):
            warnings.append("no audio track: predicted from the silence spectrogram (vision only in effect)")
            log.warning("%s: no audio track; using the silence spectrogram", video)
        probs = _distribution(net, cfg, clip_dir, dev)
        out: dict[str, Any] = {"video": str(video), **_top(probs, classes),
                               "num_frames": meta.get("num_frames"), "fps": meta.get("fps"),
                               "has_audio": bool(meta.get("has_audio", True)), "warnings": warnings}
        if window:
            frames = sorted((clip_dir / "frames").iterdir(), key=lambda p: int(p.stem))
            fbank = np.load(clip_dir / "fbank.npy")
            duration = len(frames) / float(meta["fps"])
            windows = []
            for k in range(max(1, math.ceil(duration / window - 1e-9))):
                t0, t1 = k * window, min((k + 1) * window, duration)
                wdir = _window_dir(clip_dir, Path(tmp) / f"w{k:05d}", meta, fbank, frames, t0, t1)
                if wdir is None:
                    continue
                windows.append({"start": round(t0, 3), "end": round(t1, 3),
                                **_top(_distribution(net, cfg, wdir, dev), classes)})
                shutil.rmtree(wdir, ignore_errors=True)
            out["windows"] = windows
    return out


def format_predictions(results: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """Human-readable table: one line per video (top emotion, distribution), windows below it."""
    width = max(len(c) for c in classes)
    lines: list[str] = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['video']}: error: {r['error']}")
            continue
        lines.append(f"{r['video']}: {r['emotion']} ({100 * r['probability']:.1f}%)")
        for c, p in sorted(r["distribution"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {c:<{width}} {100 * p:5.1f}% {'#' * int(round(30 * p))}")
        for w in r.get("windows", []):
            lines.append(f"  [{w['start']:7.2f}s - {w['end']:7.2f}s] {w['emotion']} ({100 * w['probability']:.1f}%)")
        for warn in r["warnings"]:
            lines.append(f"  warning: {warn}")
    return "\n".join(lines)


def predict_videos(videos: Sequence[str | Path], checkpoint: str | Path, *, official: bool = False,
                   dataset: str | None = None, window: float | None = None, as_json: bool = False,
                   device: str | None = None, workspace: Workspace | None = None,
                   image_size: int | None = None) -> dict[str, Any]:
    """Predict every video; a failing video is reported in its entry and the others go on.

    Returns {"classes", "videos": [per-video dicts], "failed": n, "text": rendering}, where
    text is JSON when `as_json` and a readable table otherwise (the CLI prints it).
    """
    if window is not None and window <= 0:
        raise MMAError(f"--window {window}: must be a positive number of seconds")
    check_trained_checkpoint(checkpoint, official=official)
    net, cfg, classes = load_predictor(checkpoint, official=official, dataset=dataset, image_size=image_size,
                                       workspace=workspace, device=device)
    results: list[dict[str, Any]] = []
    for video in videos:
        try:
            results.append(predict_video(net, cfg, classes, video, window=window, device=device))
        except MMAError as exc:
            log.error("%s", exc)
            results.append({"video": str(video), "error": str(exc)})
    failed = sum("error" in r for r in results)
    payload = {"checkpoint": str(checkpoint), "classes": list(classes), "videos": results, "failed": failed}
    payload["text"] = json.dumps({k: v for k, v in payload.items() if k != "text"}, indent=2) if as_json \
        else format_predictions(results, classes)
    return payload
