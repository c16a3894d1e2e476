"""Training under torchrun with 2 CPU processes (gloo): `mma train` gives one result with every test clip
exactly once; a 2-GPU sweep job (torchrun inside the job) computes the losses of one process with the same
global batch, and only rank 0 writes."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_clip_ids(cfg, workspace) -> list[str]:
    from pipeline.store.stream import build_loader

    return [cid for batch in build_loader(cfg, workspace, "test") for cid in batch[3]]


def test_torchrun_two_cpu_ranks(sharded, workspace, tiny_config, tmp_path):
    """README's command, `torchrun --nproc-per-node N -m cli train ...`, run from this checkout."""
    run_dir = tmp_path / "ddp" / "fold1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "cli",
           "--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir),
           "train", "synth", "--fold", "1", "--preset", "tiny", "--epochs", "2", "--set", "data.crop_size=64",
           "--workers", "0", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert sorted(p.name for p in run_dir.glob("result*.json")) == ["result.json"]
    result = json.loads((run_dir / "result.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # rank 0 alone logs
    assert all(r["world_size"] == 2 for r in records)
    from pipeline.store.stream import build_loader

    split = len(build_loader(tiny_config, workspace, "train").dataset)
    global_batch = tiny_config.train.batch_size  # split 2 x 4 over the ranks
    assert all(r["train_clips"] == split - split % global_batch for r in records)  # last partial global batch dropped
    assert all(r["train_clips_dropped"] == split % global_batch for r in records)

    rows = list(csv.DictReader((run_dir / "predictions.csv").open()))
    ids = [r["clip_id"] for r in rows]
    expected = _test_clip_ids(tiny_config, workspace)
    assert len(ids) == len(set(ids)) == result["clips"]
    assert sorted(ids) == sorted(expected)  # every test clip of the fold, each exactly once
    cm_total = sum(sum(row) for row in result["confusion"])
    assert cm_total == len(expected)


def _files(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


def test_sweep_job_on_two_ranks_matches_one_process(sharded, workspace, tiny_config, tmp_path, monkeypatch):
    from pipeline.engine.train import RUN_FILES, train_fold
    from pipeline.experiments.jobs import TrainJob
    from pipeline.core.config import to_dict

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cfg = tiny_config
    cfg.train.epochs = 2
    cfg.train.eval_two_clip = False
    cfg.train.drop_last = True  # what torchrun implies: every rank takes the same steps
    cfg.model.drop_path = 0.0  # stochastic depth draws per rank; the rest of the step is the same arithmetic
    one = train_fold(cfg, workspace, run_dir=tmp_path / "one" / "fold1")

    before = _files(tmp_path, workspace.workdir)
    run_dir = tmp_path / "two" / "fold1"
    job = TrainJob()(config=to_dict(cfg), workdir=str(workspace.workdir), manifest_dir=str(workspace.manifest_dir),
                     run_dir=str(run_dir), gpus=2)
    assert job == json.loads((run_dir / "result.json").read_text())
    new = _files(tmp_path, workspace.workdir) - before
    assert {p.relative_to(run_dir).as_posix() for p in new} <= set(RUN_FILES)  # nothing outside the run dir
    assert "result.json" in {p.name for p in new}

    def records(d):
        return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]

    single, ddp = records(tmp_path / "one" / "fold1"), records(run_dir)
    assert [r["epoch"] for r in ddp] == [1, 2]  # one line per epoch: rank 1 never appended
    assert [r["world_size"] for r in ddp] == [2, 2] and [r["world_size"] for r in single] == [1, 1]
    assert [r["train_clips"] for r in ddp] == [r["train_clips"] for r in single]
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["train_acc"] == b["train_acc"]
    assert job["clips"] == one.record["clips"] and job["uar"] == pytest.approx(one.uar)
