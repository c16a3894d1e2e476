"""timeline.png of `mma predict --out`: class probabilities over time, the waveform, the faces the model saw.

Three rows sharing one time axis: stacked class probabilities of every window (plotted at the
window centres; one colour per class, legend on the right) with a band on top coloured by each
window's top class and the clip's top class in the title; the audio waveform (min/max envelope);
a strip of the face crops at the window centres (at most `MAX_STRIP_FACES`, evenly chosen).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.core.plots import plt, save_figure
from pipeline.prep.video import decode_clip

MAX_STRIP_FACES = 24
ENVELOPE_BINS = 2000


def class_colours(n: int) -> list[Any]:
    """One distinct colour per class (tab10 up to 10 classes, tab20 beyond)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def waveform_envelope(video: Path, duration: float, bins: int = ENVELOPE_BINS) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, (2, bins) min/max) of the video's mono audio over [0, duration], or None without audio."""
    decoded = decode_clip(video, video=False)
    if decoded.audio is None or decoded.audio.shape[-1] == 0 or not decoded.sample_rate:
        return None
    mono = decoded.audio.mean(axis=0)
    mono = mono[: int(round(duration * decoded.sample_rate))] if duration > 0 else mono
    n = max(1, min(bins, len(mono)))
    chunks = np.array_split(mono, n)
    env = np.array([[c.min(), c.max()] for c in chunks], np.float32).T
    times = (np.cumsum([len(c) for c in chunks]) - np.array([len(c) for c in chunks]) / 2) / decoded.sample_rate
    return times, env


def _face(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def plot_timeline(path: str | Path, analysis: Any, classes: Sequence[str]) -> Path:
    """Write the timeline PNG of one analysed video (`pipeline.results.predict.VideoAnalysis`)."""
    probs, spans, duration = analysis.probs, analysis.spans, analysis.duration
    colours = class_colours(len(classes))
    centres = np.array([s.centre for s in spans])
    # extend to the clip's ends so the areas cover the whole duration
    xs = np.concatenate([[0.0], centres, [duration]])
    ys = np.concatenate([probs[:1], probs, probs[-1:]]).T
    n_faces = min(len(spans), MAX_STRIP_FACES)
    fig = plt.figure(figsize=(13, 6.2))
    grid = fig.add_gridspec(3, 2, height_ratios=[3.2, 1.1, 1.3], width_ratios=[6.0, 1.0])
    ax = fig.add_subplot(grid[0, 0])
    ax.stackplot(xs, ys, colors=colours, labels=list(classes), alpha=0.9, linewidth=0)
    top = probs.argmax(axis=1)
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])
    for i, k in enumerate(top):  # top-class band above the areas: each window's share of the time axis
        ax.axvspan(edges[i], edges[i + 1], ymin=1.0 / 1.08, ymax=1.0, color=colours[k], linewidth=0)
    for i in [0] + [i for i in range(1, len(top)) if top[i] != top[i - 1]]:
        ax.text(edges[i] + 0.005 * duration, 1.04, classes[top[i]], fontsize=8, va="center", ha="left",
                clip_on=True)
    mean = probs.mean(axis=0)
    best = int(mean.argmax())
    ax.set_title(f"{analysis.video.name}: top class {classes[best]} ({100 * mean[best]:.0f}% mean over "
                 f"{len(spans)} windows)", fontsize=11)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("probability")
    ax.tick_params(labelbottom=False)
    handles, labels = ax.get_legend_handles_labels()
    labels = [f"{c}  {100 * m:.0f}%" + ("  (top)" if i == best else "") for i, (c, m) in enumerate(zip(classes, mean))]
    legend_ax = fig.add_subplot(grid[0, 1])
    legend_ax.axis("off")
    legend_ax.legend(handles, labels, loc="upper left", fontsize=9, frameon=False, borderaxespad=0.0)

    axw = fig.add_subplot(grid[1, 0], sharex=ax)
    env = waveform_envelope(analysis.video, duration)
    if env is None:
        axw.text(0.5, 0.5, "no audio track: silence used", transform=axw.transAxes, ha="center", va="center")
    else:
        times, (lo, hi) = env
        axw.fill_between(times, lo, hi, color="#333333", linewidth=0)
        peak = float(max(abs(lo.min()), abs(hi.max()), 1e-6))
        axw.set_ylim(-peak, peak)
    axw.set_yticks([])
    axw.set_ylabel("audio")
    axw.tick_params(labelbottom=False)

    axf = fig.add_subplot(grid[2, 0], sharex=ax)
    chosen = np.unique(np.linspace(0, len(spans) - 1, n_faces).round().astype(int))
    half = duration / max(len(chosen), 1) / 2
    for i in chosen:
        c = spans[i].centre
        axf.imshow(_face(analysis.sample["frames"][spans[i].centre_frame]),
                   extent=(c - half * 0.95, c + half * 0.95, 0, 1), aspect="auto")
        axf.add_patch(plt.Rectangle((c - half * 0.95, 0), 1.9 * half, 0.06, color=colours[top[i]], linewidth=0))
    axf.set_xlim(0, duration)
    axf.set_ylim(0, 1)
    axf.set_yticks([])
    axf.set_ylabel("faces")
    axf.set_xlabel("time (s)")
    return save_figure(fig, path, dpi=100)
