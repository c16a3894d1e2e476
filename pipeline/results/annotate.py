"""annotated.mp4 of `mma predict --out`: the original video and audio, the tracked face box, the top-3 classes.

The ffmpeg graph is built with ffmpeg-python and run with the binary imageio-ffmpeg ships:
input 0 is the original file (its video with timestamps from zero, its audio stream if any,
re-encoded to AAC); input 1 is a transparent RGBA overlay per frame, drawn here with PIL and
piped as raw video at the original frame rate, laid over the video. The overlay holds the
tracked face box of the frame (green where MTCNN found a face, orange where the box was
filled in from neighbours or is the centre crop) and, in the top-left corner, the top-3
classes of the window whose centre is nearest to the frame as bars. Output: H.264 + AAC,
one output frame per input frame (same rate and duration).
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.core.errors import MMAError
from pipeline.results.timeline import class_colours

log = logging.getLogger(__name__)

FOUND = (60, 220, 90, 255)
FILLED = (255, 150, 40, 255)
TOP_K = 3


def nearest_window(num_frames: int, fps: float, centres: Sequence[float]) -> np.ndarray:
    """(num_frames,) index of the window whose centre is nearest to each frame's time."""
    t = (np.arange(num_frames) + 0.5) / fps
    return np.abs(t[:, None] - np.asarray(centres)[None, :]).argmin(axis=1)


def _panel(probs: np.ndarray, classes: Sequence[str], colours: Sequence[Any], width: int, height: int) -> Any:
    """RGBA image of the top-3 bars for one window's probabilities."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(11, height // 28)
    font = ImageFont.load_default(size=size)
    row = int(size * 1.7)
    pw = max(170, int(width * 0.32))
    ph = row * TOP_K + size
    img = Image.new("RGBA", (pw, ph), (0, 0, 0, 150))
    draw = ImageDraw.Draw(img)
    label_w = int(pw * 0.42)
    bar_w = pw - label_w - int(size * 3.6)
    for r, k in enumerate(np.argsort(-probs)[:TOP_K]):
        y = size // 2 + r * row
        draw.text((size // 2, y), classes[k], fill=(255, 255, 255, 255), font=font)
        colour = tuple(int(255 * c) for c in colours[k][:3]) + (255,)
        x0 = label_w
        draw.rectangle((x0, y + 2, x0 + bar_w, y + size), outline=(255, 255, 255, 120))
        draw.rectangle((x0, y + 2, x0 + max(1, int(bar_w * float(probs[k]))), y + size), fill=colour)
        draw.text((x0 + bar_w + size // 3, y), f"{100 * float(probs[k]):.0f}%", fill=(255, 255, 255, 255), font=font)
    return img


def overlay_frames(analysis: Any, classes: Sequence[str]):
    """Yield the RGBA overlay bytes of every frame (box + bars)."""
    from PIL import Image, ImageDraw

    meta = analysis.meta
    width, height = (int(v) for v in meta["source_size"])
    n, fps = int(meta["num_frames"]), float(meta["fps"])
    boxes = np.asarray(meta.get("boxes") or [[0, 0, width, height]] * n, np.float32)
    found = analysis.face_found
    current = nearest_window(n, fps, [s.centre for s in analysis.spans])
    colours = class_colours(len(classes))
    panels: dict[int, Any] = {}
    line = max(2, height // 180)
    margin = max(4, height // 60)
    for i in range(n):
        k = int(current[i])
        if k not in panels:
            panels[k] = _panel(analysis.probs[k], classes, colours, width, height)
        img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        img.paste(panels[k], (margin, margin))
        x0, y0, x1, y1 = (float(v) for v in boxes[min(i, len(boxes) - 1)])
        ImageDraw.Draw(img).rectangle((x0, y0, x1 - 1, y1 - 1), outline=FOUND if found[i] else FILLED, width=line)
        yield img.tobytes()


def write_annotated(path: str | Path, analysis: Any, classes: Sequence[str]) -> Path:
    """Render annotated.mp4 for one analysed video (`pipeline.results.predict.VideoAnalysis`)."""
    import ffmpeg
    import imageio_ffmpeg

    path = Path(path)
    width, height = (int(v) for v in analysis.meta["source_size"])
    fps = float(analysis.meta["fps"])
    src = ffmpeg.input(str(analysis.video))
    overlay = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgba", s=f"{width}x{height}", framerate=fps)
    video = ffmpeg.overlay(src.video.filter("setpts", "PTS-STARTPTS"), overlay, eof_action="repeat")
    if width % 2 or height % 2:  # H.264 in yuv420p needs even sides
        video = video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
    graph = (
        ffmpeg.output(video, src["a?"], str(path), vcodec="libx264", pix_fmt="yuv420p", preset="veryfast", crf=23,
                      acodec="aac", audio_bitrate="160k", movflags="+faststart", fps_mode="passthrough",
                      format="mp4")
        .global_args("-nostdin", "-loglevel", "error")
        .overwrite_output()
    )
    args = graph.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe())
    broken = False
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            for frame in overlay_frames(analysis, classes):
                proc.stdin.write(frame)
        except BrokenPipeError:
            broken = True
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip().splitlines()
    if rc != 0 or broken or not path.is_file():
        reason = message[-1] if message else f"exit status {rc}"
        raise MMAError(f"{analysis.video}: ffmpeg could not write {path.name} ({reason})")
    return path
