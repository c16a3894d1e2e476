"""`mma sweep` without a scheduler: SLURM parameters, submission-time checks, local end to end, report.

The SLURM executor itself (job arrays, sacct states, requeue) is tested against a real cluster in
`tests/cluster/test_slurm_sweep.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.config import tiny
from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Workspace
from pipeline.experiments.jobs import TrainJob, job_kwargs, slurm_parameters
from pipeline.experiments.sweep import (
    run_sweep,
    sweep_report,
    sweep_status,
)

runner = CliRunner()


def _tiny_synth_base():
    base = tiny()
    base.dataset = "synth"
    return base


def test_slurm_parameters_precedence_and_errors(tmp_path):
    p = slurm_parameters({"gpus": 4, "partition": None}, {"partition": "a100", "gpus": 2, "time_min": "30"})
    assert p["gpus"] == 4 and p["partition"] == "a100" and p["time_min"] == 30 and p["cpus"] == 8
    with pytest.raises(MMAError, match="sweep.mem_gb"):
        slurm_parameters({"mem_gb": "lots"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  partitoin: gpu\n")
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path / "w"), "sweep", "fusion", "--dataset", "synth",
                                     "--preset", "tiny", "--config", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"error: {bad}: unknown key(s) sweep.partitoin")


def test_bad_set_value_is_refused_before_anything_is_submitted(tmp_path):
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path / "w"), "sweep", "fusion", "--dataset", "synth",
                                     "--preset", "tiny", "--executor", "slurm", "--set", "train.lr=-1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "error: train.lr=-1.0 must be positive"
    assert not (tmp_path / "w" / "synth" / "sweeps").exists()


def test_slurm_executor_without_slurm_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path / "w"), "sweep", "fusion", "--dataset", "synth",
                                     "--preset", "tiny", "--executor", "slurm"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --executor slurm: no SLURM")


def test_cli_list_and_dry_run(tmp_path):
    result = runner.invoke(cli.app, ["sweep", "--list"])
    assert result.exit_code == 0
    for name in ("table1", "temporal", "fusion", "components", "modality", "latent", "prompts"):
        assert name in result.output
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path), "sweep", "table1", "--dataset", "dfew", "--dry-run",
                                     "--executor", "slurm", "--folds", "1,2"])
    assert result.exit_code == 0, result.output
    assert "6 job(s): 6 to run" in result.output and "table1-s224/seed1/fold2" in result.output
    assert not (tmp_path / "dfew" / "sweeps").exists()


def test_report_flags_missing_folds_and_writes_files(tmp_path):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    for k, (uar, war) in {1: (60.0, 70.0), 2: (62.0, 72.0)}.items():
        atomic_write_json(ws.run_dir("dfew", "latent-d64", k) / "result.json",
                          {"uar": uar, "war": war, "uar_2clip": uar + 1, "war_2clip": war + 1})
    unfinished = ws.run_dir("dfew", "latent-d128", 1)
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text('{"epoch": 1}\n')
    report = sweep_report(ws, "dfew", "latent")
    d64, d128, d256 = report["rows"][:3]
    assert d64["label"] == "64" and d64["folds"] == [1, 2] and d64["mean"]["uar"] == 61.0
    assert d64["paper"]["uar"] == 64.57 and not d64["missing"]
    assert d128["missing"] == ["fold1 unfinished"] and d128["mean"]["uar"] is None
    assert not d256["ran"] and not report["complete"]
    md = (ws.sweeps_dir("dfew") / "latent" / "report.md").read_text()
    assert ("| 64 | 2/2 | 1/1 | - | 61.00 | 71.00 | 62.00 | 72.00 | 1.41 | 1.41 | 1 seed | 1 seed | - | - | 64.57 | "
            "77.44 | -3.57 | -6.44 | not compared | not compared | 5.90 | ok; no interval: no predictions.csv for "
            "fold1 (seed 1), fold2 (seed 1); not compared with 128: the reference row has no finished runs |") in md
    assert "| 128 | 0/1 | 0/1 |" in md and "MISSING: fold1 unfinished" in md and "| reference | reference |" in md
    assert "| 256 | 0/1 | 0/1 |" in md and md.count("not run |") == 2
    csv_text = (ws.sweeps_dir("dfew") / "latent" / "report.csv").read_text()
    assert csv_text.splitlines()[0].startswith("row,label,folds") and len(csv_text.splitlines()) == 5
    png = ws.sweeps_dir("dfew") / "latent" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_job_kwargs_are_plain_data(tmp_path):
    from pipeline.experiments.presets import expand, get_experiment

    ws = Workspace(tmp_path / "w", tmp_path / "m")
    job = expand(get_experiment("fusion"), _tiny_synth_base(), ws, preset_name="tiny")[0]
    kw = job_kwargs(job, ws)
    json.dumps(kw)
    assert Path(kw["run_dir"]).is_absolute() and kw["config"]["name"] == "fusion-none-tiny"
    assert kw["gpus"] == 1 and job_kwargs(job, ws, gpus=4)["gpus"] == 4


def test_a_multi_gpu_job_runs_torchrun_with_one_rank_per_gpu(tmp_path):
    import sys

    from pipeline.experiments.torchrun_job import torchrun_command

    cmd = torchrun_command(tmp_path / "job.json", 8)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "8" and "--standalone" in cmd
    assert cmd[-4:] == ["-m", "pipeline.experiments.torchrun_job", "--job", str(tmp_path / "job.json")]


# --------------------------------------------------------------------------- real local runs (tiny model)


def _sweep_base(tiny_config, epochs: int):
    base = tiny_config
    base.train.epochs = epochs
    base.train.source = "shards"
    base.train.eval_two_clip = False
    return base


def test_local_sweep_runs_two_jobs_then_skips_them(sharded, workspace, tiny_config):
    base = _sweep_base(tiny_config, epochs=1)
    kwargs = dict(experiment_name="fusion", dataset="synth", folds="1", executor="local",
                  base_config=base, preset_name="tiny", workspace=workspace, rows="none,bottleneck", slurm={})
    out = run_sweep(**kwargs)
    assert out.failed == 0, out.text()
    sweep = workspace.sweeps_dir("synth") / "fusion-tiny"
    state = json.loads((sweep / "jobs.json").read_text())
    ids = {k: e["job_id"] for k, e in state["jobs"].items()}
    assert sorted(ids) == ["fusion-bottleneck-tiny/seed1/fold1", "fusion-none-tiny/seed1/fold1"]
    for key in ids:
        name = key.split("/")[0]
        result = json.loads((workspace.run_dir("synth", name, 1) / "result.json").read_text())
        assert result["name"] == name and result["epochs"] == 1
        saved = json.loads((workspace.run_dir("synth", name, 1) / "config.json").read_text())
        assert saved["model"]["fusion"] == name.split("-")[1]
    assert all(r["state"] == "done" for r in sweep_status(workspace, "synth", "fusion-tiny"))
    assert "| Fusion Bottleneck (ours) | 1/1 |" in out.text() and (sweep / "report.png").exists()

    again = run_sweep(**kwargs)  # re-submission: both finished, nothing runs
    assert "0 to run, 2 done" in again.text()
    state2 = json.loads((sweep / "jobs.json").read_text())
    assert {k: e["job_id"] for k, e in state2["jobs"].items()} == ids

    changed = _sweep_base(tiny_config, epochs=2)  # a finished run with another config is not silently reused
    with pytest.raises(MMAError, match="different config.*train.epochs"):
        run_sweep(**{**kwargs, "base_config": changed})


def test_preempted_local_job_requeues_and_resumes_from_last_pt(sharded, workspace, tiny_config, tmp_path):
    """SIGUSR2 (SLURM's preemption signal) mid-training: submitit calls checkpoint(), requeues, last.pt resumes."""
    import time

    import psutil

    from pipeline.core.io import read_jsonl
    from pipeline.experiments.presets import expand, get_experiment
    from pipeline.experiments.executors import local_executor
    from pipeline.experiments.jobs import slurm_parameters

    base = _sweep_base(tiny_config, epochs=3)
    job = expand(get_experiment("fusion"), base, workspace, folds=[1], preset_name="tiny")[3]  # ADD row
    ex = local_executor(tmp_path / "logs" / "%j", slurm_parameters({"time_min": 10}), None)
    handle = ex.submit(TrainJob(), **job_kwargs(job, workspace))
    last = job.run_dir / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and not handle.done():
        time.sleep(0.05)
    assert last.exists(), handle.stdout()
    (task,) = psutil.Process(int(handle.job_id)).children()
    task.send_signal(__import__("signal").SIGUSR2)
    while not handle.done() and time.time() < deadline:
        time.sleep(0.2)
    result = handle.result()
    assert result["epochs"] == 3
    logs = handle.stdout() or ""
    assert "preempted" in logs and "resuming" in logs, logs[-3000:]
    assert [r["epoch"] for r in read_jsonl(job.run_dir / "metrics.jsonl")] == [1, 2, 3]
