"""Real faults: a `mma train` process killed with SIGKILL mid-epoch resumes to the same numbers, a
truncated last.pt is refused in one line, a test shard with a corrupt member makes `mma eval` fail
naming the clip (or write a result marked partial when asked), and a report never averages a
partial fold or folds of different provenance without being told to."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.paths import Workspace

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

pytestmark = pytest.mark.slow


def _train_args(ws: Workspace, run_dir: Path, epochs: int) -> list[str]:
    return ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), "train", "synth", "--fold", "1",
            "--preset", "tiny", "--epochs", str(epochs), "--set", "data.crop_size=64", "--set",
            "train.deterministic=true", "--workers", "0", "--run-dir", str(run_dir)]


def _mma(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(sharded, workspace, tmp_path):
    epochs = 6
    full_dir, killed_dir = tmp_path / "full" / "fold1", tmp_path / "killed" / "fold1"
    full = _mma(_train_args(workspace, full_dir, epochs))
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out[-3000:]

    proc = _mma(_train_args(workspace, killed_dir, epochs))
    # epoch 1 is complete once its checkpoint and curves are on disk; then epoch 2 is under way
    _wait_for(lambda: (killed_dir / "curves.png").exists(), 300, "epoch 1's checkpoint", proc)
    first = json.loads((killed_dir / "metrics.jsonl").read_text().splitlines()[0])
    time.sleep(min(first["seconds"] / 2, 2.0))  # about half-way through epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "result.json").exists()
    assert json.loads((killed_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] < epochs

    # a truncated last.pt is refused in one line naming it (on a copy: the real one resumes below)
    broken = tmp_path / "broken" / "fold1"
    shutil.copytree(killed_dir, broken)
    data = (broken / "last.pt").read_bytes()
    (broken / "last.pt").write_bytes(data[: len(data) // 2])
    res = runner.invoke(cli.app, [*_train_args(workspace, broken, epochs), "--resume"])
    assert res.exit_code == 2, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(f"error: {broken / 'last.pt'}: truncated or corrupt PyTorch checkpoint"), last

    resumed = _mma([*_train_args(workspace, killed_dir, epochs), "--resume"])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming" in out
    a = json.loads((full_dir / "result.json").read_text())
    b = json.loads((killed_dir / "result.json").read_text())
    for key in ("uar", "war", "uar_2clip", "war_2clip", "per_class_recall", "confusion", "clips_expected",
                "clips_evaluated", "clips_missing", "train_samples_skipped"):
        assert a[key] == b[key], key
    assert (full_dir / "predictions.csv").read_text() == (killed_dir / "predictions.csv").read_text()
    assert a["provenance"]["config_sha256"] == b["provenance"]["config_sha256"]


def _copy_workspace(src: Workspace, dst: Path) -> Workspace:
    ws = Workspace(dst / "work", dst / "data_manifests")
    shutil.copytree(src.manifest_dir, ws.manifest_dir)
    (ws.workdir / "synth").mkdir(parents=True)
    shutil.copytree(src.shards_dir("synth"), ws.shards_dir("synth"))
    return ws


def _corrupt_member(shard: Path, suffix: str) -> str:
    """Replace the first sample's `suffix` member with garbage; returns that sample's clip id."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    victim = next(m.name.split(".", 1)[0] for m, _ in members if m.name.endswith(suffix))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, payload in members:
            if m.name == f"{victim}.{suffix}":
                payload = b"\x00garbage, not a numpy file" * 3
                m.size = len(payload)
            out.addfile(m, io.BytesIO(payload) if payload is not None else None)
    shard.write_bytes(buf.getvalue())
    with tarfile.open(shard) as tar:
        meta = json.loads(tar.extractfile(f"{victim}.json").read())
    return str(meta["clip_id"])


