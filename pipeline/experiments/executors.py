"""Where sweep jobs run: submitit's SLURM executor (one job array per submission; a job of more than one
GPU trains under torchrun, `pipeline.experiments.jobs`) and its local executor (one job at a time per
GPU, or one on CPU, waited for with a progress bar)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import submitit

from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.core.progress import progress_bar
from pipeline.experiments.jobs import TrainJob, job_kwargs
from pipeline.experiments.presets import Job
from pipeline.experiments.state import entry_for, job_status, now, record_entry, write_state

log = logging.getLogger(__name__)


def slurm_executor(folder: str | Path, params: Mapping[str, Any], name: str) -> submitit.AutoExecutor:
    """submitit's AutoExecutor for SLURM with the sweep's parameters (MMAError where there is no SLURM)."""
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"])
    except RuntimeError as exc:  # submitit: "Could not detect srun"
        raise MMAError(f"--executor slurm: no SLURM on this machine ({exc}); use --executor local") from None
    ex.update_parameters(
        name=name,
        timeout_min=params["time_min"],
        mem_gb=params["mem_gb"],
        cpus_per_task=params["cpus"],
        gpus_per_node=params["gpus"],
        nodes=1,
        tasks_per_node=1,
        stderr_to_stdout=True,
        slurm_partition=params["partition"],
        slurm_array_parallelism=params["array_parallelism"],
        slurm_signal_delay_s=params["signal_delay_s"],
        slurm_account=params["account"],
        slurm_qos=params["qos"],
        slurm_constraint=params["constraint"],
        slurm_setup=params["setup"],
    )
    return ex


def local_executor(folder: str | Path, params: Mapping[str, Any], gpu: int | None) -> submitit.LocalExecutor:
    """submitit's LocalExecutor running one job on GPU `gpu` (None: CPU only)."""
    ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=params["max_num_timeout"])
    ex.update_parameters(timeout_min=params["time_min"], gpus_per_node=0 if gpu is None else 1,
                         visible_gpus=() if gpu is None else (gpu,), stderr_to_stdout=True,
                         signal_delay_s=min(params["signal_delay_s"], max(1, params["time_min"] * 60 // 4)))
    return ex


def submit_slurm(jobs: list[Job], ws: Workspace, directory: Path, state: dict[str, Any], params: Mapping[str, Any],
                 *, force: bool = False) -> list[Any]:
    """Submit the jobs as one SLURM job array; records job ids and log paths in jobs.json."""
    folder = directory / "logs" / "%j"
    ex = slurm_executor(folder, params, name=f"mma-{directory.name}")
    with ex.batch():
        handles = [ex.submit(TrainJob(), **job_kwargs(j, ws, force=force, gpus=params["gpus"])) for j in jobs]
    for job, handle in zip(jobs, handles):
        entry = entry_for(job, "slurm")
        entry.update(state="submitted", job_id=str(handle.job_id), folder=str(folder),
                     log=str(handle.paths.stdout), submitted=now())
        record_entry(state, job, entry)
    write_state(directory, state)
    log.info("submitted %d job(s) as SLURM array %s; logs in %s", len(jobs),
             str(handles[0].job_id).split("_")[0] if handles else "-", directory / "logs")
    return handles


def run_local(jobs: list[Job], ws: Workspace, directory: Path, state: dict[str, Any], params: Mapping[str, Any],
              *, force: bool = False, poll_s: float = 0.5) -> dict[str, int]:
    """Run the jobs with submitit's LocalExecutor, one at a time per GPU (one at a time on CPU); waits."""
    import torch  # lazily: `mma sweep status/report` need no torch

    folder = directory / "logs" / "%j"
    slots: list[int | None] = list(range(torch.cuda.device_count())) or [None]
    state["runner_pid"] = os.getpid()
    for job in jobs:
        record_entry(state, job, entry_for(job, "local"))
    write_state(directory, state)
    pending = list(jobs)
    running: dict[int | None, tuple[Job, Any]] = {}
    counts = {"done": 0, "failed": 0}
    progress = progress_bar(f"sweep {directory.name}", len(jobs), unit="jobs")
    with progress:
        task = progress.add_task(f"sweep {directory.name}", total=len(jobs))
        try:
            while pending or running:
                for slot in slots:
                    if slot in running or not pending:
                        continue
                    job = pending.pop(0)
                    handle = local_executor(folder, params, slot).submit(TrainJob(), **job_kwargs(job, ws, force=force))
                    state["jobs"][job.key].update(state="running", job_id=str(handle.job_id), folder=str(folder),
                                                  log=str(handle.paths.stdout), submitted=now(), gpu=slot)
                    write_state(directory, state)
                    log.info("started %s (pid %s, %s); log %s", job.key, handle.job_id,
                             "CPU" if slot is None else f"GPU {slot}", handle.paths.stdout)
                    running[slot] = (job, handle)
                for slot, (job, handle) in list(running.items()):
                    if not handle.done():
                        continue
                    del running[slot]
                    entry = state["jobs"][job.key]
                    st, note = job_status(entry, "local")
                    entry.update(state=st, finished=now(), error=None if st == "done" else note)
                    write_state(directory, state)
                    counts["done" if st == "done" else "failed"] += 1
                    (log.info if st == "done" else log.error)("%s: %s%s (log %s)", job.key, st,
                                                               f": {note}" if note else "", entry["log"])
                    progress.advance(task)
                time.sleep(poll_s)
        except KeyboardInterrupt:
            for job, handle in running.values():
                handle.cancel()
                state["jobs"][job.key].update(state="failed", error="interrupted", finished=now())
            write_state(directory, state)
            raise
    return counts
