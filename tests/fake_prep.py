"""Test helper: a small prepped dataset written straight in prep's output format (no video, no MTCNN).

Fast and independent of the prep stage: clip folders with numbered face JPEGs (each frame a
distinct colour pattern, so a test can tell frames apart), a raw float16 fbank and a meta.json
carrying prep's config hash, plus the manifest, classes.json and prep_config.json that
`mma shard` reads. One clip has no audio track (0 fbank rows) and one is shorter than 16 frames.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.config import DataConfig
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Workspace
from pipeline.data.manifest import write_manifest
from pipeline.prep.clip import _write_clip_dir, prep_settings, settings_hash

CLASSES = ["happiness", "sadness", "neutral"]


def frame_image(clip: int, index: int, size: int) -> np.ndarray:
    """A (size, size, 3) uint8 frame: a gradient plus a block whose brightness encodes the frame index."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 255 // size), (y * 255 // size), np.full_like(x, (clip * 37) % 256)], -1).astype(np.uint8)
    img[: size // 2, : size // 2] = (index * 9) % 256
    return img


def make_fake_prep(ws: Workspace, dataset: str = "fake", *, clips_per_fold: int = 3, size: int = 48,
                   seed: int = 0, data_cfg: DataConfig | None = None) -> list[dict]:
    """Write the dataset; returns the manifest rows (clip_id, label, test_fold, ...)."""
    data_cfg = data_cfg or DataConfig(crop_size=size)
    rng = np.random.default_rng(seed)
    digest = settings_hash(data_cfg)
    clips_dir = ws.prep_dir(dataset) / "clips"
    rows = []
    n = 0
    for fold in range(1, 6):
        for _ in range(clips_per_fold):
            cid = f"{n + 1:05d}"
            label = n % len(CLASSES)
            frames = 10 if n == 1 else 20 + (n % 7)  # clip 00002 is short (< 16 frames)
            has_audio = n != 2  # clip 00003 has no audio
            rows_audio = 150 + 10 * n if has_audio else 0
            fbank = (rng.standard_normal((rows_audio, 128)) * 3 - 5).astype(np.float16)
            faces = np.stack([frame_image(n, i, size) for i in range(frames)])
            meta = {"clip_id": cid, "label": label, "num_frames": frames, "fps": 25.0,
                    "has_audio": has_audio, "sample_rate": 16000 if has_audio else None,
                    "audio_seconds": rows_audio / 100.0, "fbank_frames": rows_audio,
                    "faces_found": [1] * frames, "warnings": [], "config_hash": digest, "crop_size": size}
            _write_clip_dir(clips_dir / cid, faces, fbank, meta, data_cfg.jpeg_quality, 0.0)
            rows.append({"clip_id": cid, "label": label, "label_name": CLASSES[label], "test_fold": fold,
                         "video": f"/nonexistent/{cid}.mp4", "frames_dir": "", "label_raw": CLASSES[label],
                         "usable": 1, "problem": ""})
            n += 1
    write_manifest(ws, dataset, rows, CLASSES)
    atomic_write_json(ws.prep_dir(dataset) / "prep_config.json",
                      {"hash": digest, "settings": prep_settings(data_cfg), "dataset": dataset})
    return rows


def fake_config(dataset: str = "fake", *, fold: int = 1, size: int = 48):
    """A tiny-preset RunConfig for the fake dataset (3 classes, S=32 from `size` crops)."""
    from pipeline.core.config import tiny

    cfg = tiny()
    cfg.dataset = dataset
    cfg.fold = fold
    cfg.model.num_classes = len(CLASSES)
    cfg.data.crop_size = size
    cfg.data.num_workers = 0
    cfg.data.shard_max_clips = 2
    cfg.train.batch_size = 4
    return cfg


__all__ = ["make_fake_prep", "fake_config", "frame_image", "CLASSES"]
