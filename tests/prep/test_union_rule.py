"""The authors' union rule (their MAFW face extraction) against a reference written here from their
description, and prep recording every frame's crop box (meta.json `boxes`, before clamping)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import DataConfig
from pipeline.data.synth import ffmpeg_exe
from pipeline.prep.clip import process_video
from pipeline.prep.faces import DETECT_MAX_SIDE, Detections, crop_frames, detect_faces, select_faces
from pipeline.prep.video import decode_clip


def reference_crop(frame: np.ndarray, faces: list[list[float]]) -> tuple[list[int], np.ndarray]:
    """From the description: union of all boxes, corners rounded, x1/y1 clamped at 0, the shorter side
    widened by diff // 2 each way, crop = frame[max(0, y1):y2, max(0, x1):x2]; no face: a centred
    square of half the short side, frame[H//2 - s//2 : H//2 + s//2, W//2 - s//2 : W//2 + s//2]."""
    H, W = frame.shape[:2]
    if not faces:
        s = min(H // 2, W // 2)
        box = [W // 2 - s // 2, H // 2 - s // 2, W // 2 + s // 2, H // 2 + s // 2]
    else:
        x1 = max(0, round(min(f[0] for f in faces)))
        y1 = max(0, round(min(f[1] for f in faces)))
        x2, y2 = round(max(f[2] for f in faces)), round(max(f[3] for f in faces))
        height, width = y2 - y1, x2 - x1
        if height > width:
            x1, x2 = x1 - (height - width) // 2, x2 + (height - width) // 2
        elif width > height:
            y1, y2 = y1 - (width - height) // 2, y2 + (width - height) // 2
        box = [x1, y1, x2, y2]
    return box, frame[max(0, box[1]):box[3], max(0, box[0]):box[2]]


CASES = {
    "two faces, wide union": [[180.54, 62.1, 842.9, 174.3], [752.7, 65.0, 843.0, 170.2]],
    "tall face, odd difference": [[50.2, 20.4, 90.6, 101.3]],
    "face at the top-left edge": [[-7.6, -3.2, 40.0, 30.4]],
    "face past the bottom-right": [[150.0, 90.0, 215.5, 131.0]],
    "half-integers round to even": [[10.5, 11.5, 40.5, 41.5]],
    "no face": [],
}


@pytest.mark.parametrize("name", list(CASES))
def test_union_rule_matches_the_reference(name):
    H, W = 120, 200
    frame = (np.arange(H * W * 3) % 251).astype(np.uint8).reshape(H, W, 3)
    faces = CASES[name]
    det = Detections([np.asarray(faces, np.float32).reshape(-1, 4)], [np.full(len(faces), 0.99, np.float32)])
    track = select_faces(det, H, W, "union")
    want_box, want_crop = reference_crop(frame, faces)
    assert track.boxes[0].tolist() == want_box
    assert bool(track.detected[0]) == bool(faces)
    # the crop is the box's part inside the frame: with an integral box and no resize it is the slice
    h, w = want_crop.shape[:2]
    if h == w:
        np.testing.assert_array_equal(crop_frames(frame[None], track.boxes, h)[0], want_crop)


def test_union_prep_detects_at_full_resolution_and_records_unclamped_boxes(tmp_path: Path):
    from skimage import data

    a = data.astronaut()
    frame = np.concatenate([a, a[:, ::-1]], axis=1)  # 512 x 1024: two real faces, larger than 640 px
    video = tmp_path / "two.mp4"
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1024x512", "-r", "25",
           "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(video)]
    subprocess.run(cmd, input=np.stack([frame] * 2).tobytes(), check=True)
    meta = process_video(video, tmp_path / "clip", DataConfig(compat="authors", crop_size=64), clip_id="two")
    assert meta["face_source"] == "mtcnn-union" and meta["faces_found"] == [2, 2]
    decoded = decode_clip(video).frames
    full = detect_faces(decoded, max_side=None)
    small = detect_faces(decoded, max_side=DETECT_MAX_SIDE)
    want = [reference_crop(f, b.tolist())[0] for f, b in zip(decoded, full.boxes)]
    assert meta["boxes"] == want  # full-resolution detections, squared, recorded before clamping
    assert want[0][1] < 0 and want[0][3] > 400 and want[0][2] - want[0][0] >= 660
    assert [reference_crop(f, b.tolist())[0] for f, b in zip(decoded, small.boxes)] != want
    track = process_video(video, tmp_path / "track", DataConfig(crop_size=64), clip_id="two")
    assert track["face_source"] == "mtcnn-track" and len(track["boxes"]) == 2
    x0, y0, x1, y1 = track["boxes"][0]
    assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 512 and abs((x1 - x0) - (y1 - y0)) < 0.2
