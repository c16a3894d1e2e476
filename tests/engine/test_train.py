"""Training one fold on synth data: learning, run directory, exact resume, overwrite refusal, CLI e2e."""

from __future__ import annotations

import copy
import csv
import json

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.config import resolve_run, tiny, to_dict
from pipeline.core.errors import MMAError
from pipeline.core.project import ProjectFile
from pipeline.core.stage_config import ConfigRequest, resolve_stage_config
from pipeline.data.datasets import apply_label_set
from pipeline.data.manifest import label_set
from pipeline.engine.train import config_differences

# A tiny model on 34 synth clips with random frozen encoders is fragile: whether it learns depends on
# the seed (encoders, order). Measured with the uniform per-epoch order (fold 1, UAR over seeds 1/2/3/5):
# 15 epochs at 3e-3: 50/50/25/50; 20 at 1.5e-3: 92/92/25/50; 20 at 2e-3: 100/92/25/50. Seed 1 at the
# latter recipe is what this test trains.
EPOCHS = 20
STOP_AFTER = 8
LR = 2e-3


class _Killed(Exception):
    """Stands in for a kill between epochs."""


def _cfg(test_data_config):
    from pipeline.core.config import tiny

    cfg = tiny()
    cfg.dataset = "synth"
    cfg.fold = 1
    cfg.data.crop_size = test_data_config.crop_size
    cfg.data.num_workers = 0
    cfg.train.epochs = EPOCHS
    cfg.train.lr = LR
    cfg.train.deterministic = True
    return cfg


@pytest.fixture(scope="module")
def full_run(sharded, workspace, test_data_config, tmp_path_factory):
    """An uninterrupted tiny run of fold 1: (run dir, result)."""
    from pipeline.engine import train

    run_dir = tmp_path_factory.mktemp("runs") / "full" / "fold1"
    result = train.train_fold(_cfg(test_data_config), workspace, run_dir=run_dir).record
    return run_dir, result


