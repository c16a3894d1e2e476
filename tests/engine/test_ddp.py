"""`mma train` under torchrun with 2 CPU processes (gloo): one result, every test clip exactly once."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_clip_ids(cfg, workspace) -> list[str]:
    from pipeline.store.stream import build_loader

    return [cid for batch in build_loader(cfg, workspace, "test") for cid in batch[3]]


def test_torchrun_two_cpu_ranks(sharded, workspace, tiny_config, tmp_path):
    run_dir = tmp_path / "ddp" / "fold1"
    mma = Path(sys.executable).with_name("mma")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "--no-python", str(mma),
           "--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir),
           "train", "synth", "--fold", "1", "--preset", "tiny", "--epochs", "2", "--set", "data.crop_size=64",
           "--workers", "0", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert sorted(p.name for p in run_dir.glob("result*.json")) == ["result.json"]
    result = json.loads((run_dir / "result.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # rank 0 alone logs
    assert all(r["world_size"] == 2 for r in records)
    from pipeline.store.stream import build_loader

    train_clips = len(build_loader(tiny_config, workspace, "train").dataset)
    assert all(r["train_clips"] == train_clips for r in records)  # the ranks' shares add up to the split

    rows = list(csv.DictReader((run_dir / "predictions.csv").open()))
    ids = [r["clip_id"] for r in rows]
    expected = _test_clip_ids(tiny_config, workspace)
    assert len(ids) == len(set(ids)) == result["clips"]
    assert sorted(ids) == sorted(expected)  # every test clip of the fold, each exactly once
    cm_total = sum(sum(row) for row in result["confusion"])
    assert cm_total == len(expected)
