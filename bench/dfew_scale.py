"""Benchmark of the data side at DFEW's size: does the per-clip cost stay flat from 1,000 to 11,697 clips?

One run builds two datasets with DFEW's fold structure (the clip ids, labels and test folds of the
published split, `data_manifests/dfew/splits.csv`): all 11,697 clips, and a 1,000-clip subset with
the same fold proportions (the baseline). Each is a DFEW root (official split CSVs, one tiny real
mp4 hard-linked under every clip's name) plus tiny prepped clip folders written directly in
prep's output format (a few small face JPEGs, a short fbank, meta.json; no decoding, no MTCNN).
On each, timed with the functions the commands run:

  manifest        `build_manifest` (what `mma prep` does first: split files -> clips.csv)
  prep space      `mma prep`'s disk estimate over every clip (`pipeline.prep.estimate`)
  check           `mma check dfew` (`check_dataset`: every video opened with PyAV, published split)
  shard           `mma shard dfew` (`run_shard --force`: tars, byte ranges, index.json)
  loader start    the fold-1 training loader (`build_loader`, 2 workers) up to its first batch
  report          `mma report dfew` over 5 finished folds (predictions.csv of every test clip, the
                  bootstrap's 1000 resamples)
  sweep status    `mma sweep status` of a 15-row x 5-fold sweep (75 jobs: done, interrupted, queued)

Per step: best of --rounds (rounds, steps and the two sizes interleaved, so a shared machine's
drifting load weighs on both), microseconds per clip, and the ratio of the full run's per-clip wall
time to the baseline's (goal <= 1.2: nothing grows faster than the dataset), with the same ratio
of this process's CPU time beside it (steady under other load; blind to loader worker processes). Steps whose cost does not
depend on the clips (report, sweep status) show ratios far below 1.

    python bench/dfew_scale.py [--clips 11697] [--baseline 1000] [--frames 3] [--size 32] [--rounds 2]
                               [--workers 2] [--scratch DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

GOAL = 1.2
DFEW_CLIPS = 11_697
SWEEP_ROWS = 15
STEPS = ("manifest", "prep space", "check", "shard", "loader start", "report", "sweep status")


# --------------------------------------------------------------------------- the synthetic DFEW


def select_clips(n: int) -> list[Any]:
    """n published DFEW clips with the published fold proportions (each fold's first clips by id)."""
    from pipeline.core.folds import FOLDS
    from pipeline.data.published import read_published_split

    published = sorted(read_published_split("dfew").values(), key=lambda c: c.clip_id)
    if not 1 <= n <= len(published):
        raise SystemExit(f"--clips/--baseline {n}: DFEW has 1..{len(published)} clips")
    by_fold = {fold: [c for c in published if c.test_fold == fold] for fold in FOLDS}
    share = {fold: n * len(members) / len(published) for fold, members in by_fold.items()}
    take = {fold: int(share[fold]) for fold in FOLDS}
    for fold in sorted(FOLDS, key=lambda f: share[f] - take[f], reverse=True)[: n - sum(take.values())]:
        take[fold] += 1  # largest remainders: exactly n clips
    return sorted((c for fold in FOLDS for c in by_fold[fold][: take[fold]]), key=lambda c: c.clip_id)


def _tiny_video(path: Path) -> None:
    """One real mp4 (4 frames of 32 x 32, no audio), the file every clip name links to."""
    from pipeline.data.synth import encode_mp4

    frames = np.zeros((4, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = 200
    encode_mp4(frames, None, path, path.parent)


def make_dfew_root(root: Path, clips: list[Any], video: Path) -> None:
    """DFEW's layout: EmoLabel_DataSplit/{train,test}(single-labeled)/set_k.csv and Clip/original/<n>.mp4."""
    from pipeline.core.folds import FOLDS
    from pipeline.core.io import atomic_write_text

    originals = root / "Clip" / "original"
    originals.mkdir(parents=True)
    for c in clips:
        os.link(video, originals / f"{int(c.clip_id)}.mp4")
    for fold in FOLDS:
        for part, members in (("test", [c for c in clips if c.test_fold == fold]),
                              ("train", [c for c in clips if c.test_fold != fold])):
            lines = ["video_name,label"] + [f"{int(c.clip_id)},{c.label + 1}" for c in members]
            atomic_write_text(root / "EmoLabel_DataSplit" / f"{part}(single-labeled)" / f"set_{fold}.csv",
                              "\n".join(lines) + "\n")


def write_prepped(ws: Any, rows: list[dict[str, Any]], frames: int, size: int) -> None:
    """Every manifest row as a finished prep clip folder (frames/*.jpg, fbank.npy, meta.json) + prep_config.json,
    and the manifest enriched as `mma prep` leaves it (num_frames, prep_status ok)."""
    from PIL import Image

    from pipeline.core.config import DataConfig
    from pipeline.core.io import atomic_write_json
    from pipeline.data.manifest import read_classes, write_manifest
    from pipeline.prep.clip import frame_name, prep_settings, settings_hash

    data_cfg = DataConfig(crop_size=size, faces="official").resolved()
    digest = settings_hash(data_cfg)
    jpegs = []
    for i in range(frames):
        buf = io.BytesIO()
        img = np.full((size, size, 3), 40 + 50 * i, np.uint8)
        img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 220
        Image.fromarray(img).save(buf, format="JPEG", quality=data_cfg.jpeg_quality)
        jpegs.append(buf.getvalue())
    fbank_rows = int(frames / 25 * 100)
    fbank = io.BytesIO()
    np.save(fbank, np.random.default_rng(0).standard_normal((fbank_rows, 128)).astype(np.float16))
    clips_dir = ws.prep_dir("dfew") / "clips"
    for r in rows:
        folder = clips_dir / r["clip_id"]
        (folder / "frames").mkdir(parents=True)
        for i, data in enumerate(jpegs):
            (folder / "frames" / frame_name(i)).write_bytes(data)
        (folder / "fbank.npy").write_bytes(fbank.getvalue())
        meta = {"clip_id": r["clip_id"], "label": r["label"], "num_frames": frames, "fps": 25.0,
                "crop_size": size, "has_audio": True, "sample_rate": 16000, "audio_seconds": fbank_rows / 100,
                "fbank_frames": fbank_rows, "face_source": "official", "faces_found": [1] * frames,
                "no_face_frames": 0, "warnings": [], "config_hash": digest}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        r.update(num_frames=frames, fps=25.0, has_audio=True, audio_seconds=fbank_rows / 100, prep_status="ok")
    atomic_write_json(ws.prep_dir("dfew") / "prep_config.json",
                      {"hash": digest, "settings": prep_settings(data_cfg), "dataset": "dfew"})
    write_manifest(ws, "dfew", rows, read_classes(ws, "dfew"))


def bench_config(workers: int) -> Any:
    """The `tiny` preset on dfew (7 classes), fold 1."""
    from pipeline.core.config import tiny
    from pipeline.data.datasets import DFEW_CLASSES

    cfg = tiny()
    cfg.dataset, cfg.fold = "dfew", 1
    cfg.model.num_classes = len(DFEW_CLASSES)
    cfg.data.num_workers = workers
    return cfg


def write_runs(ws: Any, cfg: Any, tests: dict[int, list[Any]]) -> None:
    """5 finished folds of one run, as `mma train` leaves them (`write_fold_run`)."""
    from pipeline.core.folds import FOLDS
    from pipeline.engine.provenance import run_provenance

    prov = run_provenance(cfg, ws, torch.nn.Module(), torch.device("cpu"))
    for k in FOLDS:
        write_fold_run(ws.run_dir("dfew", "default", k), cfg, k, tests[k], prov)


def write_fold_run(run_dir: Path, cfg: Any, fold: int, test: list[Any], prov: dict[str, Any]) -> None:
    """A finished fold: predictions.csv (one line per test clip, 7 logits, 1- and 2-clip predictions),
    result.json with the metrics those predictions give and the data's provenance, config.json."""
    import copy

    from pipeline.core.config import save_resolved_config
    from pipeline.core.io import atomic_write_json, atomic_write_text
    from pipeline.data.datasets import DFEW_CLASSES
    from pipeline.engine.evaluate import summary_fields
    from pipeline.engine.metrics import classification_metrics

    classes = list(DFEW_CLASSES)
    rng = np.random.default_rng(fold)
    labels = np.array([c.label for c in test])
    logits = rng.normal(size=(len(test), len(classes)))
    logits[np.arange(len(test)), labels] += 2.0
    pred = logits.argmax(1)
    pred2 = (logits + rng.normal(scale=0.5, size=logits.shape)).argmax(1)
    head = ["clip_id", "label", "label_name", "pred", "pred_name", "pred_2clip", "pred_2clip_name",
            *[f"logit_{c}" for c in classes]]
    lines = [",".join(head)] + [
        f"{c.clip_id},{y},{classes[y]},{p},{classes[p]},{q},{classes[q]}," + ",".join(f"{v:.6g}" for v in row)
        for c, y, p, q, row in zip(test, labels, pred, pred2, logits)]
    atomic_write_text(run_dir / "predictions.csv", "\n".join(lines) + "\n")
    m1 = classification_metrics(labels.tolist(), pred.tolist(), len(classes))
    m2 = classification_metrics(labels.tolist(), pred2.tolist(), len(classes))
    result = {"uar": m1["uar"], "war": m1["war"], "per_class_recall": m1["per_class_recall"],
              "confusion": m1["confusion"], "uar_2clip": m2["uar"], "war_2clip": m2["war"],
              "per_class_recall_2clip": m2["per_class_recall"], "confusion_2clip": m2["confusion"],
              "clips": len(test), "clips_expected": len(test), "clips_evaluated": len(test), "clips_missing": [],
              "partial": False}
    atomic_write_json(run_dir / "result.json", {
        **summary_fields(result, classes), "fold": fold, "epochs": cfg.train.epochs, "dataset": "dfew",
        "name": cfg.name, "image_size": cfg.model.image_size, "run_dir": str(run_dir), "source": "shards",
        "cache_views": None, "train_samples_skipped": 0, "provenance": prov})
    saved = copy.deepcopy(cfg)
    saved.fold = fold
    save_resolved_config(saved, run_dir / "config.json")


def write_sweep(ws: Any, cfg: Any, tests: dict[int, list[Any]]) -> str:
    """A 15-row x 5-fold sweep's jobs.json: 60 jobs done (result.json), 10 interrupted (a job id, no result),
    5 queued (no job id yet)."""
    from pipeline.core.folds import FOLDS
    from pipeline.engine.provenance import run_provenance
    from pipeline.experiments.presets import Experiment, Row, expand
    from pipeline.experiments.state import entry_for, sweep_dir, write_state

    rows = tuple(Row(f"d{16 + 16 * i}", f"latent {16 + 16 * i}", {"model.latent_dim": 16 + 16 * i}, {})
                 for i in range(SWEEP_ROWS))
    experiment = Experiment("scale", "bench", "15 rows", rows, FOLDS, "bench")
    jobs = expand(experiment, cfg, ws, preset_name="tiny")
    prov = run_provenance(cfg, ws, torch.nn.Module(), torch.device("cpu"))
    state: dict[str, Any] = {"sweep": "scale-tiny", "experiment": "scale", "preset": "tiny", "dataset": "dfew",
                             "executor": "local", "jobs": {}}
    for n, job in enumerate(jobs):
        entry = entry_for(job, "local")
        if n < 60:
            write_fold_run(job.run_dir, job.config, job.fold, tests[job.fold], prov)
            entry.update(state="done", job_id=str(900_000 + n))
        elif n < 70:
            entry.update(state="running", job_id=str(900_000 + n))  # no such process: interrupted
        state["jobs"][job.key] = entry
    write_state(sweep_dir(ws, "dfew", "scale-tiny"), state)
    return "scale-tiny"


# --------------------------------------------------------------------------- timing


def _first_batch(cfg: Any, ws: Any) -> None:
    from pipeline.store.stream import build_loader

    loader = build_loader(cfg, ws, "train")
    it = iter(loader)
    next(it)
    del it, loader


def prepare(n: int, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the n-clip dataset under scratch (root, prep output, shards, 5 finished folds, a sweep) and
    return its steps as callables, ready to be timed."""
    from pipeline.core.disk import block_bytes
    from pipeline.core.paths import Workspace
    from pipeline.data.check import check_dataset
    from pipeline.data.manifest import build_manifest
    from pipeline.experiments.state import sweep_status
    from pipeline.prep.estimate import estimate_prep_bytes
    from pipeline.results.report import make_report
    from pipeline.store.shard import run_shard

    clips = select_clips(n)
    root = scratch / "DFEW"
    ws = Workspace(scratch / "work", scratch / "manifests")
    build = time.perf_counter()
    scratch.mkdir(parents=True, exist_ok=True)
    _tiny_video(scratch / "tiny.mp4")
    make_dfew_root(root, clips, scratch / "tiny.mp4")
    rows, _ = build_manifest("dfew", root, ws)
    write_prepped(ws, rows, args.frames, args.size)
    cfg = bench_config(args.workers)
    tests = {k: [c for c in clips if c.test_fold == k] for k in range(1, 6)}
    data_cfg = cfg.data.resolved("dfew")
    check = check_dataset("dfew", root, ws)
    assert not any(v["count"] for v in check.record["problems"].values()), check.summary
    run_shard("dfew", ws, data_cfg)
    write_runs(ws, cfg, tests)
    sid = write_sweep(ws, cfg, tests)
    assert len(sweep_status(ws, "dfew", sid)) == SWEEP_ROWS * 5
    report = make_report("dfew", ws, runs_dir=ws.runs_dir("dfew") / "default")
    assert report.complete and not report.errors, report.errors
    block = block_bytes(ws.prep_dir("dfew"))
    other = Workspace(scratch / "w2", scratch / "m2")
    steps: dict[str, Callable[[], Any]] = {
        "manifest": lambda: build_manifest("dfew", root, other),
        "prep space": lambda: estimate_prep_bytes(rows, "dfew", root, data_cfg, [], block),
        "check": lambda: check_dataset("dfew", root, ws),
        "shard": lambda: run_shard("dfew", ws, data_cfg, force=True),
        "loader start": lambda: _first_batch(cfg, ws),
        "report": lambda: make_report("dfew", ws, runs_dir=ws.runs_dir("dfew") / "default"),
        "sweep status": lambda: sweep_status(ws, "dfew", sid),
    }
    return {"clips": n, "build_seconds": round(time.perf_counter() - build, 2), "steps": steps}


def time_steps(datasets: list[dict[str, Any]], rounds: int) -> None:
    """Best-of-`rounds` wall and CPU seconds of every step on every dataset, into each dataset's `seconds` and
    `cpu_seconds`. Rounds, steps and datasets interleave, so a machine whose load drifts weighs on both sizes."""
    for d in datasets:
        d["seconds"] = {step: float("inf") for step in STEPS}
        d["cpu_seconds"] = {step: float("inf") for step in STEPS}
    for _ in range(rounds):
        for step in STEPS:
            for d in datasets:
                wall, cpu = time.perf_counter(), time.process_time()
                d["steps"][step]()
                d["seconds"][step] = min(d["seconds"][step], time.perf_counter() - wall)
                d["cpu_seconds"][step] = min(d["cpu_seconds"][step], time.process_time() - cpu)


def summarise(base: dict[str, Any], full: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for step in STEPS:
        a, b = base["seconds"][step], full["seconds"][step]
        us_a, us_b = 1e6 * a / base["clips"], 1e6 * b / full["clips"]
        ca, cb = base["cpu_seconds"][step] / base["clips"], full["cpu_seconds"][step] / full["clips"]
        rows.append({"step": step, "seconds_baseline": round(a, 4), "seconds_full": round(b, 4),
                     "us_per_clip_baseline": round(us_a, 2), "us_per_clip_full": round(us_b, 2),
                     "ratio": round(us_b / us_a, 3) if us_a > 0 else None,
                     "cpu_ratio": round(cb / ca, 3) if ca > 0 else None})
    worst = max(r["ratio"] for r in rows if r["ratio"] is not None)
    return {"bench": "dfew_scale", "clips": {"baseline": base["clips"], "full": full["clips"]},
            "frames_per_clip": args.frames, "crop_size": args.size, "rounds": args.rounds,
            "loader_workers": args.workers, "goal_ratio": GOAL, "worst_ratio": worst, "meets_goal": worst <= GOAL,
            "build_seconds": {"baseline": base["build_seconds"], "full": full["build_seconds"]}, "rows": rows,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__, "cpus": os.cpu_count()}}


def print_table(out: dict[str, Any]) -> None:
    a, b = out["clips"]["baseline"], out["clips"]["full"]
    print(f"\nDFEW scale: {b} clips vs a {a}-clip baseline ({out['frames_per_clip']} frames of "
          f"{out['crop_size']} px per clip; best of {out['rounds']})\n")
    print(f"| step | s ({a}) | s ({b}) | us/clip ({a}) | us/clip ({b}) | ratio | CPU-time ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        cpu = f"{r['cpu_ratio']:.2f}" if r["cpu_ratio"] is not None else "-"
        print(f"| {r['step']} | {r['seconds_baseline']:.3f} | {r['seconds_full']:.3f} | "
              f"{r['us_per_clip_baseline']:.1f} | {r['us_per_clip_full']:.1f} | {r['ratio']:.2f} | {cpu} |")
    verdict = "met" if out["meets_goal"] else "NOT met"
    print(f"\ngoal: per-clip cost ratio <= {out['goal_ratio']} for every step: {verdict} "
          f"(worst {out['worst_ratio']:.2f})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=DFEW_CLIPS, help="clips of the full run (DFEW: 11697)")
    p.add_argument("--baseline", type=int, default=1000, help="clips of the baseline run")
    p.add_argument("--frames", type=int, default=3, help="face frames per tiny clip")
    p.add_argument("--size", type=int, default=32, help="crop size of the tiny face frames")
    p.add_argument("--rounds", type=int, default=2, help="best of this many timings per step")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loader start-up")
    p.add_argument("--scratch", type=Path, default=None, help="where the datasets go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pipeline").setLevel(logging.ERROR)  # per-clip warnings (frame counts) are expected here
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        if args.scratch is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mma-bench-dfew-")))
        else:
            scratch = args.scratch
            scratch.mkdir(parents=True, exist_ok=True)
        base = prepare(args.baseline, scratch / f"n{args.baseline}", args)
        full = prepare(args.clips, scratch / f"n{args.clips}", args)
        time_steps([base, full], args.rounds)
    out = summarise(base, full, args)
    print_table(out)
    if args.json:
        from pipeline.core.io import atomic_write_json

        atomic_write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
