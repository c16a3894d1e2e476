"""`mma report` over 5 folds (with missing/unfinished ones) and `mma eval` of an authors'-layout checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.io import append_jsonl, atomic_write_json
from pipeline.results.report import make_report

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
    rep = make_report("synth", workspace, runs_dir=runs).report
    assert not rep["complete"] and rep["folds_ok"] == 3
    assert all(v is None for v in rep["mean"].values())  # never averaged over fewer folds
    status = {r["fold"]: r["status"] for r in rep["folds"]}
    assert status == {1: "ok", 2: "ok", 3: "ok", 4: "unfinished", 5: "missing"}
    md = (runs / "report.md").read_text()
    assert "INCOMPLETE: 3/5 folds" in md and "fold5: missing" in md and "1 epoch(s) logged" in md
    rows = list(csv.reader((runs / "report.csv").open()))
    assert rows[0][:5] == ["row", "uar", "war", "uar_2clip", "war_2clip"]
    assert rows[1][0] == "mean" and rows[1][1] == "" and rows[1][6] == "incomplete"
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


def _authors_checkpoint(net, path: Path) -> Path:
    """Write `net` in the authors' layout ({'state_dict': {'module.<their name>': tensor}}) via the key map."""
    import torch

    from model.official import official_keys

    cfg = net.config
    inner = cfg.temporal_heads * cfg.temporal_head_dim
    sd = {}
    for key, value in net.state_dict().items():
        theirs = official_keys(key)
        parts = [value] if len(theirs) == 1 else [value[:inner], value[inner:]]  # qkv -> to_q, to_kv
        for name, part in zip(theirs, parts):
            sd[f"module.{name}"] = part.clone()
    torch.save({"epoch": 25, "state_dict": sd}, path)
    return path


def test_eval_official_checkpoint_matches_ours(sharded, workspace, tiny_config, tmp_path, caplog):
    """The authors' layout (--official) and our checkpoint of the same weights evaluate identically;
    --official runs with the authors' inputs (data.compat=authors) and says so."""
    import torch

    import model as mdl
    from model.checkpoint import save_model_checkpoint
    from pipeline.core.config import to_dict
    from pipeline.engine.evaluate import evaluate_checkpoint

    torch.manual_seed(tiny_config.train.seed)
    net = mdl.build_model(tiny_config.model)
    with torch.no_grad():  # make the head informative-looking: not all-equal logits
        net.classifier.bias.copy_(torch.tensor([0.0, 0.3, -0.2, 0.1]))
    ours = tmp_path / "ours.pt"
    none = {"path": None, "sha256": None}
    save_model_checkpoint(ours, net, to_dict(tiny_config), {"vision": none, "audio": none})
    official = _authors_checkpoint(net, tmp_path / "mma_dfer_fold1.pth")

    with caplog.at_level("INFO", logger="pipeline.engine.evaluate"):
        a = evaluate_checkpoint(tiny_config, workspace, official, official=True, out_dir=tmp_path / "eval_official").record
    assert a["compat"] == "authors" and tiny_config.data.compat == "mma"
    assert "using the authors' inputs (data.compat=authors" in caplog.text and "precision fp32" in caplog.text
    b = evaluate_checkpoint(tiny_config, workspace, ours, out_dir=tmp_path / "eval_ours").record
    assert a["official"] and not b["official"]
    for key in ("uar", "war", "uar_2clip", "war_2clip", "confusion", "per_class_recall"):
        assert a[key] == b[key], key
    assert a["clips"] > 0 and sum(map(sum, a["confusion"])) == a["clips"]
    assert set(a["per_class_recall"]) == {"happiness", "sadness", "neutral", "anger"}
    for name in ("eval.json", "predictions.csv", "confusion.csv", "confusion_2clip.csv", "confusion.png"):
        assert (tmp_path / "eval_official" / name).exists(), name
    ours_csv = (tmp_path / "eval_ours" / "predictions.csv").read_text()
    assert (tmp_path / "eval_official" / "predictions.csv").read_text() == ours_csv

    res = CliRunner().invoke(cli.app, ["--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir),
                                       "eval", "synth", "--fold", "1", "--checkpoint", str(ours), "--official",
                                       "--preset", "tiny"])
    assert res.exit_code == 2 and "error:" in res.output
    assert "ours.pt: this is an mma run checkpoint (synth fold 1), given as --checkpoint --official" in res.output
