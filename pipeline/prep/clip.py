"""One clip of `mma prep`: raw video (or DFEW's face frames) -> a validated clip directory.

Output, `<workdir>/<ds>/prep/clips/<clip_id>/` (appears atomically: temp dir + rename):
  frames/000000.jpg ...  square RGB face crops (data.crop_size), every decoded frame, native rate
  fbank.npy              float16 (n, 128) raw kaldi fbank of the whole clip (0 rows: no audio)
  meta.json              clip_id, label, num_frames, fps, has_audio, sample_rate, audio_seconds,
                         faces_found (per frame), confidence, boxes (per frame: the crop box
                         [x1, y1, x2, y2] in source-frame pixels, before clamping to the frame),
                         warnings, config_hash, ...
`process_video` is the one per-clip function (prep, predict); `clip_is_done` is the check that
makes prep resumable and that `mma shard` uses to pick finished clips.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from model.config import ModelConfig
from pipeline.core.config import DataConfig, to_dict
from pipeline.core.disk import is_disk_full
from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_dir, read_json_or, sha256_json
from pipeline.prep.audio import clip_fbank
from pipeline.prep.faces import crop_frames, detect_faces, resize_face_frames, select_faces
from pipeline.prep.video import DEFAULT_FPS, ClipError, DecodedClip, decode_clip, read_frame_folder

PREP_VERSION = 2  # 2: union rule replicates the authors (squared box, full-res detection)
# DataConfig fields that change what prep writes (the rest only matter at load time).
PREP_FIELDS = ("faces", "face_select", "crop_size", "jpeg_quality", "audio_rate", "detect_max_side")


# --------------------------------------------------------------------------- settings


def prep_settings(data_cfg: DataConfig) -> dict[str, Any]:
    """The settings that determine prep's output (data.compat resolved), plus the output format version."""
    values = to_dict(data_cfg.resolved())
    return {"version": PREP_VERSION, **{k: values[k] for k in PREP_FIELDS}}


def settings_hash(data_cfg: DataConfig) -> str:
    return sha256_json(prep_settings(data_cfg))[:16]


def check_prep_settings(data_cfg: DataConfig) -> None:
    """The data settings prep accepts (the config's own validation plus the crop size range)."""
    data_cfg.validate()
    if not 16 <= data_cfg.crop_size <= 1024:
        raise MMAError(f"data.crop_size={data_cfg.crop_size} is outside 16..1024")


# --------------------------------------------------------------------------- one clip


def frame_name(index: int) -> str:
    """File name of frame `index` in a clip's frames/ folder."""
    return f"{index:06d}.jpg"


def _official_faces(video: str | Path | None, frames_dir: str | Path | None, data_cfg: DataConfig,
                    clip_id: str) -> tuple[np.ndarray, DecodedClip, dict[str, Any]]:
    """DFEW's pre-cropped face frames, resized to crop_size; the video (if any) gives audio and fps."""
    if frames_dir is None:
        raise ClipError("frames", f"clip {clip_id}: --faces official needs the dataset's face frames folder")
    faces = resize_face_frames(read_frame_folder(frames_dir), data_cfg.crop_size)
    if video is not None and Path(video).is_file():
        decoded = decode_clip(video, video=False)
    else:
        decoded = DecodedClip(np.zeros((0, 0, 0, 3), np.uint8), DEFAULT_FPS, None, None,
                              [f"video missing ({video}): no audio, fps assumed {DEFAULT_FPS:g}"])
    info = {"face_source": "official", "faces_found": [1] * len(faces), "no_face_frames": 0, "confidence": None,
            "boxes": None, "source_size": [int(faces.shape[2]), int(faces.shape[1])]}
    return faces, decoded, info


def _detected_faces(video: str | Path | None, data_cfg: DataConfig, clip_id: str,
                    device: str | None) -> tuple[np.ndarray, DecodedClip, dict[str, Any]]:
    """Decode the video, run MTCNN on every frame, select one box per frame, crop to crop_size."""
    if video is None:
        raise ClipError("open", f"clip {clip_id}: no video file given")
    decoded = decode_clip(video)
    height, width = decoded.frames.shape[1:3]
    # the authors' union rule detects on the full-resolution frame; tracking on a copy whose longer
    # side is at most data.detect_max_side (640 for prep; predict uses 320 by default)
    det = detect_faces(decoded.frames, device=device,
                       max_side=None if data_cfg.face_select == "union" else data_cfg.detect_max_side)
    track = select_faces(det, height, width, data_cfg.face_select)
    faces = crop_frames(decoded.frames, track.boxes, data_cfg.crop_size)
    decoded.warnings[:0] = track.warnings
    info = {
        "face_source": f"mtcnn-{data_cfg.face_select}",
        "faces_found": det.faces_per_frame,
        "no_face_frames": int((~track.detected).sum()),
        "confidence": [None if c is None else round(c, 4) for c in track.confidence],
        "boxes": np.round(track.boxes, 1).tolist(),
        "source_size": [int(width), int(height)],
    }
    return faces, decoded, info


