"""index.html of `mma predict --out`: one self-contained page per video, for sharing a result.

No network and no other file needed: the timeline PNG and the annotated MP4 are embedded as
base64 data URIs (the MP4 only up to `EMBED_VIDEO_MAX_BYTES`; a larger one is referenced by its
relative name, next to the page), and the video gets a poster frame (a JPEG of its middle frame,
also embedded) so the page shows a picture even where the browser cannot play H.264. Below
them: the clip-level distribution, warnings, provenance and the per-window table.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

from pipeline.core.io import atomic_write_text

EMBED_VIDEO_MAX_BYTES = 25 * 1024 * 1024

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:16px}
video{max-width:100%;width:720px;background:#000;display:block} img.timeline{max-width:100%;display:block;margin:16px 0}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3} td.top{font-weight:600;text-align:left} .warn{color:#a24b00}
.bar{display:inline-block;height:10px;background:#4c78a8;vertical-align:middle}
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def poster_jpeg(video: Path) -> bytes | None:
    """JPEG bytes of the middle frame of `video` (None if it cannot be decoded)."""
    import av

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or 0
            for i, frame in enumerate(container.decode(stream)):
                if i >= frames // 2:
                    buf = io.BytesIO()
                    frame.to_image().save(buf, format="JPEG", quality=85)
                    return buf.getvalue()
    except (av.error.FFmpegError, IndexError):
        return None
    return None


def render_index_html(result: dict[str, Any], classes: Sequence[str], timeline_png: bytes, video_src: str,
                      poster: bytes | None) -> str:
    """The page's HTML for one video's result (summary + windows)."""
    e = html.escape
    name = Path(result["video"]).name
    dist = "".join(
        f"<tr><td class=top>{e(c)}</td><td>{100 * p:.1f}%</td><td style='text-align:left'>"
        f"<span class=bar style='width:{int(200 * p)}px'></span></td></tr>"
        for c, p in sorted(result["distribution"].items(), key=lambda kv: -kv[1]))
    head = "".join(f"<th>{e(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><td>{w['start']:.2f}</td><td>{w['end']:.2f}</td>"
        + "".join(f"<td>{100 * w['distribution'][c]:.1f}</td>" for c in classes)
        + f"<td class=top>{e(w['top_class'])}</td><td>{w['faces_found']}/{w['frames']}</td></tr>"
        for w in result["windows"])
    warnings = "".join(f"<li class=warn>{e(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    ck = result.get("checkpoint", {})
    poster_attr = f' poster="{_data_uri(poster, "image/jpeg")}"' if poster else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mma predict: {e(name)}</title>
<style>{_STYLE}</style></head><body>
<h1>{e(name)}: {e(result['top_class'])} ({100 * result['probability']:.1f}%)</h1>
<div class=sub>{result['duration']:.2f} s, {result['num_frames']} frames at {result['fps']:g} fps,
{result['num_windows']} windows of {result['settings']['window']:g} s every {result['settings']['stride']:g} s;
checkpoint {e(Path(ck.get('path', '')).name)} (sha256 {e(str(ck.get('sha256', ''))[:12])})</div>
<video id=annotated controls preload=auto src="{video_src}"{poster_attr}></video>
<img class=timeline id=timeline alt="class probabilities over time" src="{_data_uri(timeline_png, 'image/png')}">
<h2>Clip distribution (mean over windows)</h2><table id=distribution>{dist}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Windows</h2>
<table id=windows><tr><th>start</th><th>end</th>{head}<th>top class</th><th>faces</th></tr>{rows}</table>
</body></html>
"""


def write_index_html(path: str | Path, result: dict[str, Any], classes: Sequence[str], timeline: Path,
                     video: Path) -> Path:
    """Write index.html next to timeline.png and annotated.mp4 (both embedded when small enough)."""
    size = video.stat().st_size
    src = _data_uri(video.read_bytes(), "video/mp4") if size <= EMBED_VIDEO_MAX_BYTES else html.escape(video.name)
    page = render_index_html(result, classes, Path(timeline).read_bytes(), src, poster_jpeg(video))
    return atomic_write_text(path, page)
