"""How sure a number is (issue 23): bootstrap intervals and paired comparisons on hand-made predictions.csv
files whose answers are known in closed form, seeds in `mma report`, and the run layout before seeds."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import paper, save_resolved_config
from pipeline.core.errors import ConfigError, MMAError
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Workspace
from pipeline.core.seeds import parse_seeds, run_folders
from pipeline.engine.metrics import classification_metrics
from pipeline.experiments.reports import sweep_report
from pipeline.results.report import make_report
from pipeline.results.uncertainty import (
    Predictions,
    fold_replicates,
    read_predictions,
    resample_counts,
)


def write_run(run_dir: Path, labels, preds, *, fold: int = 1, seed: int | None = None, classes: int | None = None,
              ids=None, uar: float | None = None) -> dict:
    """A finished run folder: predictions.csv of `labels`/`preds` and the result.json they give (real metrics);
    config.json when `seed` is given."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes = classes or int(max(labels.max(), preds.max())) + 1
    ids = ids if ids is not None else [f"clip{i:05d}" for i in range(len(labels))]
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "label", "label_name", "pred", "pred_name", "pred_2clip", "pred_2clip_name",
                    *[f"logit_c{c}" for c in range(classes)]])
        for cid, y, p in zip(ids, labels, preds):
            w.writerow([cid, int(y), f"c{y}", int(p), f"c{p}", "", "", *["0"] * classes])
    m = classification_metrics(labels.tolist(), preds.tolist(), classes)
    result = {"uar": m["uar"] if uar is None else uar, "war": m["war"], "uar_2clip": None, "war_2clip": None,
              "fold": fold, "epochs": 1, "image_size": 160, "clips_evaluated": len(labels)}
    atomic_write_json(run_dir / "result.json", result)
    if seed is not None:
        cfg = paper()
        cfg.fold, cfg.train.seed = fold, seed
        save_resolved_config(cfg, run_dir / "config.json")
    return result


def two_classes(right0: int, right1: int, n_per_class: int = 500):
    """1000 clips, 500 of each class; right on `right0` of class 0 and `right1` of class 1."""
    labels = np.repeat([0, 1], n_per_class)
    preds = labels.copy()
    preds[right0:n_per_class] = 1
    preds[n_per_class + right1:] = 0
    return labels, preds


def _ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work", tmp_path / "manifests")


# --------------------------------------------------------------------------- the resampling itself


def test_vectorised_replicates_equal_explicit_resampling_with_the_metrics_module():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    run = Predictions(Path("p.csv"), tuple(map(str, range(300))), labels, preds, None, 5)
    values, observed = fold_replicates([run], fold=2, resamples=20)
    truth = classification_metrics(labels.tolist(), preds.tolist(), 5)
    assert observed[0]["uar"] == pytest.approx(truth["uar"]) and observed[0]["war"] == pytest.approx(truth["war"])
    (counts,) = list(resample_counts(2, 300, 20))
    assert counts.shape == (20, 300) and (counts.sum(axis=1) == 300).all()
    for b in (0, 7, 19):
        idx = np.repeat(np.arange(300), counts[b].astype(int))
        m = classification_metrics(labels[idx].tolist(), preds[idx].tolist(), 5)
        assert values[0]["uar"][b] == pytest.approx(m["uar"]) and values[0]["war"][b] == pytest.approx(m["war"])
    again, _ = fold_replicates([run], fold=2, resamples=20)
    assert (again[0]["uar"] == values[0]["uar"]).all()  # fixed RNG: the same predictions, the same replicates


def test_read_predictions_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "predictions.csv"
    bad.write_text("clip_id,label\na,0\n")
    with pytest.raises(MMAError, match=r"predictions.csv: no column pred"):
        read_predictions(bad)
    bad.write_text("clip_id,label,pred\na,0,1\nb,x,1\n")
    with pytest.raises(MMAError, match=r"predictions.csv: line 3: "):
        read_predictions(bad)
    assert parse_seeds("1, 2,2,3") == [1, 2, 3] and parse_seeds(None) is None
    for bad_seeds in ("1,two", "1,\u00b2", [-1, 2], [True]):  # a word, a non-ASCII digit, negative, a bool
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad_seeds)


