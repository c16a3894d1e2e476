"""Sliding windows over one prepped video: their time spans, their model inputs, their class probabilities.

A video is prepped once (faces detected once, one spectrogram); every window is a slice of that
one in-memory sample (the JPEG face frames whose time falls in the span and the fbank rows of the
span), turned into model input by the test transform (`pipeline.store.sampling.ClipSampler` with
train=False), exactly as an evaluation clip of that length would be. Windows go through the model
in batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.core.config import RunConfig
from pipeline.core.errors import MMAError
from pipeline.engine.batches import autocast, autocast_dtype
from pipeline.prep.audio import FBANK_ROWS_PER_SECOND
from pipeline.store.sampling import ClipSampler

DEFAULT_WINDOW = 2.0  # seconds
DEFAULT_STRIDE = 1.0  # seconds (or the window, if shorter)
WINDOW_BATCH = 8


@dataclass(frozen=True)
class WindowSpan:
    """One window: [start, end) in seconds and the frame indices [first, stop) it covers."""

    start: float
    end: float
    first: int
    stop: int

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2.0

    @property
    def centre_frame(self) -> int:
        return (self.first + self.stop - 1) // 2


def check_window_settings(window: float | None, stride: float | None) -> tuple[float, float]:
    """(window, stride) in seconds with the defaults filled in; MMAError for values that leave gaps."""
    w = DEFAULT_WINDOW if window is None else float(window)
    if not w > 0:
        raise MMAError(f"--window {window}: must be a positive number of seconds")
    s = min(DEFAULT_STRIDE, w) if stride is None else float(stride)
    if not s > 0:
        raise MMAError(f"--stride {stride}: must be a positive number of seconds")
    if s > w:
        raise MMAError(f"--stride {s:g} is longer than --window {w:g}: the windows would leave gaps")
    return w, s


def window_spans(num_frames: int, fps: float, window: float, stride: float) -> list[WindowSpan]:
    """Windows of `window` s every `stride` s covering the whole clip; a clip shorter than a window is one window.

    The last window ends at the clip's end (it may be shorter than `window`). Every window holds
    at least one frame.
    """
    if num_frames <= 0 or fps <= 0:
        return []
    duration = num_frames / fps
    spans: list[WindowSpan] = []
    k = 0
    while True:
        t0 = k * stride
        t1 = min(t0 + window, duration)
        first = min(int(math.ceil(t0 * fps - 1e-6)), num_frames - 1)
        stop = max(first + 1, min(int(math.ceil(t1 * fps - 1e-6)), num_frames))
        spans.append(WindowSpan(round(t0, 4), round(t1, 4), first, stop))
        if t0 + window >= duration - 1e-6:
            return spans
        k += 1


def window_sample(sample: dict[str, Any], span: WindowSpan) -> dict[str, Any]:
    """The slice of a clip sample (`load_clip_dir` layout) that one window covers."""
    fbank = sample["fbank"]
    lo = int(round(span.start * FBANK_ROWS_PER_SECOND))
    hi = int(round(span.end * FBANK_ROWS_PER_SECOND))
    return {"clip_id": f"{sample['clip_id']}@{span.start:g}", "label": -1, "meta": sample["meta"],
            "frames": sample["frames"][span.first:span.stop], "fbank": fbank[lo:hi]}


def predict_windows(net: torch.nn.Module, cfg: RunConfig, sample: dict[str, Any], spans: Sequence[WindowSpan],
                    device: torch.device, *, batch_size: int = WINDOW_BATCH) -> np.ndarray:
    """Softmax probabilities (n_windows, n_classes) of every window, in batches of `batch_size`."""
    sampler = ClipSampler.from_config(cfg)
    dtype = autocast_dtype(cfg.train.precision, device, cfg.data.compat)
    out: list[np.ndarray] = []
    for start in range(0, len(spans), batch_size):
        inputs = [sampler(window_sample(sample, s), train=False) for s in spans[start:start + batch_size]]
        x = torch.stack([f for f, _ in inputs]).to(device).float().div_(255)
        spec = torch.stack([a for _, a in inputs]).to(device).float()
        with torch.inference_mode(), autocast(device, dtype):
            logits = net(x, spec)
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
