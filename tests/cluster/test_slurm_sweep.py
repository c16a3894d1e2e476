"""`mma sweep --executor slurm` on the real scheduler: one job array, states from sacct while it
runs, `scontrol requeue` of a task that then resumes from last.pt, re-submission skips finished
jobs, and a job that fails inside SLURM shows as failed (status with its log, report row)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cluster.conftest import mma, sacct, sh, wait_for
from pipeline.core.io import read_jsonl

pytestmark = pytest.mark.slurm

# A requeued task keeps training until SLURM kills it, up to ~7 s later (submitit ignores SLURM's
# SIGTERM; KillWait is 5 s): with 4 steps an epoch (~1 s each alone on 2 cores), 20 epochs leave it
# unfinished when it is killed a few epochs in, so the rerun has something to resume.
EPOCHS = 40
BATCH = 2
FUSION = ["fusion", "--dataset", "synth", "--preset", "tiny", "--rows", "none,bottleneck", "--folds", "1"]
RESOURCES = ["--executor", "slurm", "--cpus", "1", "--gpus", "0", "--mem-gb", "2", "--time", "30", "--from", "shards"]


def _status(ws, experiment: str) -> tuple[str, dict[str, list[str]]]:
    """`mma sweep status EXPERIMENT` output and, per job key, its row's columns (sweep, job, state, id, ...)."""
    result = mma(ws, "sweep", "status", experiment, "--dataset", "synth", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] == f"{experiment}-tiny":
            rows[parts[1]] = parts
    return result.output, rows


def _squeue_state(job_id: str) -> str:
    """The task's state in squeue (one line per array task), "" when it is not there."""
    for line in sh("squeue", "-h", "-r", "-o", "%i %T").splitlines():
        jid, _, state = line.partition(" ")
        if jid == job_id:
            return state
    return ""


