"""Benchmark of `mma prep`: clips/s with 1 vs 2 Dask workers, MTCNN batched vs one frame per call.

Both measurements run in the same process on the same synthetic dataset, so their ratios are
meaningful on any machine. Prints a table and, with --json FILE, writes the numbers.

    python bench/prep.py [--clips-per-class 4] [--classes 4] [--seconds 1.6] [--workers 1,2]
                         [--mtcnn-clips 4] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bench_workers(root: Path, scratch: Path, worker_counts: list[int], crop_size: int) -> list[dict]:
    """Full prep runs on a LocalCluster per worker count (fresh workspace each, cluster start-up included)."""
    from pipeline.core.config import DataConfig
    from pipeline.core.paths import Workspace
    from pipeline.prep.run import run_prep

    rows = []
    for n in worker_counts:
        ws = Workspace(scratch / f"work-{n}", scratch / f"manifests-{n}")
        cfg = DataConfig(crop_size=crop_size)
        start = time.perf_counter()
        summary = run_prep("synth", root, ws, cfg, workers=n, threads_per_worker=1, cluster="local").summary
        wall = time.perf_counter() - start
        rows.append({"workers": n, "clips": summary["processed"], "clips_ok": summary["clips_ok"],
                     "seconds": round(wall, 2), "clips_per_s": round(summary["processed"] / wall, 3)})
    base = rows[0]["clips_per_s"]
    for r in rows:
        r["speedup"] = round(r["clips_per_s"] / base, 2) if base else None
    return rows


def bench_mtcnn(root: Path, n_clips: int, device: str, repeats: int = 3) -> dict:
    """frames/s of MTCNN over the frames of `n_clips` clips: one batched call per clip vs a call per frame."""
    import numpy as np

    from pipeline.prep.faces import detect_faces, detect_faces_per_frame
    from pipeline.prep.video import decode_clip

    videos = sorted((root / "data" / "clips").glob("*.mp4"))
    clips = []
    for v in videos:
        try:
            clips.append(decode_clip(v, audio=False).frames)
        except Exception:  # faulty clips are not part of this measurement
            continue
        if len(clips) == n_clips:
            break
    frames = sum(len(c) for c in clips)
    detect_faces(clips[0][:2], device=device)  # warm-up: weights, allocator, kernels

    def run(fn) -> float:
        start = time.perf_counter()
        for c in clips:
            fn(c, device=device)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter() - start

    # interleaved repeats, best of each: a shared machine's load hits both modes alike
    per_frame, batched = float("inf"), float("inf")
    for _ in range(repeats):
        per_frame = min(per_frame, run(detect_faces_per_frame))
        batched = min(batched, run(detect_faces))
    # the two modes must find the same faces: share of frames with equal count and boxes within 1 px
    agree = total = 0
    for c in clips:
        for a, b in zip(detect_faces(c, device=device).boxes, detect_faces_per_frame(c, device=device).boxes):
            total += 1
            agree += int(a.shape == b.shape and np.allclose(a, b, atol=1.0))
    return {"device": device, "clips": len(clips), "frames": frames,
            "per_frame_fps": round(frames / per_frame, 1), "batched_fps": round(frames / batched, 1),
            "batched_over_per_frame": round(per_frame / batched, 2),
            "same_boxes_share": round(agree / max(total, 1), 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="An existing `mma synth` dataset (default: make one).")
    parser.add_argument("--clips-per-class", type=int, default=4)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.6)
    parser.add_argument("--workers", default="1,2", help="Comma-separated Dask worker counts.")
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--mtcnn-clips", type=int, default=4)
    parser.add_argument("--device", default=None, help="MTCNN device (default: cuda if available).")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the MTCNN comparison (prep workers use --threads-per-worker=1).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from rich.console import Console
    from rich.table import Table

    from pipeline.core.io import atomic_write_json
    from pipeline.data.synth import make_synth_dataset
    from pipeline.prep.faces import default_device

    device = args.device or default_device()
    with tempfile.TemporaryDirectory(prefix="mma-bench-prep-") as tmp:
        scratch = Path(tmp)
        root = args.root
        if root is None:
            root = scratch / "synth"
            make_synth_dataset(root, clips_per_class=args.clips_per_class, seconds=args.seconds, classes=args.classes)
        workers = bench_workers(root, scratch, [int(w) for w in args.workers.split(",")], args.crop_size)
        import torch

        torch.set_num_threads(args.threads)
        mtcnn = bench_mtcnn(root, args.mtcnn_clips, device)
        mtcnn["threads"] = args.threads

    import os

    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "dataset": {"clips_per_class": args.clips_per_class, "classes": args.classes, "seconds": args.seconds,
                    "crop_size": args.crop_size},
        "workers": workers,
        "mtcnn": mtcnn,
    }
    console = Console()
    t1 = Table(title="prep throughput by Dask workers (LocalCluster, start-up included)")
    for col in ("workers", "clips", "seconds", "clips/s", "speed-up"):
        t1.add_column(col, justify="right")
    for r in workers:
        t1.add_row(str(r["workers"]), str(r["clips"]), f"{r['seconds']:.1f}", f"{r['clips_per_s']:.2f}", f"{r['speedup']:.2f}x")
    console.print(t1)
    t2 = Table(title=f"MTCNN on {mtcnn['frames']} frames of {mtcnn['clips']} clips "
                     f"({mtcnn['device']}, {mtcnn['threads']} thread(s))")
    for col in ("mode", "frames/s", "ratio"):
        t2.add_column(col, justify="right")
    t2.add_row("one frame per call (authors)", f"{mtcnn['per_frame_fps']:.1f}", "1.00x")
    t2.add_row("batched over the clip", f"{mtcnn['batched_fps']:.1f}", f"{mtcnn['batched_over_per_frame']:.2f}x")
    console.print(t2)
    console.print(f"frames where both modes give the same boxes: {100 * mtcnn['same_boxes_share']:.1f}%")
    if args.json:
        atomic_write_json(args.json, result)
        console.print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
