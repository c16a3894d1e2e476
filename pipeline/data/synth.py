"""`mma synth`: a small labelled audio-visual dataset in the real MAFW (or DFEW) on-disk layout.

Each clip is a real mp4 (h264 + aac, encoded by the ffmpeg binary that ships in imageio-ffmpeg)
showing a real face (scikit-image's `astronaut` photo) that drifts and breathes in scale over a
per-clip background, with a stereo 44.1 kHz soundtrack of a harmonic tone plus noise. The class is
learnable from both modalities: the face is tinted with a class colour and drawn at a
class-dependent size, and the tone's pitch is class-dependent. Split files follow the official
formats (docs/architecture.md, "Data"), each class spread evenly over the 5 test folds.

`with_faults=True` adds the clips real datasets contain: one without an audio track, one
truncated mid-file (undecodable), one with no face in it, and one shorter than 16 frames. They
are labelled and listed in the split files like every other clip; `synth.json` at the root
records the classes, the seed and which clips are faulty.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import MMAError
from pipeline.core.folds import FOLDS, NUM_FOLDS
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text, read_json
from pipeline.core.results import StageResult
from pipeline.data.datasets import DFEW_CLASSES, MAFW_CLASSES
from pipeline.data.published import read_published_split

log = logging.getLogger(__name__)

FPS = 25
WIDTH, HEIGHT = 160, 120
AUDIO_RATE = 44100
SHORT_CLIP_FRAMES = 10  # the "shorter than 16 frames" fault
FAULT_KINDS = ("no_audio", "truncated", "no_face", "short")
LAYOUTS = ("mafw", "dfew")

# MAFW's own label words (its label files use these nouns; the authors' order differs: see
# pipeline.data.datasets). The mapping own word -> class name is the identity for MAFW.
MAFW_OWN_WORDS = {name: name for name in MAFW_CLASSES}

# Class tints (RGB gains on the face) and tone pitches, one per class id (up to 11 classes).
_TINTS = np.array(
    [
        [1.00, 1.00, 1.00],
        [0.70, 0.80, 1.15],
        [1.15, 0.95, 0.70],
        [1.20, 0.70, 0.70],
        [0.75, 1.15, 0.80],
        [0.95, 0.75, 1.15],
        [0.80, 1.05, 1.10],
        [1.10, 1.10, 0.75],
        [0.85, 0.85, 0.85],
        [1.15, 0.85, 1.00],
        [0.90, 1.15, 1.05],
    ],
    dtype=np.float32,
)
_FACE_SIZES = np.linspace(84, 104, 11)  # face patch side in px per class (before breathing)
_BASE_PITCH = 220.0
_PITCH_STEP = 2 ** (4 / 12)  # a major third between consecutive classes


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg binary shipped by imageio-ffmpeg (there is no system ffmpeg)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def _face_patch() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's face with some context (square RGB float32) and a soft elliptical alpha."""
    from skimage import data

    img = data.astronaut().astype(np.float32)
    # MTCNN finds her face at about (181, 62)-(268, 172); keep a square of context around it.
    patch = img[7:227, 114:334]
    side = patch.shape[0]
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.sqrt(((xx - side / 2) / (side * 0.48)) ** 2 + ((yy - side / 2) / (side * 0.50)) ** 2)
    alpha = np.clip((1.0 - r) / 0.12, 0.0, 1.0)
    return patch, alpha


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if arr.ndim == 3:
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)
    im = Image.fromarray((arr * 255).astype(np.uint8))
    return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


