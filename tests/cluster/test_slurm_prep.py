"""`mma prep --cluster slurm` on the real scheduler: the Dask workers are SLURM jobs, every clip is
processed, and no worker job is left behind."""

from __future__ import annotations

import json

import pytest

from cluster.conftest import CLIPS, PREP_WORKERS, sacct, sh, wait_for

pytestmark = pytest.mark.slurm


def test_prep_workers_are_slurm_jobs_and_every_clip_is_processed(slurm_prep, slurm_ws):
    result = slurm_prep["result"]
    assert result.exit_code == 0, result.output
    summary = json.loads((slurm_ws.prep_dir("synth") / "summary.json").read_text())
    assert summary["clips_total"] == CLIPS and summary["clips_ok"] == CLIPS, summary
    assert summary["processed"] == CLIPS and summary["clips_failed"] == 0
    clips = slurm_ws.prep_dir("synth") / "clips"
    assert sorted(p.name for p in clips.iterdir() if (p / "meta.json").exists()) == [f"{i:05d}" for i in
                                                                                     range(1, CLIPS + 1)]

    # the workers ran as SLURM jobs (sacct), with the resources asked for on the command line
    workers = [r for r in sacct("-X", "-S", slurm_prep["since"], "--name", "dask-worker",
                                fields="JobID,JobName,State,Start,ReqMem,Timelimit")]
    assert len(workers) == PREP_WORKERS, workers
    for job_id, name, state, start, req_mem, limit in workers:
        assert start not in ("Unknown", "None", ""), f"worker job {job_id} never started ({state})"
        assert req_mem.startswith("2G") and limit == "00:10:00", (job_id, req_mem, limit)

    logs = sorted(p.name for p in (slurm_ws.prep_dir("synth") / "dask-logs").glob("*.out"))
    assert logs == sorted(f"dask-worker-{w[0]}.out" for w in workers), logs  # not slurm-<id>.out in the cwd

    # closing the Dask cluster cancelled them: none is left in the queue (COMPLETING ends within KillWait)
    ids = [w[0] for w in workers]
    wait_for(lambda: not set(ids) & set(sh("squeue", "-h", "--name", "dask-worker", "-o", "%i").split()), 60,
             f"worker jobs {ids} to leave squeue")
    ended = {r[0]: r[2] for r in sacct("-X", "-j", ",".join(ids))}
    assert all(st.split()[0] in ("CANCELLED", "COMPLETED") for st in ended.values()), ended