def test_fold_learns_and_writes_run_dir(full_run):
    run_dir, result = full_run
    for name in ("config.json", "metrics.jsonl", "last.pt", "curves.png", "predictions.csv", "confusion.csv",
                 "confusion.png", "result.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert json.loads((run_dir / "result.json").read_text()) == json.loads(json.dumps(result))
    saved = json.loads((run_dir / "config.json").read_text())  # what ran: data.compat resolved, no "auto"
    assert saved["data"]["compat"] == "mma" and saved["train"]["precision"] == "fp32"
    assert {k: saved["data"][k] for k in ("faces", "face_select", "audio_rate", "frame_order")} == {
        "faces": "detect", "face_select": "track", "audio_rate": "16k", "frame_order": "numeric"}
    assert set(result) >= {"uar", "war", "uar_2clip", "war_2clip", "per_class_recall", "num_classes", "fold",
                           "epochs"}
    assert result["num_classes"] == 4 and result["fold"] == 1 and result["epochs"] == EPOCHS
    # 4 classes: chance is 25 %; the synth classes are easy (colour, size, pitch)
    assert result["uar"] >= 60.0 and result["war"] >= 60.0, result
    assert result["uar_2clip"] >= 60.0, result
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert records[-1]["loss"] < records[0]["loss"]
    lrs = [r["lr"] for r in records]
    assert lrs[0] == pytest.approx(LR) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine, per epoch
    assert all(r["clips_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in records)
    rows = list(csv.DictReader((run_dir / "predictions.csv").open()))
    assert len(rows) == result["clips"] == len({r["clip_id"] for r in rows})
    assert {"clip_id", "label", "pred", "pred_2clip", "logit_happiness"} <= set(rows[0])
    from model.checkpoint import load_model_checkpoint

    ck = load_model_checkpoint(run_dir / "last.pt")
    assert ck["epoch"] == EPOCHS and ck["config"]["model"]["num_classes"] == 4
    assert {"optimizer", "scheduler", "rng"} <= set(ck)


def test_resume_after_kill_matches_uninterrupted(full_run, workspace, test_data_config, tmp_path):
    from pipeline.engine.train import train_fold

    run_dir = tmp_path / "fold1"
    cfg = _cfg(test_data_config)

    def kill(epoch, record):
        if epoch == STOP_AFTER:
            raise _Killed

    with pytest.raises(_Killed):
        train_fold(cfg, workspace, run_dir=run_dir, on_epoch_end=kill)
    assert not (run_dir / "result.json").exists()
    with pytest.raises(MMAError, match="unfinished run"):
        train_fold(cfg, workspace, run_dir=run_dir)
    changed = copy.deepcopy(cfg)
    changed.train.lr = 5e-4
    with pytest.raises(MMAError, match="train.lr"):
        train_fold(changed, workspace, run_dir=run_dir, resume=True)

    result = train_fold(cfg, workspace, run_dir=run_dir, resume=True).record
    _, full = full_run
    for key in ("uar", "war", "uar_2clip", "war_2clip", "per_class_recall", "confusion"):
        assert result[key] == full[key], key
    resumed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    uninterrupted = [json.loads(line) for line in (full_run[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == list(range(1, EPOCHS + 1))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in uninterrupted]
    assert (run_dir / "predictions.csv").read_text() == (full_run[0] / "predictions.csv").read_text()


def test_finished_run_is_not_overwritten(full_run, workspace, test_data_config):
    from pipeline.engine.train import train_fold

    run_dir, result = full_run
    before = (run_dir / "result.json").stat().st_mtime_ns
    with pytest.raises(MMAError, match="finished run.*--force"):
        train_fold(_cfg(test_data_config), workspace, run_dir=run_dir)
    # --resume on a finished run is a no-op that returns its result
    assert train_fold(_cfg(test_data_config), workspace, run_dir=run_dir, resume=True).uar == result["uar"]
    assert (run_dir / "result.json").stat().st_mtime_ns == before


def test_cli_train_eval_report(sharded, workspace, tmp_path):
    runner = CliRunner()
    base = ["--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir)]
    runs = tmp_path / "runs"
    res = runner.invoke(cli.app, [*base, "train", "synth", "--fold", "1", "--preset", "tiny", "--epochs", "2",
                                  "--set", "data.crop_size=64", "--run-dir", str(runs / "fold1")])
    assert res.exit_code == 0, res.output
    trained = json.loads((runs / "fold1" / "result.json").read_text())
    # a Python caller resolving the same words gets the config `mma train` ran (config.json)
    ran = json.loads((runs / "fold1" / "config.json").read_text())
    same = resolve_stage_config(ConfigRequest(preset="tiny", set_overrides=("data.crop_size=64",),
                                              flags={"fold": 1, "epochs": 2}, dataset="synth"), ProjectFile(), workspace)
    apply_label_set(same, label_set("synth", workspace))
    resolve_run(same, "cpu")  # what config.json records: the concrete data choices and precision
    assert {k: ran[k] for k in ("model", "data", "train", "fold", "name")} == \
        {k: to_dict(same)[k] for k in ("model", "data", "train", "fold", "name")}

    res = runner.invoke(cli.app, [*base, "train", "synth", "--fold", "1", "--preset", "tiny", "--epochs", "2",
                                  "--run-dir", str(runs / "fold1")])
    assert res.exit_code == 2 and "error:" in res.output and "--force" in res.output

    res = runner.invoke(cli.app, [*base, "eval", "synth", "--fold", "1", "--preset", "tiny", "--checkpoint",
                                  str(runs / "fold1" / "last.pt"), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    for key in ("uar", "war", "uar_2clip", "war_2clip", "confusion"):
        assert evaluated[key] == trained[key], key  # eval of last.pt reproduces the trainer's numbers
    assert (tmp_path / "eval" / "confusion.png").exists()

    res = runner.invoke(cli.app, [*base, "report", "synth", "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    assert "INCOMPLETE: 1/5 folds" in res.output and "fold2: missing" in res.output
    assert f"{trained['uar']:.2f}" in res.output


def test_train_and_eval_from_cache(sharded, workspace, test_data_config, tmp_path):
    """--from cache: forward_embedded on zarr tokens; eval of last.pt from the cache reproduces the result."""
    from pipeline.core.paths import Workspace
    from pipeline.engine.evaluate import evaluate_checkpoint
    from pipeline.engine.train import train_fold
    from pipeline.store.cache import run_cache

    ws = Workspace(tmp_path / "work", workspace.manifest_dir)  # own cache.zarr, the session's shards
    (ws.workdir / "synth").mkdir(parents=True)
    (ws.workdir / "synth" / "shards").symlink_to(workspace.shards_dir("synth").resolve())
    cfg = _cfg(test_data_config)
    cfg.train.source = "cache"
    cfg.train.epochs = 3
    run_cache(cfg, ws, cluster="serial")
    result = train_fold(cfg, ws, run_dir=tmp_path / "run").record
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1]["loss"] < records[0]["loss"]
    assert result["clips"] == sum(map(sum, result["confusion"])) > 0
    evaluated = evaluate_checkpoint(cfg, ws, tmp_path / "run" / "last.pt", out_dir=tmp_path / "eval").record
    for key in ("uar", "war", "uar_2clip", "war_2clip", "confusion"):
        assert evaluated[key] == result[key], key

    changed = copy.deepcopy(cfg)
    changed.model.image_size = 48
    with pytest.raises(MMAError, match="cache does not match"):
        train_fold(changed, ws, run_dir=tmp_path / "run2")


def test_cli_train_speed_flags_reach_the_run(sharded, workspace, tmp_path):
    """--checkpointing, --drop-last and --log-every set train.*; the run drops the last partial batch."""
    runner = CliRunner()
    base = ["--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir)]
    run = tmp_path / "fold1"
    res = runner.invoke(cli.app, [*base, "train", "synth", "--fold", "1", "--preset", "tiny", "--epochs", "1",
                                  "--batch-size", "8", "--checkpointing", "--drop-last", "--log-every", "1",
                                  "--set", "train.eval_two_clip=false", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    ran = json.loads((run / "config.json").read_text())["train"]
    assert (ran["checkpointing"], ran["drop_last"], ran["log_every"]) == (True, True, 1)
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    split = record["train_clips"] + record["train_clips_dropped"]
    assert record["train_clips"] == split - split % 8 and record["train_samples_skipped"] == 0


def test_config_differences_compare_the_resolved_input_statistics():
    """A run's config.json holds the encoders' statistics resolved; the same config unresolved is no difference."""
    saved = resolve_run(tiny(), "cpu")
    assert saved.model.audio_mean == pytest.approx(-4.2677393) and saved.model.vision_std == (1.0, 1.0, 1.0)
    assert config_differences(saved, tiny()) == []
    other = tiny()
    other.model.vision_encoder = "vit_base_patch16_clip_224.openai"
    assert [d.split(":")[0] for d in config_differences(saved, other)] == [
        "model.vision_encoder", "model.vision_mean", "model.vision_std"]
