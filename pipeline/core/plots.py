"""Figures a person looks at: confusion matrix, training curves, a sweep's ours-vs-paper bars with error bars
(PNG, atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np

from pipeline.core.io import atomic_path

# Headless backend, imported with this module rather than at the first plot: a stage imports
# its plotting at start-up, so a signal (SLURM preemption, Ctrl-C) arriving mid-run can never
# interrupt matplotlib's C-extension initialisation and surface as a bogus ImportError.
matplotlib.use("Agg", force=False)
import matplotlib.backends.backend_agg  # noqa: E402,F401  (the renderer's C extensions, loaded now too)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402,F401


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write atomically as PNG, close; returns the path."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per cell, counts annotated) as a PNG."""
    counts = np.asarray(cm, dtype=np.int64)
    support = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, np.maximum(support, 1), dtype=np.float64)
    n = len(classes)
    size = max(4.0, 0.6 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, f"{counts[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss and test UAR/WAR (plus train accuracy) per epoch from metrics.jsonl records."""
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r.get("loss") for r in records], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    for key, label in (("test_uar", "test UAR"), ("test_war", "test WAR"), ("train_acc", "train acc")):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            ax_acc.plot(epochs, values, marker="o", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("%")
    ax_acc.set_ylim(0, 100)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _error_bar(row: Mapping[str, Any], metric: str) -> tuple[float, float]:
    """(below, above) the mean: its 95% interval when the row has one, else the std over seeds, else none."""
    mean = row["mean"].get(metric)
    interval = (row.get("ci") or {}).get(metric)
    if mean is not None and interval:
        return max(0.0, mean - interval[0]), max(0.0, interval[1] - mean)
    std = ((row.get("seed_spread") or {}).get(metric) or {}).get("std")
    return (std, std) if mean is not None and std is not None else (0.0, 0.0)


def plot_ours_vs_paper(report: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars per row: our UAR/WAR (solid, with error bars: the 95% bootstrap interval, else the std
    over seeds) next to the paper's (hatched)."""
    rows = report["rows"]
    x = np.arange(len(rows))
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2))
    series = [("ours UAR", "uar", lambda r: r["mean"]["uar"], "tab:blue", None),
              ("paper UAR", None, lambda r: r["paper"].get("uar"), "tab:blue", "//"),
              ("ours WAR", "war", lambda r: r["mean"]["war"], "tab:orange", None),
              ("paper WAR", None, lambda r: r["paper"].get("war"), "tab:orange", "//")]
    for i, (label, metric, get, color, hatch) in enumerate(series):
        values = [get(r) for r in rows]
        heights = [v if v is not None else 0.0 for v in values]
        errors = np.array([_error_bar(r, metric) for r in rows]).T if metric else None
        bars = ax.bar(x + (i - 1.5) * width, heights, width, label=label, color=color,
                      alpha=0.45 if hatch else 0.9, hatch=hatch, edgecolor=color, yerr=errors,
                      error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "black"})
        tops = [h + (errors[1][j] if errors is not None else 0.0) for j, h in enumerate(heights)]
        for bar, v, top in zip(bars, values, tops):
            ax.annotate("-" if v is None else f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, top),
                        ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, [r["label"] + ("\n(not run)" if not r["ran"] else "\n(missing folds)" if r["missing"] else "")
                      for r in rows], rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylabel("%  (error bars: 95% bootstrap interval over test clips)", fontsize=8)
    ax.set_ylim(0, 118)  # headroom above 100 % for the value labels and the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"{report['table']} ({report['dataset']}, {report['preset']}): ours vs paper ({report['paper_source']})",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
