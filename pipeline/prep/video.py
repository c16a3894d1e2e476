"""Decoding a clip's video and audio streams (PyAV, i.e. FFmpeg's libraries in-process).

`decode_clip` returns every video frame at the clip's native rate as RGB uint8 and the audio
track as float32 samples at the file's own rate, all channels. What happens to the audio next
(mono, resampling, fbank) lives in `pipeline.prep.audio`; what happens to the frames in
`pipeline.prep.faces`. Failures raise `ClipError` carrying the stage that failed ("open", "video",
"audio"), which prep records in its failures ledger. A file without an audio stream is not an
error: `audio` is None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.core.errors import MMAError

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0  # assumed when a container does not say (and for a missing video)


class ClipError(MMAError):
    """One clip could not be processed; `stage` says where (open, video, audio, faces, write)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage

    def __reduce__(self):  # picklable across Dask workers
        return (ClipError, (self.stage, str(self)))


@dataclass
class DecodedClip:
    """All frames (N, H, W, 3) uint8 at `fps`; audio (channels, samples) float32 or None."""

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None
    sample_rate: int | None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def _first_line(exc: BaseException) -> str:
    """A short reason: FFmpeg's own message without errno and file name, else the first line."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    if rate:
        return float(Fraction(rate))
    return DEFAULT_FPS


def decode_clip(path: str | Path, *, video: bool = True, audio: bool = True) -> DecodedClip:
    """Decode `path`: every video frame as RGB, and the first audio stream as float32 planar.

    Raises ClipError(stage, message) for a missing/corrupt/truncated file, no video stream,
    zero frames, or an audio stream that cannot be decoded.
    """
    import av

    path = Path(path)
    warnings: list[str] = []
    if not path.is_file():
        raise ClipError("open", f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.FFmpegError and friends
        raise ClipError("open", f"{path}: cannot open ({_first_line(exc)})") from None
    try:
        if video and not container.streams.video:
            raise ClipError("video", f"{path}: no video stream")
        vstream = container.streams.video[0] if video else None
        astream = container.streams.audio[0] if (audio and container.streams.audio) else None
        if audio and astream is None:
            warnings.append("no audio track")
        fps = _stream_fps(container.streams.video[0]) if container.streams.video else DEFAULT_FPS
        if vstream is not None:
            vstream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        resampler = None
        rate = None
        if astream is not None:
            import av

            rate = int(astream.rate or astream.codec_context.sample_rate)
            resampler = av.AudioResampler(format="fltp", layout=astream.layout.name, rate=rate)
        streams = [s for s in (vstream, astream) if s is not None]
        stage = "video"
        try:
            for packet in container.demux(streams) if streams else ():  # demux([]) would read every stream
                if packet.stream is vstream:
                    stage = "video"
                    for frame in packet.decode():
                        frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    stage = "audio"
                    for frame in packet.decode():
                        chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            if resampler is not None:
                stage = "audio"
                chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except ClipError:
            raise
        except Exception as exc:
            done = f"after {len(frames)} frames " if stage == "video" else ""
            raise ClipError(stage, f"{path}: {stage} decoding failed {done}({_first_line(exc)})") from None
        if vstream is not None and not frames:
            raise ClipError("video", f"{path}: zero decodable video frames")
        frames_arr = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
        samples = None
        if astream is not None:
            channels = max(1, len(astream.layout.channels))
            samples = (np.concatenate(chunks, axis=1).astype(np.float32, copy=False) if chunks
                       else np.zeros((channels, 0), np.float32))
    finally:
        container.close()
    return DecodedClip(frames_arr, fps, samples, rate, warnings)


def read_frame_folder(folder: str | Path) -> np.ndarray:
    """Frames of a folder of images (e.g. DFEW's clip_224x224/<id>/), in numeric order of their names."""
    import re

    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ClipError("frames", f"{folder}: official frame folder not found")
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not files:
        raise ClipError("frames", f"{folder}: no image files")

    def key(p: Path) -> tuple[int, str]:
        numbers = re.findall(r"\d+", p.stem)
        return (int(numbers[-1]) if numbers else -1, p.name)

    frames = []
    for p in sorted(files, key=key):
        try:
            with Image.open(p) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except Exception as exc:
            raise ClipError("frames", f"{p}: unreadable image ({_first_line(exc)})") from None
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ClipError("frames", f"{folder}: frames differ in size {sorted(shapes)}")
    return np.stack(frames)