def test_corrupt_test_member_fails_eval_naming_the_clip(sharded, workspace, tmp_path):
    ws = _copy_workspace(workspace, tmp_path)
    run_dir = tmp_path / "runs" / "fold1"
    res = runner.invoke(cli.app, _train_args(ws, run_dir, 1))
    assert res.exit_code == 0, res.output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["clips_missing"] == [] and result["clips_evaluated"] == result["clips_expected"] > 0
    assert result["partial"] is False and result["source"] == "shards" and result["train_samples_skipped"] == 0
    prov = result["provenance"]
    for key in ("version", "git_commit", "manifest_sha256", "prep_config_hash", "shard_index_sha256", "encoders",
                "config_sha256", "torch", "timm", "device", "precision"):
        assert key in prov, key
    assert prov["precision"] == "fp32" and prov["device"] == "cpu"

    index = json.loads((ws.shards_dir("synth") / "index.json").read_text())
    test_shard = next(s for s in index["shards"] if s["fold"] == 1)
    clip = _corrupt_member(ws.shards_dir("synth") / test_shard["name"], "fbank.npy")
    eval_args = ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), "eval", "synth", "--fold", "1",
                 "--preset", "tiny", "--checkpoint", str(run_dir / "last.pt"), "--out", str(tmp_path / "eval")]
    res = runner.invoke(cli.app, eval_args)
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: fold 1 of synth: 1 of ") and clip in last and "--allow-partial" in last, last
    assert not (tmp_path / "eval" / "eval.json").exists()

    res = runner.invoke(cli.app, [*eval_args, "--allow-partial"])
    assert res.exit_code == 0, res.output
    partial = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert partial["partial"] is True and partial["clips_missing"] == [clip]
    assert partial["clips_evaluated"] == partial["clips_expected"] - 1

    # a corrupt *training* member is skipped and counted, not fatal
    train_shard = next(s for s in index["shards"] if s["fold"] == 2)
    _corrupt_member(ws.shards_dir("synth") / train_shard["name"], "fbank.npy")
    res = runner.invoke(cli.app, [*_train_args(ws, tmp_path / "runs2" / "fold1", 1), "--allow-partial"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "runs2" / "fold1" / "result.json").read_text())
    assert again["train_samples_skipped"] == 1 and again["partial"] is True
    metrics = [json.loads(x) for x in (tmp_path / "runs2" / "fold1" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["train_samples_skipped"] == 1


def _fake_fold(runs: Path, k: int, uar: float, **extra) -> None:
    d = runs / f"fold{k}"
    d.mkdir(parents=True)
    prov = {"manifest_sha256": "m", "prep_config_hash": "p", "shard_index_sha256": "i", "encoders": {},
            "config_sha256": "c", "source": "shards", "cache_views": None, "cache_provenance_sha256": None,
            "precision": "fp32", **extra.pop("prov", {})}
    result = {"uar": uar, "war": uar + 10, "uar_2clip": uar, "war_2clip": uar + 10, "epochs": 1, "image_size": 32,
              "source": prov["source"], "provenance": prov, "partial": False, "clips_missing": [],
              "clips_expected": 10, **extra}
    (d / "result.json").write_text(json.dumps(result))


def test_report_refuses_partial_and_mixed_folds(tmp_path):
    runs = tmp_path / "runs"
    for k in range(1, 6):
        _fake_fold(runs, k, 40.0 + k)
    base = ["--workdir", str(tmp_path / "work"), "report", "synth", "--runs", str(runs)]
    res = runner.invoke(cli.app, base)
    assert res.exit_code == 0 and "**43.00**" in res.output and "| shards |" in res.output

    shutil.rmtree(runs / "fold3")
    _fake_fold(runs, 3, 43.0, partial=True, clips_missing=["00042"])
    res = runner.invoke(cli.app, base)
    assert res.exit_code == 1 and "fold3 is partial" in res.output and "**43.00**" not in res.output
    res = runner.invoke(cli.app, [*base, "--allow-partial"])
    assert res.exit_code == 0 and "**43.00**" in res.output

    shutil.rmtree(runs / "fold5")
    _fake_fold(runs, 5, 45.0, prov={"source": "cache", "cache_views": 4, "cache_provenance_sha256": "z"})
    res = runner.invoke(cli.app, [*base, "--allow-partial"])
    assert res.exit_code == 1, res.output
    assert "source differs (folds 1,2,3,4: shards; fold 5: cache)" in res.output and "--mixed" in res.output
    res = runner.invoke(cli.app, [*base, "--allow-partial", "--mixed"])
    assert res.exit_code == 0 and "**43.00**" in res.output and "MIXED" in res.output