def process_video(
    video: str | Path | None,
    out_dir: str | Path,
    data_cfg: DataConfig,
    *,
    clip_id: str,
    label: int = -1,
    device: str | None = None,
    frames_dir: str | Path | None = None,
    frames_per_clip: int = ModelConfig.num_frames,
) -> dict[str, Any]:
    """Turn one raw video into a prep clip directory at `out_dir` (written atomically); returns meta.

    `frames_per_clip` (model.num_frames) only words a warning: a clip with fewer face frames has
    its last frame repeated by the loader.

    `frames_dir` (with data.faces="official") supplies pre-cropped face frames (DFEW's
    clip_224x224); the video then only provides audio and fps. Raises ClipError(stage, msg)
    for a bad input; anything else is a bug and propagates.
    """
    start = time.perf_counter()
    data_cfg = data_cfg.resolved()  # no-op for a config run_prep resolved; data.compat for a bare one
    if data_cfg.faces == "official":
        faces, decoded, face_info = _official_faces(video, frames_dir, data_cfg, clip_id)
    else:
        faces, decoded, face_info = _detected_faces(video, data_cfg, clip_id, device)
    warnings = list(decoded.warnings)
    fbank, audio_info = clip_fbank(decoded.audio, decoded.sample_rate, data_cfg.audio_rate)
    if audio_info["has_audio"] and fbank.shape[0] == 0:
        warnings.append(f"audio track too short for one fbank frame ({audio_info['audio_seconds']} s): treated as no audio")
        audio_info["has_audio"] = False
    if len(faces) < frames_per_clip:
        warnings.append(f"only {len(faces)} frames (< {frames_per_clip}): the loader repeats the last one")
    meta = {
        "clip_id": str(clip_id),
        "label": int(label),
        "num_frames": int(len(faces)),
        "fps": round(float(decoded.fps), 4),
        "duration": round(len(faces) / decoded.fps, 4) if decoded.fps else None,
        "source_size": face_info.pop("source_size"),
        "crop_size": int(data_cfg.crop_size),
        **audio_info,
        "fbank_frames": int(fbank.shape[0]),
        **face_info,
        "warnings": warnings,
        "video": str(video) if video is not None else None,
        "config_hash": settings_hash(data_cfg),
        "prep_seconds": None,
    }
    _write_clip_dir(Path(out_dir), faces, fbank, meta, data_cfg.jpeg_quality, start)
    return meta


def _write_clip_dir(out_dir: Path, faces: np.ndarray, fbank: np.ndarray, meta: dict, quality: int, start: float) -> None:
    from PIL import Image

    try:
        with atomic_dir(out_dir, overwrite=True) as tmp:
            frames = tmp / "frames"
            frames.mkdir()
            for i, face in enumerate(faces):
                Image.fromarray(face).save(frames / frame_name(i), quality=int(quality))
            np.save(tmp / "fbank.npy", fbank.astype(np.float16))
            meta["prep_seconds"] = round(time.perf_counter() - start, 3)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    except OSError as exc:
        if is_disk_full(exc):  # the disk's problem, not the clip's: the stage stops (pipeline.core.disk)
            raise
        raise ClipError("write", f"{out_dir}: cannot write clip ({exc})") from None


def load_meta(clip_dir: str | Path) -> dict[str, Any] | None:
    """meta.json of a clip directory, or None if absent/unreadable."""
    return read_json_or(Path(clip_dir) / "meta.json", None)


def clip_is_done(clip_dir: str | Path, config_hash: str, clip_id: str | None = None) -> dict[str, Any] | None:
    """The clip's meta if its directory is complete and made with these settings, else None.

    Checks meta.json, the config hash, every frame file and the fbank header (not just existence
    of the folder).
    """
    clip_dir = Path(clip_dir)
    meta = load_meta(clip_dir)
    if not meta or meta.get("config_hash") != config_hash:
        return None
    if clip_id is not None and meta.get("clip_id") != clip_id:
        return None
    n = int(meta.get("num_frames", 0))
    frames = clip_dir / "frames"
    if n <= 0 or not all((frames / frame_name(i)).is_file() for i in (0, n - 1)):
        return None
    if sum(1 for _ in frames.iterdir()) != n:
        return None
    header = npy_header(clip_dir / "fbank.npy")
    if header is None:
        return None
    shape, dtype = header
    if len(shape) != 2 or shape[0] != meta.get("fbank_frames") or dtype != np.float16:
        return None
    return meta


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of a .npy file whose data is all there (header read, size checked; the array is
    not loaded or mapped: about 2x cheaper than np.load with mmap), else None."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            start = fh.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if dtype.hasobject or size < start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        return None
    return tuple(int(n) for n in shape), dtype