def test_sweep_is_one_array_requeued_task_resumes_and_resubmission_skips(slurm_sharded, tmp_path):
    ws = slurm_sharded
    conf = tmp_path / "sweep.yaml"  # the config's sweep: section reaches sbatch too
    conf.write_text("sweep:\n  partition: debug\n  setup: ['echo mma-sweep-setup-ran']\n")
    # --force on the first submission: a task SLURM requeues must still resume, not start over
    submit = ["sweep", *FUSION, *RESOURCES, "--config", str(conf), "--set", f"train.epochs={EPOCHS}",
              "--set", f"train.batch_size={BATCH}", "--set", "train.eval_two_clip=false"]
    result = mma(ws, *submit, "--force")
    assert result.exit_code == 0, result.output
    assert "submitted 2 SLURM array task(s)" in result.output
    sweep = ws.sweeps_dir("synth") / "fusion-tiny"
    jobs = json.loads((sweep / "jobs.json").read_text())["jobs"]
    none_key, bottleneck_key = "fusion-none-tiny/seed1/fold1", "fusion-bottleneck-tiny/seed1/fold1"
    assert sorted(jobs) == [bottleneck_key, none_key]
    array = jobs[none_key]["job_id"].split("_")[0]
    assert {jobs[none_key]["job_id"], jobs[bottleneck_key]["job_id"]} == {f"{array}_0", f"{array}_1"}
    assert len(list((sweep / "logs").rglob("*_submission.sh"))) == 1  # one sbatch for the whole array

    seen: dict[str, set[str]] = {none_key: set(), bottleneck_key: set()}

    def poll() -> dict[str, list[str]]:
        _, rows = _status(ws, "fusion")
        for key, parts in rows.items():
            seen[key].add(parts[2])
        return rows

    # requeue task 0 once its first checkpoint is written (and it has run for a moment)
    task0, run0 = jobs[none_key]["job_id"], Path(jobs[none_key]["run_dir"])
    wait_for(lambda: poll()[none_key][2] == "running" and (run0 / "last.pt").exists(), 180,
             f"{task0} running with a last.pt")
    time.sleep(2)  # a requeue in the same second as the first checkpoint can leave the rerun FAILED
    assert not (run0 / "result.json").exists(), "the task finished before it could be requeued"
    sh("scontrol", "requeue", task0)
    wait_for(lambda: _squeue_state(task0) == "PENDING", 60, f"{task0} PENDING after the requeue")
    rows = poll()
    assert rows[none_key][2] == "queued", rows[none_key]  # from sacct: the requeued task waits
    sh("scontrol", "update", f"jobid={task0}", "StartTime=now")  # else it waits ~2 min for its BeginTime

    wait_for(lambda: all(r[2] in ("done", "failed") for r in poll().values()), 240, "both tasks to finish")
    output, rows = _status(ws, "fusion")
    assert [rows[k][2] for k in (none_key, bottleneck_key)] == ["done", "done"], output
    assert "2 done" in output
    assert {"running", "queued", "done"} <= seen[none_key] and {"running", "done"} <= seen[bottleneck_key], seen

    # task 0 resumed from last.pt: its log (appended across both runs) says so; metrics are one run's
    log_text = " ".join(Path(jobs[none_key]["log"]).read_text().split())
    assert "DUE TO JOB REQUEUE" in log_text and "mma-sweep-setup-ran" in log_text
    assert "already finished; nothing to resume" not in log_text, "training outran the requeue: raise EPOCHS"
    resumed = re.search(r"resuming (.+?) after epoch (\d+)/" + str(EPOCHS), log_text)  # rich wraps long paths
    assert resumed and resumed.group(1).replace(" ", "") == str(run0), log_text[-3000:]
    assert 1 <= int(resumed.group(2)) < EPOCHS, resumed.group(0)
    assert [r["epoch"] for r in read_jsonl(run0 / "metrics.jsonl")] == list(range(1, EPOCHS + 1))
    for key in (none_key, bottleneck_key):
        result_json = json.loads((Path(jobs[key]["run_dir"]) / "result.json").read_text())
        assert result_json["epochs"] == EPOCHS and result_json["name"] == key.split("/")[0]

    # the options reached sbatch: sacct has the two tasks of one array with what was asked for
    tasks = sacct("-X", "-j", array, fields="JobID,JobName,Partition,ReqCPUS,ReqMem,Timelimit")
    assert sorted(t[0] for t in tasks) == [f"{array}_0", f"{array}_1"], tasks
    for _, name, partition, cpus, mem, limit in tasks:
        assert (name, partition, cpus, limit) == ("mma-fusion-tiny", "debug", "1", "00:30:00") and mem.startswith("2G")

    # result.json is written before the job exits: wait for SLURM to record both tasks COMPLETED;
    # sacct -D keeps the requeued run of task 0 next to the completed one
    wait_for(lambda: {r[0]: r[2] for r in sacct("-X", "-j", array)} == {f"{array}_0": "COMPLETED",
                                                                       f"{array}_1": "COMPLETED"},
             60, f"sacct to show array {array} COMPLETED")
    history = sacct("-D", "-X", "-j", array)
    print("\n".join("|".join(r) for r in history))
    states = [(r[0], r[2].split()[0]) for r in history]
    assert (task0, "REQUEUED") in states and (task0, "COMPLETED") in states, states
    assert (jobs[bottleneck_key]["job_id"], "COMPLETED") in states, states

    # a second submission finds both finished: nothing reaches sbatch
    again = mma(ws, *submit)
    assert again.exit_code == 0, again.output
    assert "0 to run, 2 done" in again.output and "nothing to run" in again.output
    assert json.loads((sweep / "jobs.json").read_text())["jobs"][none_key]["job_id"] == task0
    assert len(list((sweep / "logs").rglob("*_submission.sh"))) == 1


def test_a_job_failing_inside_slurm_is_failed_in_status_and_report(slurm_sharded, tmp_path):
    ws = slurm_sharded
    missing = tmp_path / "mae-face.pth"  # a valid config value that only the job can find wrong
    result = mma(ws, "sweep", "latent", "--dataset", "synth", "--preset", "tiny", "--rows", "d64", "--folds", "1",
                 *RESOURCES, "--set", f"vision_ckpt={missing}")
    assert result.exit_code == 0, result.output
    assert "submitted 1 SLURM array task(s)" in result.output
    key = "latent-d64-tiny/seed1/fold1"
    entry = json.loads((ws.sweeps_dir("synth") / "latent-tiny" / "jobs.json").read_text())["jobs"][key]

    wait_for(lambda: _status(ws, "latent")[1][key][2] == "failed", 180, f"{key} to fail")
    output, _ = _status(ws, "latent")
    line = next(ln for ln in output.splitlines() if key in ln)
    assert "failed" in line and entry["log"] in line and str(missing) in line, line
    assert "1 failed" in output
    assert str(missing) in Path(entry["log"]).read_text()  # the log named in status holds the error
    # status knows from submitit's result pickle; sacct says FAILED once the job has ended
    wait_for(lambda: sacct("-X", "-j", entry["job_id"])[0][2] == "FAILED", 60, f"sacct to show {entry['job_id']} FAILED")

    report = mma(ws, "sweep", "report", "latent", "--dataset", "synth", "--preset", "tiny")
    assert report.exit_code == 0, report.output
    row = next(ln for ln in report.output.splitlines() if ln.startswith("| 64 |"))
    assert f"MISSING: fold1 failed (job {entry['job_id']}" in row, row