@dataclass
class ClipSpec:
    """Everything needed to render one clip."""

    index: int
    clip_id: str
    label: int
    fold: int
    fault: str | None = None


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random two-colour gradient (H, W, 3) float32: a per-clip nuisance."""
    c0, c1 = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    t = (np.cos(angle) * xx / WIDTH + np.sin(angle) * yy / HEIGHT + 1.0) / 2.0
    return (c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]).astype(np.float32)


def render_frames(spec: ClipSpec, num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Frames (N, H, W, 3) uint8 and, per frame, the face box (x0, y0, side) or None."""
    patch, alpha = _face_patch()
    bg = _background(rng)
    tint = _TINTS[spec.label % len(_TINTS)]
    base = _FACE_SIZES[spec.label % len(_FACE_SIZES)] * rng.uniform(0.95, 1.05)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = np.empty((num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    boxes: list = []
    for i in range(num_frames):
        t = i / FPS
        frame = bg.copy()
        frame += rng.normal(0, 3.0, frame.shape).astype(np.float32)
        if spec.fault == "no_face":
            # a moving plain ellipse where a face would be: something to look at, nothing to detect
            side = int(base)
            cx = WIDTH / 2 + 20 * np.sin(1.3 * t + phase[0])
            x0, y0 = int(cx - side / 2), int((HEIGHT - side) / 2)
            blob = _resize(alpha, side)[..., None]
            _paste(frame, np.full((side, side, 3), 90.0, np.float32) * tint, blob, x0, y0)
            boxes.append(None)
        else:
            side = int(round(base * (1.0 + 0.06 * np.sin(2.1 * t + phase[2]))))
            cx = WIDTH / 2 + 22 * np.sin(1.3 * t + phase[0])
            cy = HEIGHT / 2 + 6 * np.sin(1.7 * t + phase[1])
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            face = _resize(patch, side) * tint[None, None, :]
            _paste(frame, face, _resize(alpha, side)[..., None], x0, y0)
            boxes.append((x0, y0, side))
        frames[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames, boxes


def _paste(frame: np.ndarray, img: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend img at (x0, y0) into frame, clipped to the frame."""
    h, w = img.shape[:2]
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    sub = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    a = alpha[sub]
    frame[fy0:fy1, fx0:fx1] = frame[fy0:fy1, fx0:fx1] * (1 - a) + img[sub] * a


def class_pitch(label: int) -> float:
    """Fundamental frequency (Hz) of the tone for a class id."""
    return _BASE_PITCH * _PITCH_STEP**label


def render_audio(spec: ClipSpec, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Stereo int16 samples (n, 2): a class-pitched harmonic tone with a slow tremolo, plus noise."""
    n = int(round(seconds * AUDIO_RATE))
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    f0 = class_pitch(spec.label) * rng.uniform(0.98, 1.02)
    tone = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2 * f0 * t + rng.uniform(0, 6.28))
    tremolo = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    ramp = np.clip(np.minimum(t, t[-1] - t) / 0.02, 0, 1) if n > 1 else np.ones(n)
    mono = 0.3 * tone * tremolo * ramp
    left = mono + rng.normal(0, 0.03, n)
    right = 0.8 * mono + rng.normal(0, 0.03, n)
    stereo = np.stack([left, right], axis=1)
    return (np.clip(stereo, -1, 1) * 32767).astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(samples.shape[1])
        wf.setsampwidth(2)
        wf.setframerate(AUDIO_RATE)
        wf.writeframes(samples.tobytes())


def encode_mp4(frames: np.ndarray, audio: np.ndarray | None, out: Path, tmp_dir: Path) -> None:
    """Encode frames (N,H,W,3 uint8) and optional int16 audio into an h264/aac mp4 with ffmpeg."""
    n, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0"]
    if audio is not None:
        wav = tmp_dir / (out.stem + ".wav")
        _write_wav(wav, audio)
        cmd += ["-i", str(wav)]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-threads", "1"]
    if audio is not None:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    else:
        cmd += ["-an"]
    cmd += [str(out)]
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise MMAError(f"{out}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    if audio is not None:
        (tmp_dir / (out.stem + ".wav")).unlink(missing_ok=True)


def _plan(layout: str, clips_per_class: int, classes: int, with_faults: bool, seed: int,
          published: dict[str, Any] | None = None) -> list[ClipSpec]:
    """Clip ids, labels and test folds: each class spread evenly over the folds, ids shuffled.

    With `published` (clip_id -> PublishedClip), each clip instead takes the id, label and test
    fold of a distinct published clip of its (label, fold), so the copy is a subset of that split.
    """
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int, str | None]] = []
    for label in range(classes):
        offset = int(rng.integers(NUM_FOLDS))
        for j in range(clips_per_class):
            pairs.append((label, (offset + j) % NUM_FOLDS + 1, None))
    if with_faults:
        for j, kind in enumerate(FAULT_KINDS):
            pairs.append((j % classes, j % NUM_FOLDS + 1, kind))
    if published is not None:
        return _plan_published(pairs, published)
    order = rng.permutation(len(pairs))
    specs = []
    for index, k in enumerate(order):
        label, fold, fault = pairs[int(k)]
        specs.append(ClipSpec(index=index, clip_id=f"{index + 1:05d}", label=label, fold=fold, fault=fault))
    return specs


def _plan_published(pairs: list[tuple[int, int, str | None]], published: dict[str, Any]) -> list[ClipSpec]:
    """Give each (label, fold, fault) the id of the first unused published clip of that label and fold."""
    pools: dict[tuple[int, int], list[str]] = {}
    for clip in sorted(published.values(), key=lambda c: c.clip_id, reverse=True):
        pools.setdefault((clip.label, clip.test_fold), []).append(clip.clip_id)
    chosen = []
    for label, fold, fault in pairs:
        pool = pools.get((label, fold))
        if not pool:
            raise MMAError(f"the published split has too few clips of class {label} in fold {fold}")
        chosen.append((pool.pop(), label, fold, fault))
    chosen.sort()
    return [ClipSpec(index=i, clip_id=cid, label=label, fold=fold, fault=fault)
            for i, (cid, label, fold, fault) in enumerate(chosen)]


def _clip_video_path(root: Path, layout: str, spec: ClipSpec) -> Path:
    if layout == "mafw":
        return root / "data" / "clips" / f"{spec.clip_id}.mp4"
    return root / "Clip" / "original" / f"{int(spec.clip_id)}.mp4"


def _make_clip(spec: ClipSpec, root: Path, layout: str, seconds: float, seed: int, tmp_dir: Path) -> None:
    """Render, encode and (for faults) damage one clip; DFEW also gets its official face frames."""
    rng = np.random.default_rng([seed, spec.index])
    num_frames = SHORT_CLIP_FRAMES if spec.fault == "short" else max(1, int(round(seconds * FPS)))
    clip_seconds = num_frames / FPS
    frames, boxes = render_frames(spec, num_frames, rng)
    audio = None if spec.fault == "no_audio" else render_audio(spec, clip_seconds, rng)
    out = _clip_video_path(root, layout, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, audio, out, tmp_dir)
    if spec.fault == "truncated":
        data = out.read_bytes()
        out.write_bytes(data[: len(data) // 2])
    if layout == "dfew":
        _write_official_frames(root / "Clip" / "clip_224x224" / spec.clip_id, frames, boxes)


def _write_official_frames(folder: Path, frames: np.ndarray, boxes: list) -> None:
    """DFEW-style pre-cropped 224x224 face frames `1.jpg, 2.jpg, ...` (centre crop where no face)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        if box is None:
            side = min(h, w)
            x0, y0 = (w - side) // 2, (h - side) // 2
        else:
            x0, y0, side = box
        crop = Image.fromarray(frame).crop((x0, y0, x0 + side, y0 + side)).resize((224, 224), Image.BILINEAR)
        crop.save(folder / f"{i + 1}.jpg", quality=95)


def _write_splits(root: Path, layout: str, specs: list[ClipSpec], class_names: list[str]) -> None:
    """Official-format split files for folds 1..5 (test = that fold, train = the rest)."""
    for fold in FOLDS:
        test = [s for s in specs if s.fold == fold]
        train = [s for s in specs if s.fold != fold]
        if layout == "mafw":
            folder = root / "Train & Test Set" / "single" / "no_caption" / f"set_{fold}"
            for name, rows in (("train", train), ("test", test)):
                lines = [f"{s.clip_id}.mp4 {MAFW_OWN_WORDS[class_names[s.label]]}" for s in rows]
                atomic_write_text(folder / f"{name}.txt", "\n".join(lines) + "\n")
        else:
            for name, rows in (("train", train), ("test", test)):
                lines = ["video_name,label"] + [f"{int(s.clip_id)},{s.label + 1}" for s in rows]
                path = root / "EmoLabel_DataSplit" / f"{name}(single-labeled)" / f"set_{fold}.csv"
                atomic_write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class SynthResult(StageResult):
    """`mma synth`: where the dataset was written, its layout, clips, classes and the faulty clips."""

    out: str
    layout: str
    clips: int
    classes: list[str]
    faults: list[dict[str, Any]]
    seconds: float


def make_synth_dataset(
    out: str | Path,
    *,
    layout: str = "mafw",
    clips_per_class: int = 5,
    seconds: float = 2.0,
    classes: int = 4,
    with_faults: bool = False,
    seed: int = 1,
    force: bool = False,
    workers: int = 2,
    published_ids: bool = False,
) -> SynthResult:
    """Write the dataset under `out` (built in a temp dir, renamed into place) and return a summary.

    Refuses a non-empty `out` unless `force`. Classes are the first `classes` names of the
    authors' class order of the layout's dataset (MAFW: 11, DFEW: 7). With `published_ids`, clip
    ids, labels and test folds are those of clips of the layout's published split
    (pipeline.data.published), so the copy passes `mma check <layout>` as a subset.
    """
    out = Path(out)
    if layout not in LAYOUTS:
        raise MMAError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    all_names = MAFW_CLASSES if layout == "mafw" else DFEW_CLASSES
    if not 1 <= classes <= len(all_names):
        raise MMAError(f"--classes {classes}: the {layout} layout has 1..{len(all_names)} classes")
    if clips_per_class < 1:
        raise MMAError(f"--clips-per-class {clips_per_class}: need at least 1")
    if seconds * FPS < 1:
        raise MMAError(f"--seconds {seconds}: a clip needs at least one frame at {FPS} fps")
    if out.exists():
        if not out.is_dir():
            raise MMAError(f"{out}: exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise MMAError(f"{out}: directory is not empty (use --force to replace it)")
        else:
            out.rmdir()
    class_names = list(all_names[:classes])
    published = None
    if published_ids:
        published = read_published_split(layout)
    specs = _plan(layout, clips_per_class, classes, with_faults, seed, published)
    start = time.perf_counter()
    with atomic_dir(out, overwrite=True) as tmp_root, tempfile.TemporaryDirectory() as scratch:
        make = functools.partial(_make_clip, root=tmp_root, layout=layout, seconds=seconds, seed=seed,
                                 tmp_dir=Path(scratch))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(make, specs))
        _write_splits(tmp_root, layout, specs, class_names)
        faults = [
            {"clip_id": s.clip_id, "kind": s.fault, "label": s.label, "fold": s.fold,
             "video": str(_clip_video_path(Path("."), layout, s))}
            for s in specs if s.fault
        ]
        info = {
            "generator": "mma synth",
            "layout": layout,
            "classes": class_names,
            "label_words": [MAFW_OWN_WORDS[c] for c in class_names] if layout == "mafw"
            else [str(i + 1) for i in range(classes)],
            "clips": len(specs),
            "clips_per_class": clips_per_class,
            "seconds": seconds,
            "fps": FPS,
            "frame_size": [WIDTH, HEIGHT],
            "audio_rate": AUDIO_RATE,
            "seed": seed,
            "published_ids": published_ids,
            "pitch_hz": [round(class_pitch(k), 2) for k in range(classes)],
            "tints": _TINTS[:classes].tolist(),
            "faults": faults,
        }
        atomic_write_json(tmp_root / "synth.json", info)
    elapsed = time.perf_counter() - start
    log.info("synth: %d clips (%d faulty) in %s layout at %s in %.1f s", len(specs), len(faults), layout, out, elapsed)
    return SynthResult(str(out), layout, len(specs), class_names, faults, round(elapsed, 2))


def read_synth_info(root: str | Path) -> dict[str, Any] | None:
    """The `synth.json` of a synth dataset root, or None when there is none."""
    return read_json(Path(root) / "synth.json", default=None)


__all__ = ["make_synth_dataset", "read_synth_info", "render_frames", "render_audio", "encode_mp4", "ffmpeg_exe",
           "class_pitch", "FAULT_KINDS", "FPS"]
