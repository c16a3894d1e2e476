"""Benchmark: training clips/s and peak memory of one stage-2 train step (the trainer's own step).

CPU: the `tiny` preset, fp32, from raw inputs (frames + spectrogram through the frozen patch
embeddings, `model.forward`) and from cached patch embeddings (`model.forward_embedded`).
GPU (when available): the `paper` preset at S = 112/160/224, bf16 autocast vs fp32, raw vs
cached. Inputs are random tensors of the loader's shapes, so this measures the model step
(forward, backward, AdamW), not data loading. Prints a table and writes JSON; the ratio
columns compare each row with its fp32 / raw counterpart measured in the same run.

    python bench/train_step.py [--steps 10] [--warmup 3] [--out bench/results/train_step.json]
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import paper, tiny  # noqa: E402
from pipeline.core.io import atomic_write_json  # noqa: E402
from pipeline.engine.batches import autocast_dtype  # noqa: E402
from pipeline.engine.train import EmbeddedForward, build_optimizer, train_step  # noqa: E402


def _inputs(cfg: Any, batch: int, device: torch.device, net: torch.nn.Module, cached: bool) -> tuple[torch.Tensor, ...]:
    m = cfg.model
    frames = torch.rand(batch, m.num_frames, 3, m.image_size, m.image_size, device=device)
    spec = torch.randn(batch, 1, m.audio_frames, m.audio_mel_bins, device=device)
    labels = torch.randint(0, m.num_classes, (batch,), device=device)
    if cached:
        with torch.no_grad():
            vision, audio = net.embed(frames, spec)
        return vision.contiguous(), audio.contiguous(), labels
    return frames, spec, labels


def measure(cfg: Any, device: torch.device, precision: str, cached: bool, steps: int, warmup: int) -> dict[str, Any]:
    """clips/s and peak memory of `steps` train steps after `warmup` ones."""
    import model as mdl

    torch.manual_seed(0)
    net = mdl.build_model(cfg.model).to(device)
    net.train()
    opt, _ = build_optimizer(net, cfg)
    batch = cfg.train.batch_size
    x1, x2, labels = _inputs(cfg, batch, device, net, cached)
    step_net = EmbeddedForward(net) if cached else net
    amp = autocast_dtype(precision, device)
    for _ in range(warmup):
        train_step(step_net, opt, x1, x2, labels, device, amp)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(step_net, opt, x1, x2, labels, device, amp)
    float(loss)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seconds = time.perf_counter() - start
    del net, opt, x1, x2, labels
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"clips_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps, "peak_mem_mb": peak}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sizes", default="112,160,224", help="GPU image sizes (paper preset)")
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/train_step.json"), help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows: list[dict[str, Any]] = []
    cpu = torch.device("cpu")
    for cached in (False, True):
        cfg = tiny()
        cfg.model.num_classes = 7
        rows.append({"device": "cpu", "preset": "tiny", "S": cfg.model.image_size, "precision": "fp32",
                     "source": "cache" if cached else "raw",
                     **measure(cfg, cpu, "fp32", cached, args.steps, args.warmup)})
    if torch.cuda.is_available() and not args.cpu_only:
        gpu = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False
        for size in [int(s) for s in args.sizes.split(",")]:
            for precision in ("fp32", "bf16"):
                for cached in (False, True):
                    cfg = paper()
                    cfg.model.image_size = size
                    rows.append({"device": torch.cuda.get_device_name(gpu), "preset": "paper", "S": size,
                                 "precision": precision, "source": "cache" if cached else "raw",
                                 **measure(cfg, gpu, precision, cached, args.steps, args.warmup)})
    # ratios against the matching baseline row of this run
    def find(**kw: Any) -> dict[str, Any] | None:
        return next((r for r in rows if all(r[k] == v for k, v in kw.items())), None)

    for r in rows:
        raw = find(device=r["device"], preset=r["preset"], S=r["S"], precision=r["precision"], source="raw")
        fp32 = find(device=r["device"], preset=r["preset"], S=r["S"], precision="fp32", source=r["source"])
        r["x_vs_raw"] = r["clips_per_s"] / raw["clips_per_s"] if raw else None
        r["x_vs_fp32"] = r["clips_per_s"] / fp32["clips_per_s"] if fp32 else None

    header = f"{'device':<24} {'preset':<6} {'S':>4} {'prec':<5} {'source':<6} {'clips/s':>9} {'ms/step':>9} " \
             f"{'peak MB':>9} {'x raw':>6} {'x fp32':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['device'][:24]:<24} {r['preset']:<6} {r['S']:>4} {r['precision']:<5} {r['source']:<6} "
              f"{r['clips_per_s']:>9.2f} {r['step_ms']:>9.1f} {r['peak_mem_mb']:>9.0f} "
              f"{r['x_vs_raw']:>6.2f} {r['x_vs_fp32']:>6.2f}")
    meta = {"torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "batch_size": 8, "steps": args.steps, "warmup": args.warmup,
            "note": "peak_mem_mb: CUDA max allocated on GPU; process peak RSS so far on CPU (monotone)"}
    atomic_write_json(args.json, {"meta": meta, "rows": rows})
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
