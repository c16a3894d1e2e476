"""`mma report` with bootstrap intervals on a DFEW-size run: 11,697 test clips over 5 folds, 3 seeds.

Writes a runs folder of 15 finished runs (predictions.csv with 7 logits per clip, result.json, config.json;
a DFEW-like class imbalance, about 75 % right), then times `make_report` with N resamples (default 1000)
end to end: reading every result and predictions.csv, the vectorised bootstrap of UAR/WAR over the test
clips, report.md/.csv/.json. The baseline of the ratio column is the same bootstrap as a Python loop over
resamples (each one resampled with numpy and scored by `pipeline.engine.metrics.classification_metrics`),
timed on a few resamples and scaled to N. Target (issue 23): under 10 s on 2 CPU cores.

Usage: python bench/report_uncertainty.py [--clips 11697] [--seeds 3] [--resamples 1000] [--cores 2]
       [--json bench/results/report_uncertainty.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# DFEW's class shares (happiness, sadness, neutral, anger, surprise, disgust, fear), roughly.
CLASS_SHARES = (0.25, 0.17, 0.23, 0.16, 0.10, 0.02, 0.07)
TARGET_S = 10.0


def write_runs(runs: Path, clips: int, seeds: int, accuracy: float = 0.75) -> dict[str, float]:
    """15 (or seeds x 5) finished run folders of DFEW size under `runs`; returns the seconds it took."""
    import numpy as np

    from pipeline.core.config import paper, save_resolved_config
    from pipeline.core.folds import FOLDS
    from pipeline.core.io import atomic_write_json
    from pipeline.core.seeds import seed_dir_name
    from pipeline.engine.metrics import classification_metrics

    start = time.perf_counter()
    rng = np.random.default_rng(2024)
    classes = len(CLASS_SHARES)
    ids = np.array([f"{i:05d}" for i in range(1, clips + 1)])
    labels = rng.choice(classes, size=clips, p=np.asarray(CLASS_SHARES) / sum(CLASS_SHARES))
    header = ",".join(["clip_id", "label", "label_name", "pred", "pred_name", "pred_2clip", "pred_2clip_name",
                       *[f"logit_c{c}" for c in range(classes)]])
    for fold, part in zip(FOLDS, np.array_split(np.arange(clips), len(FOLDS))):
        y = labels[part]
        for seed in range(1, seeds + 1):
            logits = rng.normal(size=(len(part), classes))
            right = rng.random(len(part)) < accuracy
            logits[np.arange(len(part)), y] += np.where(right, 4.0, -4.0)
            pred = logits.argmax(axis=1)
            two = (logits + rng.normal(scale=0.5, size=logits.shape)).argmax(axis=1)
            run_dir = runs / seed_dir_name(seed) / f"fold{fold}"
            run_dir.mkdir(parents=True, exist_ok=True)
            lines = [header] + [f"{c},{a},c{a},{p},c{p},{q},c{q}," + ",".join(f"{v:.6g}" for v in row)
                                for c, a, p, q, row in zip(ids[part], y, pred, two, logits)]
            (run_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
            m1 = classification_metrics(y.tolist(), pred.tolist(), classes)
            m2 = classification_metrics(y.tolist(), two.tolist(), classes)
            atomic_write_json(run_dir / "result.json", {
                "uar": m1["uar"], "war": m1["war"], "uar_2clip": m2["uar"], "war_2clip": m2["war"], "fold": fold,
                "epochs": 25, "image_size": 160, "clips_expected": len(part), "clips_evaluated": len(part),
                "clips_missing": [], "partial": False})
            cfg = paper()
            cfg.dataset, cfg.fold, cfg.train.seed = "dfew", fold, seed
            save_resolved_config(cfg, run_dir / "config.json")
    return {"write_runs": time.perf_counter() - start}


def loop_baseline(runs: Path, resamples: int) -> float:
    """Seconds per resample of the bootstrap as a Python loop (every run of every fold, 1- and 2-clip)."""
    import numpy as np

    from pipeline.core.seeds import run_folders
    from pipeline.engine.metrics import classification_metrics
    from pipeline.results.uncertainty import read_predictions

    preds = [read_predictions(d / "predictions.csv") for folds in run_folders(runs).values() for d in folds.values()]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(resamples):
        for p in preds:
            idx = rng.integers(0, len(p.labels), len(p.labels))
            y = p.labels[idx].tolist()
            for variant in (p.preds, p.preds_2clip):
                if variant is not None:
                    classification_metrics(y, variant[idx].tolist(), p.num_classes)
    return (time.perf_counter() - start) / resamples


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=11697, help="test clips over the 5 folds (DFEW: 11,697)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--baseline-resamples", type=int, default=5, help="resamples timed for the Python-loop baseline")
    p.add_argument("--cores", type=int, default=2, help="pin the process to this many CPU cores (Linux)")
    p.add_argument("--scratch", type=Path, default=None, help="folder for the runs (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    if args.cores and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[:args.cores])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    from pipeline.core.paths import Workspace
    from pipeline.results.report import make_report
    from pipeline.results.uncertainty import load_replicates

    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        runs = Path(tmp) / "dfew" / "runs" / "default"
        seconds = write_runs(runs, args.clips, args.seeds)
        ws = Workspace(Path(tmp), Path(tmp) / "manifests")
        start = time.perf_counter()
        report = make_report("dfew", ws, runs_dir=runs, bootstrap=args.resamples).report
        seconds["make_report"] = time.perf_counter() - start
        from pipeline.core.seeds import run_folders

        dirs = {(s, k): d for s, folds in run_folders(runs).items() for k, d in folds.items()}
        start = time.perf_counter()
        load_replicates(dirs, args.resamples)
        seconds["bootstrap"] = time.perf_counter() - start
        per_resample = loop_baseline(runs, args.baseline_resamples)
        seconds["loop_baseline_estimate"] = per_resample * args.resamples
    ratio = seconds["loop_baseline_estimate"] / seconds["bootstrap"]
    out = {
        "clips": args.clips, "folds": 5, "seeds": args.seeds, "resamples": args.resamples, "cores": cores,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ratios": {"vectorised_vs_loop": round(ratio, 1)},
        "target_s": TARGET_S, "meets_target": seconds["make_report"] < TARGET_S,
        "complete": report["complete"], "ci": report["ci"], "mean": report["mean"],
    }
    rows = [
        (f"write {args.seeds * 5} run folders ({args.clips} clips x {args.seeds} seeds)", seconds["write_runs"], ""),
        (f"make_report, {args.resamples} resamples (end to end)", seconds["make_report"],
         f"target < {TARGET_S:.0f} s: {'met' if out['meets_target'] else 'MISSED'}"),
        ("  of which: read predictions.csv + vectorised bootstrap", seconds["bootstrap"], "1.00x"),
        (f"  Python loop over resamples (timed {args.baseline_resamples}, scaled)", seconds["loop_baseline_estimate"],
         f"{ratio:.1f}x slower"),
    ]
    print(f"| step ({cores} core(s)) | seconds | note |\n|---|---:|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec:.2f} | {note} |")
    ci = report["ci"] or {}
    print("mean UAR {:.2f} [{:.2f}, {:.2f}], WAR {:.2f} [{:.2f}, {:.2f}]".format(
        report["mean"]["uar"], *ci.get("uar", [float("nan")] * 2), report["mean"]["war"],
        *ci.get("war", [float("nan")] * 2)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
