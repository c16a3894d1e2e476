"""Face detection (facenet-pytorch MTCNN, batched over a clip's frames) and face selection.

Two selection rules (docs/architecture.md, "Data"), both giving one crop box per frame:
- "track" (default): the most confident face of the clip is the anchor; it is followed
  frame to frame by overlap, boxes are made square (with a margin), frames without a
  detection are filled from their neighbours (linear interpolation, hold at the ends), and
  the box centre/size is smoothed over time. A clip with no face at all falls back to a
  centre crop (with a warning).
- "union" (the authors' MAFW rule, replicated exactly): detection on the full-resolution frame;
  per frame the union of all detected faces' boxes, corners rounded, its top-left clamped at 0,
  then made square by widening its shorter side by diff // 2 on each side (diff = the sides'
  difference); frames without a detection get a centre square of half the short side
  (`authors_centre_box`).
Boxes are kept in source-frame pixels before clamping to the frame (meta.json `boxes`); the
crop is the box's part inside the frame, resized once (to `data.crop_size`) with PIL bilinear
filtering.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.config import FACE_SELECT_MODES, check_choice
from pipeline.core.device import pick_device

log = logging.getLogger(__name__)

TRACK_MARGIN = 1.25  # square side = TRACK_MARGIN * max(box w, h)
TRACK_MIN_IOU = 0.2
SMOOTH_WINDOW = 5
DETECT_MAX_SIDE = 640  # frames larger than this are downscaled for detection only
DETECT_BATCH = 32


def default_device() -> str:
    """MTCNN's device when none is given: the trainer's rule (this rank's GPU if any, else CPU)."""
    return str(pick_device(None, int(os.environ.get("LOCAL_RANK", "0"))))


@functools.lru_cache(maxsize=4)
def get_mtcnn(device: str = "cpu"):
    """One MTCNN per process and device (its weights ship inside facenet-pytorch)."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device=device, post_process=False)


@dataclass
class Detections:
    """Per frame: boxes (k, 4) as x0, y0, x1, y1 in frame pixels and their probabilities (k,)."""

    boxes: list[np.ndarray]
    probs: list[np.ndarray]

    @property
    def faces_per_frame(self) -> list[int]:
        return [int(len(b)) for b in self.boxes]


def detect_faces(frames: np.ndarray, *, device: str | None = None, batch_size: int = DETECT_BATCH,
                 max_side: int | None = DETECT_MAX_SIDE) -> Detections:
    """MTCNN over all frames (N, H, W, 3) uint8, in batches of `batch_size` frames per call.

    Frames larger than `max_side` are downscaled for detection (boxes are returned in frame
    pixels); `max_side=None` detects on the full-resolution frames (the authors' way).
    """
    import torch

    mtcnn = get_mtcnn(device or default_device())
    n, h, w = frames.shape[:3]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(h, w))
    if scale < 1.0:
        frames = _downscale(frames, scale)
    boxes: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, n, max(1, batch_size)):
            chunk = frames[start:start + batch_size]
            b, p = mtcnn.detect(chunk)
            for fb, fp in zip(b, p):
                if fb is None:
                    boxes.append(np.zeros((0, 4), np.float32))
                    probs.append(np.zeros((0,), np.float32))
                else:
                    boxes.append(np.asarray(np.stack(list(fb)), np.float32).reshape(-1, 4) / scale)
                    probs.append(np.asarray(list(fp), np.float32).reshape(-1))
    return Detections(boxes, probs)


def detect_faces_per_frame(frames: np.ndarray, *, device: str | None = None) -> Detections:
    """The authors' loop: one MTCNN call per frame (kept for the benchmark and comparison)."""
    boxes, probs = [], []
    for frame in frames:
        d = detect_faces(frame[None], device=device, batch_size=1)
        boxes += d.boxes
        probs += d.probs
    return Detections(boxes, probs)


def _downscale(frames: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = frames.shape[1:3]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


# --------------------------------------------------------------------------- selection


@dataclass
class FaceTrack:
    """Crop box per frame (x0, y0, x1, y1), which frames had a detection, and what happened."""

    boxes: np.ndarray  # (N, 4) float
    detected: np.ndarray  # (N,) bool: frame's box comes from a detection (not filled/fallback)
    confidence: list[float | None]
    warnings: list[str] = field(default_factory=list)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) with boxes b (k, 4)."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-6)


def centre_box(height: int, width: int) -> np.ndarray:
    """The largest centred square of the frame."""
    side = min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return np.array([x0, y0, x0 + side, y0 + side], np.float32)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding."""
    if window <= 1 or len(values) < 3:
        return values
    window = min(window, len(values) if len(values) % 2 else len(values) - 1)
    pad = window // 2
    padded = np.pad(values, ((pad, pad), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(values.shape[1])], axis=1)


def select_track(det: Detections, height: int, width: int) -> FaceTrack:
    """Most confident face, tracked over time, squared, gap-filled and smoothed."""
    n = len(det.boxes)
    chosen: list[np.ndarray | None] = [None] * n
    conf: list[float | None] = [None] * n
    best = max(((float(p.max()), i) for i, p in enumerate(det.probs) if len(p)), default=None)
    if best is None:
        box = centre_box(height, width)
        return FaceTrack(np.tile(box, (n, 1)), np.zeros(n, bool), conf, ["no face detected in any frame: centre crop"])
    anchor = best[1]
    k = int(det.probs[anchor].argmax())
    chosen[anchor], conf[anchor] = det.boxes[anchor][k], float(det.probs[anchor][k])
    for order in (range(anchor + 1, n), range(anchor - 1, -1, -1)):
        ref = chosen[anchor]
        for i in order:
            if len(det.boxes[i]):
                ious = _iou(ref, det.boxes[i])
                j = int(ious.argmax())
                if ious[j] >= TRACK_MIN_IOU:
                    chosen[i], conf[i] = det.boxes[i][j], float(det.probs[i][j])
                    ref = chosen[i]
    detected = np.array([c is not None for c in chosen])
    # (cx, cy, side) per detected frame, interpolated over the gaps
    idx = np.flatnonzero(detected)
    params = np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, TRACK_MARGIN * max(b[2] - b[0], b[3] - b[1])]
                       for b in (chosen[i] for i in idx)], np.float64)
    frames = np.arange(n)
    filled = np.stack([np.interp(frames, idx, params[:, j]) for j in range(3)], axis=1)
    smooth = _smooth(filled, SMOOTH_WINDOW)
    boxes = np.stack([_square_in_frame(cx, cy, side, height, width) for cx, cy, side in smooth])
    warnings = []
    missing = n - int(detected.sum())
    if missing:
        warnings.append(f"face not found in {missing}/{n} frames: filled from neighbours")
    return FaceTrack(boxes, detected, conf, warnings)


def authors_centre_box(height: int, width: int) -> np.ndarray:
    """The authors' no-face crop: a centred square of side 2 * (min(H // 2, W // 2) // 2)."""
    half = min(height // 2, width // 2)
    cx, cy = width // 2, height // 2
    return np.array([cx - half // 2, cy - half // 2, cx + half // 2, cy + half // 2], np.float32)


def union_box(boxes: np.ndarray) -> np.ndarray:
    """The authors' squared union of one frame's face boxes (k, 4), in frame pixels, not clamped to the frame.

    Union corners rounded (Python's round), top-left clamped at 0, then the shorter side widened
    by diff // 2 on each side (so an odd difference leaves it one pixel short of square).
    """
    x1, y1 = round(float(boxes[:, 0].min())), round(float(boxes[:, 1].min()))
    x2, y2 = round(float(boxes[:, 2].max())), round(float(boxes[:, 3].max()))
    x1, y1 = max(0, x1), max(0, y1)
    h, w = y2 - y1, x2 - x1
    if h > w:
        x1, x2 = x1 - (h - w) // 2, x2 + (h - w) // 2
    elif w > h:
        y1, y2 = y1 - (w - h) // 2, y2 + (w - h) // 2
    return np.array([x1, y1, x2, y2], np.float32)


def clamp_box(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """The part of `box` inside a height x width frame (what a crop reads)."""
    return np.array([max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])],
                    np.float32)


def select_union(det: Detections, height: int, width: int) -> FaceTrack:
    """The authors' rule: per frame the squared union box of all faces; their centre square where none."""
    n = len(det.boxes)
    boxes = np.empty((n, 4), np.float32)
    conf: list[float | None] = [None] * n
    detected = np.zeros(n, bool)
    for i, (b, p) in enumerate(zip(det.boxes, det.probs)):
        inside = clamp_box(union_box(b), height, width) if len(b) else None
        if inside is not None and inside[2] > inside[0] and inside[3] > inside[1]:
            boxes[i], conf[i], detected[i] = union_box(b), float(p.max()), True
        else:
            boxes[i] = authors_centre_box(height, width)
    warnings = []
    if not detected.any():
        warnings.append("no face detected in any frame: centre crop")
    elif not detected.all():
        warnings.append(f"face not found in {n - int(detected.sum())}/{n} frames: centre crop there")
    return FaceTrack(boxes, detected, conf, warnings)


def _square_in_frame(cx: float, cy: float, side: float, height: int, width: int) -> np.ndarray:
    """A square of `side` centred at (cx, cy), shrunk to fit and shifted inside the frame."""
    side = float(min(max(side, 2.0), height, width))
    x0 = float(np.clip(cx - side / 2, 0, width - side))
    y0 = float(np.clip(cy - side / 2, 0, height - side))
    return np.array([x0, y0, x0 + side, y0 + side], np.float32)


def select_faces(det: Detections, height: int, width: int, mode: str = "track") -> FaceTrack:
    """Dispatch on data.face_select."""
    check_choice("data.face_select", mode, FACE_SELECT_MODES)
    return select_track(det, height, width) if mode == "track" else select_union(det, height, width)


def crop_frames(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop each frame to its box (clamped to the frame) and resize once to (size, size): (N, size, size, 3) uint8."""
    from PIL import Image

    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        im = Image.fromarray(frame)
        inside = clamp_box(np.asarray(box, np.float32), frame.shape[0], frame.shape[1])
        out[i] = np.asarray(im.resize((size, size), Image.BILINEAR, box=tuple(float(v) for v in inside)))
    return out


def resize_face_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize already-cropped frames (e.g. DFEW's official 224x224 faces) to (size, size)."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    h, w = frames.shape[1:3]
    return crop_frames(frames, np.tile(np.array([0, 0, w, h], np.float32), (len(frames), 1)), size)
