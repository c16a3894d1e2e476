"""The benchmark scripts import and run end to end on tiny inputs, so a refactor cannot break them unnoticed.

The numbers they print are not checked here (speed lives in the benchmarks themselves); what is
checked is that each script runs, prints its table and writes its JSON with the documented keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_train_step_bench_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "train_step.json"
    rows = _load("train_step").main(["--device", "cpu", "--batches", "1,2", "--sources", "raw,cache", "--steps", "1",
                                     "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert [(r["source"], r["batch"]) for r in rows] == [("shards", 1), ("shards", 2), ("cache", 1), ("cache", 2)]
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["meta"]["flops_train_per_clip"] > 0
    for r in rows:  # the CPU says "CPU" and has no MFU
        assert r["device"] == "CPU" and r["mfu"] is None and r["peak_tflops"] is None
        assert r["clips_per_s"] > 0 and r["step_ms"] > 0 and r["x_base"] > 0 and not r["oom"]
    assert rows[0]["x_base"] == 1.0
    printed = capsys.readouterr().out
    assert "clips/s" in printed and "MFU" in printed


def test_largest_batch_search_doubles_then_bisects(monkeypatch):
    bench = _load("train_step")
    tried = []
    monkeypatch.setattr(bench, "fits", lambda batch, device: tried.append(batch) or batch <= 200)
    assert bench.largest_batch(lambda b: b, None, start=32, limit=1024) == 200
    assert tried[:4] == [32, 64, 128, 256]
    assert bench.largest_batch(lambda b: b, None, start=32, limit=100) == 64  # capped


def _device_check(*args, cwd=REPO):
    import subprocess

    return subprocess.run(["bash", str(BENCH / "device_check.sh"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_device_check_runs_its_steps_tiny_on_cpu(tmp_path):
    """--cpu: install skipped, then every step of the GPU check (synth, prep, shard, summary, bench, train, eval,
    predict) at tiny sizes; one JSON with everything and a table."""
    out = tmp_path / "out"
    proc = _device_check("--cpu", "--no-install", "--python", sys.executable, "--out", str(out), "--work",
                         str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    assert report["ok"] and report["mode"] == "cpu"
    assert [s["name"] for s in report["steps"]] == ["install", "env", "synth", "prep", "shard", "summary", "bench",
                                                    "train", "eval", "predict"]
    assert all(s["rc"] == 0 for s in report["steps"][1:])
    assert report["train_step"][0]["device"] == "CPU" and report["summary_flops"]["flops_train_per_clip"] > 0
    assert report["eval_matches_train"] and report["predict"]["top_class"]
    assert "OK: wrote" in proc.stdout and "fold min" in proc.stdout


def test_device_check_refuses_unknown_options_and_other_folders(tmp_path):
    proc = _device_check("--bogus")
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    proc = _device_check("--cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "run from the mma repository root" in proc.stderr


@pytest.mark.slow
def test_loader_bench_runs_on_tiny_clips(tmp_path, capsys):
    out = tmp_path / "loader.json"
    result = _load("loader").main(["--clips", "10", "--frames", "8", "--size", "32", "--image-size", "32",
                                   "--workers", "1", "--batch", "2", "--epochs", "1", "--rounds", "1",
                                   "--views", "1", "--scratch", str(tmp_path / "scratch"), "--json", str(out)])
    assert set(result["clips_per_s"]) == {"jpeg_folder", "shards", "cache", "shards_buffer"}
    assert all(v > 0 for v in result["clips_per_s"].values())
    assert json.loads(out.read_text())["ratios"].keys() == {"shards_vs_jpeg", "cache_vs_jpeg", "permutation_vs_buffer"}
    assert "targets:" in capsys.readouterr().out


@pytest.mark.slow
def test_prep_bench_runs_on_a_tiny_synth_set(tmp_path):
    out = tmp_path / "prep.json"
    result = _load("prep").main(["--clips-per-class", "1", "--classes", "2", "--seconds", "0.6", "--workers", "1",
                                 "--crop-size", "32", "--mtcnn-clips", "1", "--json", str(out)])
    assert result["workers"][0]["clips"] == 2
    assert json.loads(out.read_text())["mtcnn"]["threads"] == 1


def test_shuffle_bench_measures_the_stream_order(tmp_path, capsys):
    out = tmp_path / "shuffle.json"
    rows = _load("shuffle").main(["--clips", "400", "--shard-clips", "100", "--buffer", "16", "--epochs", "1",
                                  "--json", str(out)])
    # a 16-sample buffer over 100-clip shards keeps batches inside one shard; a permutation does not
    assert rows["buffer"]["same_shard_pairs"] > 0.5 > rows["permutation"]["same_shard_pairs"]
    assert set(json.loads(out.read_text())["rows"]) == {"buffer", "permutation"}
    assert "within_shard_rho" in capsys.readouterr().out


def test_predict_bench_runs_on_a_synth_clip(synth_root, tmp_path, capsys):
    out = tmp_path / "predict.json"
    faulty = {Path(f["video"]).name for f in json.loads((synth_root / "synth.json").read_text())["faults"]}
    video = next(p for p in sorted(synth_root.rglob("*.mp4")) if p.name not in faulty)
    result = _load("predict").main(["--video", str(video), "--seconds", "0", "--presets", "tiny", "--json", str(out)])
    (row,) = result["rows"]
    assert row["preset"] == "tiny" and row["windows"] >= 1 and row["s_per_min_full"] > row["s_per_min_windows_only"] > 0
    assert json.loads(out.read_text())["rows"][0]["batched_vs_one_by_one"] > 0
    assert "s_per_min_full" in capsys.readouterr().out


def test_dfew_scale_bench_runs_on_a_few_clips(tmp_path, capsys):
    out = tmp_path / "dfew_scale.json"
    result = _load("dfew_scale").main(["--clips", "60", "--baseline", "25", "--frames", "2", "--size", "16",
                                       "--rounds", "1", "--workers", "0", "--scratch", str(tmp_path / "scratch"),
                                       "--json", str(out)])
    assert result["clips"] == {"baseline": 25, "full": 60}
    steps = {r["step"]: r for r in result["rows"]}
    assert set(steps) == {"manifest", "prep space", "check", "shard", "loader start", "report", "sweep status"}
    assert all(r["us_per_clip_full"] > 0 and r["ratio"] > 0 for r in steps.values())
    saved = json.loads(out.read_text())
    assert saved["goal_ratio"] == 1.2 and saved["worst_ratio"] == max(r["ratio"] for r in saved["rows"])
    assert "per-clip cost ratio <= 1.2" in capsys.readouterr().out


def test_report_uncertainty_bench_runs_on_a_small_run(tmp_path, capsys):
    out = tmp_path / "report_uncertainty.json"
    result = _load("report_uncertainty").main(["--clips", "300", "--seeds", "2", "--resamples", "50",
                                               "--baseline-resamples", "1", "--cores", "0", "--json", str(out)])
    assert result["complete"] and set(result["ci"]) == {"uar", "war", "uar_2clip", "war_2clip"}
    saved = json.loads(out.read_text())
    assert saved["seconds"].keys() == {"write_runs", "make_report", "bootstrap", "loop_baseline_estimate"}
    assert saved["ratios"]["vectorised_vs_loop"] > 0 and saved["target_s"] == 10.0
    assert "make_report, 50 resamples" in capsys.readouterr().out
