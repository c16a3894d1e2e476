"""Benchmark: the training step `mma train` runs per batch, timed on synthetic batches, with MFU.

Each row builds the network, the fused AdamW and the training module exactly as `mma train` does
(`pipeline.engine.step`: TF32 on Ampere+, autocast, `torch.compile` when asked, activation
checkpointing when asked) and times `StepLoop.step` — the trainer's own per-batch function: pinned
host batch (uint8 frames, fbank, labels, as the loader yields them) copied `non_blocking`, forward,
fp32 cross-entropy, backward, AdamW — over `--steps` steps after `--warmup` ones (the first step,
compilation included, is reported as `first_step_s`). MFU = counted training FLOPs per clip
(`pipeline.engine.flops`) x clips/s / the device's dense peak for the row's arithmetic (bf16, or
TF32 for fp32 on Ampere+); CPU rows say "CPU" and have no MFU.

GPU (default there): the `paper` preset at S=160, bf16 and fp32, compile off and on, batch 8, 32 and
the largest that fits (found by doubling, then bisection, per precision, compile off). CPU (default
without a GPU): the `tiny` preset, fp32, eager, batch 2 and 4. `fold_min` projects the model step
alone over one DFEW fold (9,358 training clips x 25 epochs). The ratio column compares each row with
the first row of the run (fp32 eager at batch 8 on a GPU: the authors' setting). Prints a table,
writes JSON.

    python bench/train_step.py                                  # the full grid on the GPU there is
    python bench/train_step.py --precisions bf16 --compile off,on --batches 8,32,max
    python bench/train_step.py --device cpu --steps 2 --warmup 1 # tiny, on CPU
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model as mdl  # noqa: E402
from pipeline.core.config import RunConfig, preset  # noqa: E402
from pipeline.core.io import atomic_write_json  # noqa: E402
from pipeline.engine.batches import autocast_dtype, configure_math  # noqa: E402
from pipeline.engine.distributed import DistInfo  # noqa: E402
from pipeline.engine.flops import count_flops, device_peak, mfu  # noqa: E402
from pipeline.engine.step import StepLoop, build_optimizer, training_module  # noqa: E402
from pipeline.engine.train import peak_memory_mb  # noqa: E402

DFEW_FOLD_CLIP_STEPS = 9358 * 25  # training clips of a DFEW fold (4/5 of 11,697) x the paper's 25 epochs


def _config(preset_name: str, image_size: int | None, precision: str, compiled: bool, checkpointing: bool,
            batch: int, source: str) -> RunConfig:
    cfg = preset(preset_name)
    cfg.data.compat = "mma"
    if image_size:
        cfg.model.image_size = image_size
    cfg.model.num_classes = 7
    cfg.train.precision, cfg.train.compile, cfg.train.checkpointing = precision, compiled, checkpointing
    cfg.train.batch_size, cfg.train.source = batch, source
    return cfg.validate()


def _batch(cfg: RunConfig, net: torch.nn.Module, device: torch.device, source: str) -> tuple[Any, ...]:
    """One loader-shaped batch in pinned host memory (the cache source: the frozen tokens, fp16)."""
    m, n = cfg.model, cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (n, m.num_frames, 3, m.image_size, m.image_size), dtype=torch.uint8, generator=g)
    spec = torch.randn(n, 1, m.audio_frames, m.audio_mel_bins, generator=g)
    labels = torch.randint(0, m.num_classes, (n,), generator=g)
    if source == "cache":
        with torch.no_grad():
            vt, at = net.embed(frames.to(device).float().div_(255), spec.to(device))
        frames, spec = vt.half().cpu(), at.half().cpu()
    if device.type == "cuda":
        frames, spec, labels = frames.pin_memory(), spec.pin_memory(), labels.pin_memory()
    return frames, spec, labels, [str(i) for i in range(n)]


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def measure(cfg: RunConfig, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    """clips/s, ms/step, peak memory and the first step's seconds of `steps` timed `StepLoop` steps."""
    torch.manual_seed(0)
    net = mdl.build_model(cfg.model).to(device)
    net.train()
    opt, _ = build_optimizer(net, cfg)
    module = training_module(net, cfg, DistInfo(0, 1, 0, device))
    batch = _batch(cfg, net, device, cfg.train.source)
    loop = StepLoop(module.module, opt, device=device, amp=autocast_dtype(cfg.train.precision, device, "mma"),
                    source=cfg.train.source, pad_to=cfg.train.batch_size if module.compiled else None)
    start = time.perf_counter()
    loop.step(batch)
    loop.finish()  # waits for the device
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        loop.step(batch)
    loop.finish()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loop.step(batch)
    loop.finish()
    seconds = time.perf_counter() - start
    return {"clips_per_s": steps * cfg.train.batch_size / seconds, "step_ms": 1000 * seconds / steps,
            "peak_mem_mb": peak_memory_mb(device), "first_step_s": first, "oom": False}