# --------------------------------------------------------------------------- mma report: spread and interval


def test_report_interval_of_one_seed_matches_the_binomial_closed_form(tmp_path, workspace):
    """5 folds of 1000 clips, each right on 700: WAR = 70 exactly, sd over folds 0, "1 seed", and the 95%
    interval of the 5-fold mean is 70 +- 1.96 sqrt(0.7 * 0.3 / 5000) (= +-1.27) within resampling noise."""
    runs = tmp_path / "runs" / "default"
    for k in range(1, 6):
        write_run(runs / "seed1" / f"fold{k}", *two_classes(400, 300), fold=k, seed=1)
    rep = make_report("dfew", workspace, runs_dir=runs).report
    assert rep["complete"] and rep["seeds"] == [1] and rep["seed_note"] == "1 seed"
    assert rep["mean"]["war"] == pytest.approx(70.0) and rep["std_folds"]["war"] == pytest.approx(0.0)
    assert rep["seed_spread"] is None
    low, high = rep["ci"]["war"]
    half = 1.96 * 100 * math.sqrt(0.7 * 0.3 / 5000)
    assert low == pytest.approx(70 - half, abs=0.25) and high == pytest.approx(70 + half, abs=0.25)
    assert set(rep["ci"]) == {"uar", "war"}  # no 2-clip predictions were written
    assert rep["bootstrap"] == {"resamples": 1000, "rng_seed": 0, "level": 0.95,
                                "over": "test clips, resampled within each fold"}
    md = (runs / "report.md").read_text()
    assert "| seeds | 1 seed | 1 seed | 1 seed | 1 seed | | |" in md
    ulow, uhigh = rep["ci"]["uar"]
    assert f"| 95% CI | [{ulow:.2f}, {uhigh:.2f}] | [{low:.2f}, {high:.2f}] | - | - | | test clips |" in md
    assert make_report("dfew", workspace, runs_dir=runs).report["ci"] == rep["ci"]  # fixed RNG seed
    rows = {r[0]: r for r in csv.reader((runs / "report.csv").open())}
    assert rows["ci_low"][2] == f"{low:.4f}" and rows["sd_folds"][2] == "0.0000" and rows["seeds_mean"][7] == "1 seed"
    assert make_report("dfew", workspace, runs_dir=runs, bootstrap=0).report["ci"] is None
    with pytest.raises(ConfigError, match="--bootstrap -1"):
        make_report("dfew", workspace, runs_dir=runs, bootstrap=-1)


