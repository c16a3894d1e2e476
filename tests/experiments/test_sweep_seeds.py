"""A real tiny sweep with two seeds (issue 23): rows x folds x seeds run locally, jobs.json keyed per
(row, seed, fold), a re-submission skips every finished run, and the report has the spread over seeds, the
bootstrap intervals and the paired comparison with the reference row on the same test clips."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.experiments.sweep import make_sweep_report, run_sweep


@pytest.mark.slow
def test_local_sweep_over_two_seeds_then_its_report(sharded, workspace, tiny_config):
    base = tiny_config
    base.train.epochs = 1
    base.train.source = "shards"
    base.train.eval_two_clip = False
    kwargs = dict(experiment_name="modality", dataset="synth", folds="1", executor="local", base_config=base,
                  preset_name="tiny", workspace=workspace, rows="vision,both", slurm={}, seeds="1,2")
    out = run_sweep(**kwargs)
    assert out.failed == 0 and out.jobs == 4, out.summary
    sweep = workspace.sweeps_dir("synth") / "modality-tiny"
    state = json.loads((sweep / "jobs.json").read_text())
    assert sorted(state["jobs"]) == [f"modality-{r}-tiny/seed{s}/fold1" for r in ("both", "vision") for s in (1, 2)]
    assert state["seeds"] == [1, 2] and {e["seed"] for e in state["jobs"].values()} == {1, 2}
    for row in ("vision", "both"):
        for seed in (1, 2):
            run_dir = workspace.runs_dir("synth") / f"modality-{row}-tiny" / f"seed{seed}" / "fold1"
            assert workspace.run_dir("synth", f"modality-{row}-tiny", 1, seed) == run_dir
            assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == seed
            assert (run_dir / "predictions.csv").is_file() and (run_dir / "result.json").is_file()

    again = run_sweep(**kwargs)  # re-submission: every (row, seed, fold) finished, nothing runs
    assert "0 to run, 4 done" in again.summary and again.submitted == 0

    report = make_sweep_report(workspace, "synth", "modality", preset_name="tiny", bootstrap=200).report
    rows = {r["row"]: r for r in report["rows"]}
    assert report["seeds"] == [1, 2] and report["reference"] == "both"
    for key in ("vision", "both"):
        r = rows[key]
        results = [json.loads((workspace.run_dir("synth", r["run_name"], 1, s) / "result.json").read_text())
                   for s in (1, 2)]
        assert r["seeds_ok"] == [1, 2] and not r["missing"]
        assert r["mean"]["war"] == pytest.approx(sum(x["war"] for x in results) / 2)
        assert r["seed_spread"]["war"]["n"] == 2
        assert r["seed_spread"]["war"]["std"] == pytest.approx(abs(results[0]["war"] - results[1]["war"]) / 2 ** 0.5)
        low, high = r["ci"]["war"]
        assert low <= r["mean"]["war"] <= high
    vs = rows["vision"]["comparison"]
    assert vs["against"] == "both" and "not_compared" not in vs
    assert vs["war"]["diff"] == pytest.approx(rows["vision"]["mean"]["war"] - rows["both"]["mean"]["war"])
    assert vs["war"]["low"] <= vs["war"]["diff"] <= vs["war"]["high"]
    assert rows["audio"]["comparison"]["not_compared"] == "no finished runs"
    md = (sweep / "report.md").read_text()
    assert "| Vision only | 1/1 | 2/2 |" in md and "| MMA-DFER | 1/1 | 2/2 |" in md and "| reference | reference |" in md
    assert (sweep / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_expand_over_seeds_and_a_jobs_json_written_before_seeds(tmp_path):
    from pipeline.core.config import tiny
    from pipeline.core.paths import Workspace
    from pipeline.experiments.presets import expand, get_experiment
    from pipeline.experiments.state import entry_for, plan_jobs, record_entry

    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    base = tiny()
    base.dataset = "synth"
    jobs = expand(get_experiment("fusion"), base, ws, folds=[1, 2], preset_name="tiny", seeds=[1, 2, 3])
    assert len(jobs) == 5 * 2 * 3 and len({j.key for j in jobs}) == 30
    job = next(j for j in jobs if j.row == "add" and j.fold == 2 and j.seed == 3)
    assert job.key == "fusion-add-tiny/seed3/fold2" and job.config.train.seed == 3
    assert job.run_dir == ws.runs_dir("synth") / "fusion-add-tiny" / "seed3" / "fold2"
    assert {j.seed for j in expand(get_experiment("fusion"), base, ws, preset_name="tiny")} == {base.train.seed}

    # jobs.json of an older sweep: keyed without the seed; the job still running there is not submitted twice
    seed1 = next(j for j in jobs if j.row == "add" and j.fold == 2 and j.seed == 1)
    old = {k: v for k, v in entry_for(seed1, "local").items() if k != "seed"}
    old.update(job_id=str(os.getpid()), folder=str(tmp_path / "logs"))  # a live process: the job is running
    state = {"jobs": {"fusion-add-tiny/fold2": old}}
    plan = plan_jobs([seed1, job], state)
    assert [j.key for j in plan["active"]] == [seed1.key] and [j.key for j in plan["submit"]] == [job.key]
    record_entry(state, seed1, entry_for(seed1, "local"))
    assert list(state["jobs"]) == [seed1.key] and state["jobs"][seed1.key]["seed"] == 1
