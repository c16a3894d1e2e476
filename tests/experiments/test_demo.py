"""`mma demo` end to end through the real CLI, at a smaller size (same code path), then rerun reusing it all."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

import cli

runner = CliRunner()

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_then_reuses_them(tmp_path):
    workdir = tmp_path / "work"
    args = ["--workdir", str(workdir), "demo", "--clips-per-class", "5", "--seconds", "1.0", "--epochs", "2"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mma demo: tiny MMA-DFER" in out and "chance level: UAR 25.00" in out
    run_dir = workdir / "synth" / "runs" / "demo" / "seed1" / "fold1"
    for name in ("result.json", "last.pt", "curves.png", "confusion.png", "eval/eval.json"):
        assert (run_dir / name).exists(), name
    assert str(run_dir / "curves.png") in out and str(run_dir / "confusion.png") in out
    # everything lives under the workdir, manifests included
    assert (workdir / "data_manifests" / "synth" / "clips.csv").exists()
    assert (workdir / "synth" / "raw" / "synth.json").exists()
    assert (workdir / "synth" / "cache.zarr").exists()
    assert (workdir / "synth" / "runs" / "demo" / "report.md").exists()
    train = json.loads((run_dir / "result.json").read_text())
    ev = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert train["epochs"] == 2 and abs(train["uar"] - ev["uar"]) < 1e-6  # eval reproduces the run's own test

    stamp = (run_dir / "result.json").stat().st_mtime
    start = time.perf_counter()
    again = runner.invoke(cli.app, args)
    assert again.exit_code == 0, again.output
    assert (run_dir / "result.json").stat().st_mtime == stamp  # nothing retrained
    assert time.perf_counter() - start < 30

    other = runner.invoke(cli.app, ["--workdir", str(workdir), "demo", "--clips-per-class", "6"])
    assert other.exit_code == 2 and "pass --force to rebuild" in other.output