def test_report_over_seeds_reads_the_layout_before_seeds(tmp_path):
    """Seed 1 in the old layout (runs/<name>/fold<k>), seed 2 in seed2/: both are found, the mean is the mean
    of the two 5-fold means, and the spread over seeds is their sample std."""
    ws = _ws(tmp_path)
    runs = ws.runs_dir("dfew") / "default"
    wars = {1: (700, 740), 2: (720, 760)}  # right clips of 1000 on folds 1-5 ramp between these
    for seed, (lo, hi) in wars.items():
        for k in range(1, 6):
            right = lo + (hi - lo) * (k - 1) // 4
            fold_dir = runs / f"fold{k}" if seed == 1 else runs / "seed2" / f"fold{k}"
            labels = np.zeros(1000, dtype=int)
            labels[500:] = 1
            preds = labels.copy()
            preds[right:] = 1 - preds[right:]
            write_run(fold_dir, labels, preds, fold=k, seed=seed)
    assert {s: sorted(f) for s, f in run_folders(runs).items()} == {1: [1, 2, 3, 4, 5], 2: [1, 2, 3, 4, 5]}
    assert ws.run_dir("dfew", "other", 1, 1) == ws.runs_dir("dfew") / "other" / "seed1" / "fold1"
    assert ws.run_dir("dfew", "default", 3, 1) == runs / "fold3"  # the old layout holds seed 1: it is used
    assert ws.run_dir("dfew", "default", 3, 2) == runs / "seed2" / "fold3"
    assert ws.run_dir("dfew", "default", 3, 3) == runs / "seed3" / "fold3"
    rep = make_report("dfew", ws).report  # the runs folder found on its own: the dataset's only run
    assert rep["complete"] and rep["seeds"] == [1, 2] and rep["folds_ok"] == 10
    means = [sum(lo + (hi - lo) * (k - 1) // 4 for k in range(1, 6)) / 50 for lo, hi in wars.values()]
    assert rep["mean"]["war"] == pytest.approx(sum(means) / 2)
    assert rep["seed_spread"]["war"]["std"] == pytest.approx(abs(means[0] - means[1]) / math.sqrt(2))
    assert [p["seed"] for p in rep["per_seed"]] == [1, 2] and rep["per_seed"][1]["mean"]["war"] == pytest.approx(means[1])
    low, high = rep["ci"]["war"]
    assert low < rep["mean"]["war"] < high
    md = (runs / "report.md").read_text()
    spread = rep["seed_spread"]["war"]
    assert f"{spread['mean']:.2f} ± {spread['std']:.2f}" in md and "| seed2 fold5 |" in md and "x 2 seeds" in md


def test_report_withholds_the_interval_when_predictions_do_not_back_result_json(tmp_path, workspace):
    runs = tmp_path / "runs" / "default"
    for k in range(1, 6):
        write_run(runs / "seed1" / f"fold{k}", *two_classes(400, 300), fold=k, uar=70.0 if k != 4 else 71.0)
    rep = make_report("dfew", workspace, runs_dir=runs).report
    assert rep["complete"] and rep["ci"] is None
    assert rep["ci_note"] == "fold4 (seed 1): predictions.csv gives uar 70.00, result.json 71.00"


# --------------------------------------------------------------------------- sweep report: paired comparisons


def _fusion_run(ws: Workspace, row: str, fold: int, labels, preds, seed: int = 1, **kw) -> dict:
    return write_run(ws.run_dir("dfew", f"fusion-{row}", fold, seed), labels, preds, fold=fold, **kw)


def test_identical_rows_differ_by_zero_and_ten_more_right_clips_by_exactly_one_point(tmp_path):
    ws = _ws(tmp_path)
    ref = two_classes(400, 300)  # WAR 70, UAR 70
    _fusion_run(ws, "bottleneck", 1, *ref)
    _fusion_run(ws, "none", 1, *ref)  # the same predictions
    _fusion_run(ws, "add", 1, *two_classes(410, 300))  # right on 10 more clips of 1000 (all of class 0)
    report = sweep_report(ws, "dfew", "fusion", bootstrap=1000)
    rows = {r["row"]: r for r in report["rows"]}
    assert report["reference"] == "bottleneck" and rows["bottleneck"]["comparison"]["reference"]
    same = rows["none"]["comparison"]
    for m in ("uar", "war"):
        assert same[m]["diff"] == 0.0 and same[m]["low"] <= 0.0 <= same[m]["high"] and not same[m]["excludes_zero"]
    better = rows["add"]["comparison"]
    # WAR: +10/1000 = +1 point; UAR: +10/500 on one of two classes = +1 point. The replicates' difference is
    # 100 x Binomial(1000, 0.01) / 1000 for WAR: its 2.5-97.5 % quantiles are 0.4 and 1.6.
    assert better["war"]["diff"] == pytest.approx(1.0, abs=1e-12)
    assert better["uar"]["diff"] == pytest.approx(1.0, abs=1e-12)
    assert 0.3 <= better["war"]["low"] <= 0.6 and 1.4 <= better["war"]["high"] <= 1.8
    assert better["war"]["excludes_zero"] and better["uar"]["excludes_zero"]
    md = (ws.sweeps_dir("dfew") / "fusion" / "report.md").read_text()
    add_line = next(line for line in md.splitlines() if line.startswith("| ADD |"))
    assert f"| +1.00 [{better['war']['low']:+.2f}, {better['war']['high']:+.2f}] † |" in add_line
    none_line = next(line for line in md.splitlines() if line.startswith("| None |"))
    assert "| +0.00 [+0.00, +0.00] |" in none_line and "†" not in none_line
    header = next(r for r in csv.reader((ws.sweeps_dir("dfew") / "fusion" / "report.csv").open()))
    saved = json.loads((ws.sweeps_dir("dfew") / "fusion" / "report.json").read_text())
    assert "diff_war_excludes_zero" in header and saved["rows"][3]["comparison"]["war"]["excludes_zero"]

    flipped = sweep_report(ws, "dfew", "fusion", against="add")
    back = {r["row"]: r for r in flipped["rows"]}["bottleneck"]["comparison"]
    assert back["against"] == "add" and back["war"]["diff"] == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(MMAError, match="--against d128: not a row of fusion"):
        sweep_report(ws, "dfew", "fusion", against="d128")


def test_reference_row_with_a_missing_fold_is_not_compared(tmp_path):
    ws = _ws(tmp_path)
    for k in (1, 2):
        _fusion_run(ws, "none", k, *two_classes(400, 300))
    _fusion_run(ws, "bottleneck", 1, *two_classes(420, 300))
    unfinished = ws.run_dir("dfew", "fusion-bottleneck", 2)
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text('{"epoch": 1}\n')
    _fusion_run(ws, "add", 1, *two_classes(400, 300), ids=[f"other{i}" for i in range(1000)])
    _fusion_run(ws, "add", 2, *two_classes(400, 300))
    report = sweep_report(ws, "dfew", "fusion")
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["bottleneck"]["missing"] == ["fold2 unfinished"] and rows["bottleneck"]["folds_ok"] == [1]
    reason = "folds differ (this row: seed 1: folds 1,2; reference: seed 1: folds 1)"
    assert rows["none"]["comparison"] == {"against": "bottleneck", "not_compared": reason}
    assert rows["mult"]["comparison"]["not_compared"] == "no finished runs"
    md = (ws.sweeps_dir("dfew") / "fusion" / "report.md").read_text()
    none_line = next(line for line in md.splitlines() if line.startswith("| None |"))
    assert f"not compared with Fusion Bottleneck (ours): {reason}" in none_line
    assert "| not compared | not compared |" in none_line

    # the same folds, but the row was tested on other clips of fold 1
    _fusion_run(ws, "bottleneck", 2, *two_classes(400, 300))
    report = sweep_report(ws, "dfew", "fusion")
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["none"]["comparison"]["war"]["diff"] == pytest.approx(-1.0)
    assert rows["add"]["comparison"]["not_compared"] == ("test clips differ on fold1 (seed 1) "
                                                        "(same count, other clips or labels)")


def test_rows_with_other_seeds_are_not_compared(tmp_path):
    ws = _ws(tmp_path)
    for seed in (1, 2):
        _fusion_run(ws, "bottleneck", 1, *two_classes(400, 300), seed=seed)
    _fusion_run(ws, "none", 1, *two_classes(400, 300), seed=1)
    report = sweep_report(ws, "dfew", "fusion")
    assert report["seeds"] == [1, 2]
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["none"]["comparison"]["not_compared"] == "seeds differ (this row: 1; reference: 1,2)"
    assert rows["none"]["missing"] == ["seed2 fold1 not run"]
    assert rows["bottleneck"]["seed_spread"]["war"] == {"mean": pytest.approx(70.0), "std": pytest.approx(0.0), "n": 2}


def test_report_refuses_seeds_whose_configs_differ_in_more_than_the_seed(tmp_path, workspace):
    runs = tmp_path / "runs" / "default"
    for seed in (1, 2):
        for k in range(1, 6):
            write_run(runs / f"seed{seed}" / f"fold{k}", *two_classes(400, 300), fold=k, seed=seed)
    assert make_report("dfew", workspace, runs_dir=runs).report["complete"]  # the seed alone differs
    changed = json.loads((runs / "seed2" / "fold1" / "config.json").read_text())
    changed["model"]["latent_dim"] = 256
    (runs / "seed2" / "fold1" / "config.json").write_text(json.dumps(changed))
    result = make_report("dfew", workspace, runs_dir=runs)
    assert not result.complete and result.exit_code == 1
    assert result.errors == ("config of seed 2 differs from seed 1 (model.latent_dim: 128 -> 256); pass --mixed to "
                             "average anyway",)
    assert make_report("dfew", workspace, runs_dir=runs, mixed=True).report["complete"]


# --------------------------------------------------------------------------- the command line


def test_cli_report_bootstrap_sweep_against_seeds_and_a_stage_seed(tmp_path):
    from typer.testing import CliRunner

    import cli
    from pipeline.core.stage_config import ConfigRequest, resolve_stage_config

    runner = CliRunner()
    ws = _ws(tmp_path)
    base = ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir)]
    runs = ws.runs_dir("dfew") / "default"
    for k in range(1, 6):
        write_run(runs / "seed1" / f"fold{k}", *two_classes(400, 300), fold=k, seed=1)
    res = runner.invoke(cli.app, [*base, "report", "dfew", "--bootstrap", "200"])
    assert res.exit_code == 0, res.output
    saved = json.loads((runs / "report.json").read_text())
    assert saved["bootstrap"]["resamples"] == 200 and "| 95% CI | [" in res.output and "1 seed" in res.output
    assert runner.invoke(cli.app, [*base, "report", "dfew", "--bootstrap", "-1"]).exit_code == 2

    _fusion_run(ws, "bottleneck", 1, *two_classes(400, 300))
    _fusion_run(ws, "none", 1, *two_classes(410, 300))
    res = runner.invoke(cli.app, [*base, "sweep", "report", "fusion", "--dataset", "dfew", "--against", "none",
                                  "--bootstrap", "300"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("| Fusion Bottleneck (ours) |"))
    assert "| -1.00 [" in line and "†" in line
    assert json.loads((ws.sweeps_dir("dfew") / "fusion" / "report.json").read_text())["reference"] == "none"
    res = runner.invoke(cli.app, [*base, "sweep", "report", "fusion", "--dataset", "dfew", "--against", "d512"])
    assert res.exit_code == 2 and "error: --against d512: not a row of fusion" in res.output

    res = runner.invoke(cli.app, [*base, "sweep", "fusion", "--dataset", "dfew", "--preset", "tiny", "--seeds", "1,2",
                                  "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "10 job(s): 10 to run" in res.output and "fusion-none-tiny/seed2/fold1" in res.output

    # `mma train/eval --seed S` (the stage's flag wins over the global --seed): the run folder of seed S
    res = runner.invoke(cli.app, [*base, "--seed", "3", "eval", "dfew", "--fold", "2", "--seed", "2"])
    assert res.exit_code == 2
    assert f"error: {ws.runs_dir('dfew') / 'default' / 'seed2' / 'fold2' / 'last.pt'}: no checkpoint" in res.output
    assert resolve_stage_config(ConfigRequest(flags={"seed": 2}, seed=3), needs_dataset=False).train.seed == 2
    assert resolve_stage_config(ConfigRequest(seed=3, set_overrides=("train.seed=4",)),
                                needs_dataset=False).train.seed == 3


def test_eval_folder_of_a_seeded_checkpoint_names_run_seed_and_fold(tmp_path):
    from pipeline.engine.evaluate import default_eval_dir

    ws = _ws(tmp_path)
    cfg = paper()
    cfg.dataset, cfg.fold = "dfew", 3
    seeded = ws.run_dir("dfew", "default", 3, 2) / "last.pt"
    assert default_eval_dir(ws, cfg, seeded) == ws.runs_dir("dfew") / "eval" / "default_seed2_fold3" / "fold3"
    legacy = ws.runs_dir("dfew") / "default" / "fold3" / "last.pt"
    assert default_eval_dir(ws, cfg, legacy) == ws.runs_dir("dfew") / "eval" / "default_fold3" / "fold3"