def measure_or_oom(cfg: RunConfig, device: torch.device, steps: int, warmup: int) -> dict[str, Any] | None:
    """`measure`, or None when the device ran out of memory; the device's memory is released either way."""
    result = None
    try:
        result = measure(cfg, device, steps, warmup)
    except torch.cuda.OutOfMemoryError:
        pass  # the exception (and the frames it holds) is gone after this block
    except RuntimeError as exc:  # cuBLAS / cuDNN report a failed allocation as a RuntimeError
        if not any(m in str(exc) for m in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")):
            raise
    _release(device)
    return result


def fits(cfg: RunConfig, device: torch.device) -> bool:
    """Whether two steps at cfg's batch run without running out of device memory."""
    return measure_or_oom(cfg, device, steps=1, warmup=1) is not None


def largest_batch(make: Any, device: torch.device, start: int, limit: int, granularity: int = 8) -> int:
    """The largest batch (a multiple of `granularity`, at most `limit`) for which `make(batch)` fits:
    doubling from `start`, then bisection."""
    good, bad = 0, None
    b = start
    while b <= limit:
        if fits(make(b), device):
            good, b = b, b * 2
        else:
            bad = b
            break
    if bad is None:
        return good
    while bad - good > granularity:
        mid = (good + bad) // 2 // granularity * granularity
        if mid <= good:
            break
        if fits(make(mid), device):
            good = mid
        else:
            bad = mid
    return good


def _row(cfg: RunConfig, preset_name: str, device: torch.device, flops: dict[str, int], steps: int, warmup: int,
         batch_label: str) -> dict[str, Any]:
    peak = device_peak(device, cfg.train.precision)
    row: dict[str, Any] = {"device": peak["name"], "math": peak["math"], "peak_tflops": peak["peak_tflops"],
                           "preset": preset_name, "S": cfg.model.image_size, "source": cfg.train.source,
                           "precision": cfg.train.precision, "compile": cfg.train.compile,
                           "checkpointing": cfg.train.checkpointing, "batch": cfg.train.batch_size,
                           "batch_label": batch_label}
    measured = measure_or_oom(cfg, device, steps, warmup)
    row.update(measured or {"clips_per_s": None, "step_ms": None, "peak_mem_mb": None, "first_step_s": None,
                            "oom": True})
    cps = row["clips_per_s"]
    row["achieved_tflops"] = flops["flops_train_per_clip"] * cps / 1e12 if cps else None
    row["mfu"] = mfu(flops["flops_train_per_clip"], cps, peak["peak_tflops"]) if cps else None
    row["fold_min"] = DFEW_FOLD_CLIP_STEPS / cps / 60 if cps else None
    return row


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'device':<22} {'S':>4} {'source':<6} {'prec':<5} {'math':<5} {'comp':<4} {'ckpt':<4} {'batch':>9} {'clips/s':>9} "
              f"{'ms/step':>9} {'peak MB':>9} {'1st s':>7} {'TFLOP/s':>8} {'MFU':>6} {'fold min':>8} {'x base':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        batch = f"{r['batch']}" + ("(max)" if r["batch_label"] == "max" else "")
        print(f"{r['device'][:22]:<22} {r['S']:>4} {r['source']:<6} {r['precision']:<5} {r['math']:<5} "
              f"{'on' if r['compile'] else 'off':<4} {'on' if r['checkpointing'] else 'off':<4} {batch:>9} "
              f"{'OOM' if r['oom'] else _fmt(r['clips_per_s'], '.2f'):>9} {_fmt(r['step_ms'], '.1f'):>9} "
              f"{_fmt(r['peak_mem_mb'], '.0f'):>9} {_fmt(r['first_step_s'], '.1f'):>7} "
              f"{_fmt(r['achieved_tflops'], '.1f'):>8} {_fmt(r['mfu'] and 100 * r['mfu'], '.1f'):>6} "
              f"{_fmt(r['fold_min'], '.1f'):>8} {_fmt(r['x_base'], '.2f'):>6}")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--preset", default=None, help="paper (GPU default) | tiny (CPU default)")
    ap.add_argument("--image-size", type=int, default=None, help="S (default: the preset's, 160 for paper)")
    ap.add_argument("--precisions", default=None, help="comma list of bf16,fp32 (GPU default both; CPU fp32)")
    ap.add_argument("--compile", default=None, help="comma list of off,on (GPU default both; CPU off)")
    ap.add_argument("--checkpointing", default="off", help="comma list of off,on (activation checkpointing)")
    ap.add_argument("--batches", default=None, help="comma list of sizes and/or 'max' (GPU default 8,32,max; CPU 2,4)")
    ap.add_argument("--max-limit", type=int, default=1024, help="largest batch the 'max' search tries")
    ap.add_argument("--sources", default="raw", help="comma list of raw (frames + fbank), cache (stage-1 tokens)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/train_step.json"), help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    preset_name = args.preset or ("paper" if gpu else "tiny")
    precisions = _csv(args.precisions or ("fp32,bf16" if gpu else "fp32"))
    compiles = [c == "on" for c in _csv(args.compile or ("off,on" if gpu else "off"))]
    ckpts = [c == "on" for c in _csv(args.checkpointing)]
    batches = _csv(args.batches or ("8,32,max" if gpu else "2,4"))
    sources = ["cache" if s == "cache" else "shards" for s in _csv(args.sources)]
    tf32 = configure_math(device)

    flops = count_flops(_config(preset_name, args.image_size, "fp32", False, False, 1, "shards").model)
    rows: list[dict[str, Any]] = []
    for source in sources:
        for precision in precisions:
            for ckpt in ckpts:
                sizes: list[tuple[int, str]] = [(int(b), b) for b in batches if b != "max"]
                if "max" in batches:
                    if not gpu:
                        raise SystemExit("--batches max needs a GPU (it searches the largest batch that fits)")
                    found = largest_batch(lambda b: _config(preset_name, args.image_size, precision, False, ckpt, b,
                                                            source), device, start=32, limit=args.max_limit)
                    sizes.append((found, "max"))
                for compiled in compiles:
                    for size, label in sizes:
                        if size < 1:
                            continue
                        cfg = _config(preset_name, args.image_size, precision, compiled, ckpt, size, source)
                        rows.append(_row(cfg, preset_name, device, flops, args.steps, args.warmup, label))
                        print(f"  measured {precision} compile={'on' if compiled else 'off'} batch {size}: "
                              f"{_fmt(rows[-1]['clips_per_s'], '.2f')} clips/s", flush=True)
    base = next((r for r in rows if r["clips_per_s"]), None)
    for r in rows:
        r["x_base"] = r["clips_per_s"] / base["clips_per_s"] if base and r["clips_per_s"] else None
    print_table(rows)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "device": str(device), "tf32": tf32, "steps": args.steps, "warmup": args.warmup, **flops,
            "baseline": "the first measured row", "fold_clip_steps": DFEW_FOLD_CLIP_STEPS,
            "note": "peak_mem_mb: CUDA max allocated on GPU; process peak RSS so far on CPU (monotone)"}
    atomic_write_json(args.json, {"meta": meta, "rows": rows})
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
