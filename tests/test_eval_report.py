"""`mma report` over 5 folds (with missing/unfinished ones) and `mma eval` of an authors'-layout checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.io import append_jsonl, atomic_write_json
from pipeline.report import make_report

FOLD_RESULTS = {
    1: (50.0, 60.0, 52.0, 61.0),
    2: (40.0, 55.0, 41.0, 56.0),
    3: (45.0, 58.0, 44.0, 57.0),
    4: (55.0, 65.0, 54.0, 66.0),
    5: (35.0, 50.0, 36.0, 52.0),
}


def _write_fold(runs: Path, k: int) -> None:
    uar, war, uar2, war2 = FOLD_RESULTS[k]
    atomic_write_json(runs / f"fold{k}" / "result.json", {
        "uar": uar, "war": war, "uar_2clip": uar2, "war_2clip": war2, "per_class_recall": {},
        "num_classes": 4, "fold": k, "epochs": 6, "image_size": 32})


def test_report_flags_missing_and_unfinished_folds(tmp_path, workspace):
    runs = tmp_path / "runs"
    for k in (1, 2, 3):
        _write_fold(runs, k)
    append_jsonl(runs / "fold4" / "metrics.jsonl", {"epoch": 1, "loss": 1.3})  # killed after epoch 1
    rep = make_report("synth", workspace, runs_dir=runs)
    assert not rep["complete"] and rep["folds_ok"] == 3
    assert all(v is None for v in rep["mean"].values())  # never averaged over fewer folds
    status = {r["fold"]: r["status"] for r in rep["folds"]}
    assert status == {1: "ok", 2: "ok", 3: "ok", 4: "unfinished", 5: "missing"}
    md = (runs / "report.md").read_text()
    assert "INCOMPLETE: 3/5 folds" in md and "fold5: missing" in md and "1 epoch(s) logged" in md
    rows = list(csv.reader((runs / "report.csv").open()))
    assert rows[0][:5] == ["row", "uar", "war", "uar_2clip", "war_2clip"]
    assert rows[1][0] == "mean" and rows[1][1] == "" and rows[1][5] == "incomplete"
    assert rows[2][:5] == ["fold1", "50.0000", "60.0000", "52.0000", "61.0000"]


def test_report_complete_mean_through_cli(tmp_path, workspace):
    runs = tmp_path / "runs"
    for k in FOLD_RESULTS:
        _write_fold(runs, k)
    res = CliRunner().invoke(cli.app, ["--workdir", str(workspace.workdir), "--manifests",
                                       str(workspace.manifest_dir), "report", "synth", "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    assert "**45.00**" in res.output  # mean UAR of 50, 40, 45, 55, 35
    rep = json.loads((runs / "report.json").read_text())
    assert rep["complete"]
    assert rep["mean"]["war"] == pytest.approx(57.6)
    assert rep["mean"]["uar_2clip"] == pytest.approx(45.4)
    assert rep["mean"]["war_2clip"] == pytest.approx(58.4)
