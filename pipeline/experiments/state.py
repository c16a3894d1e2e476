"""A sweep's state on disk and the state of each of its jobs.

`<workdir>/<dataset>/sweeps/<sweep>/jobs.json` records per job (keyed `<run name>/seed<s>/fold<k>`)
its row, fold, seed, run dir, submitit job id, log path and last known state; a job's live state comes from its run dir (`result.json`),
submitit's result pickle, `sacct` (SLURM) or its process (local). `plan_jobs` decides what a
(re-)submission runs: finished runs and queued/running jobs are skipped.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping

import submitit

from pipeline.core.config import load_run_config
from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json, read_json, read_json_or
from pipeline.core.paths import Workspace
from pipeline.core.seeds import DEFAULT_SEED
from pipeline.engine.train import config_differences
from pipeline.experiments.presets import Job

EXECUTORS = ("local", "slurm")
STATES = ("queued", "running", "done", "failed", "unknown", "not submitted")

# sacct states -> ours (PREEMPTED / REQUEUED jobs come back: they are queued again).
_SLURM_STATES = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "PREEMPTED": "queued", "CONFIGURING": "queued", "RESIZING": "queued", "SUSPENDED": "queued",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
    "COMPLETED": "done", "FAILED": "failed", "CANCELLED": "failed", "TIMEOUT": "failed",
    "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed",
}



def follow_up_command(verb: str, experiment: str, dataset: str, preset_name: str) -> str:
    """The `mma sweep [status|report] EXPERIMENT` command for this sweep, as the user should type it
    (verb "" is the submission itself)."""
    parts = ["mma sweep", *([verb] if verb else []), experiment, "--dataset", dataset]
    if preset_name != "paper":
        parts += ["--preset", preset_name]
    return " ".join(parts)


def sweep_dir(ws: Workspace, dataset: str, sweep: str) -> Path:
    """`<workdir>/<dataset>/sweeps/<sweep>`."""
    return ws.sweeps_dir(dataset) / sweep


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def read_state(directory: Path) -> dict[str, Any]:
    """jobs.json of a sweep ({} when none); MMAError when it is unreadable."""
    return read_json(directory / "jobs.json", default={})


def write_state(directory: Path, state: dict[str, Any]) -> None:
    state["updated"] = now()
    atomic_write_json(directory / "jobs.json", state)


def _job_paths(entry: Mapping[str, Any]) -> submitit.core.utils.JobPaths:
    return submitit.core.utils.JobPaths(entry["folder"], job_id=str(entry["job_id"]), task_id=0)


def _result_outcome(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """("success"|"error", detail) from submitit's result pickle of a job, None when there is none."""
    if not entry.get("job_id") or not entry.get("folder"):
        return None
    path = _job_paths(entry).result_pickle
    if not path.exists():
        return None
    try:
        outcome, payload = submitit.core.utils.pickle_load(path)
    except Exception as exc:  # a torn pickle of a killed job
        return "error", f"unreadable result {path.name} ({type(exc).__name__})"
    if outcome == "error":
        lines = [ln for ln in str(payload).strip().splitlines() if ln.strip()]
        return "error", lines[-1] if lines else "job raised an exception"
    return "success", ""


def _pid_alive(pid: Any) -> bool:
    try:
        import psutil

        return bool(pid) and psutil.pid_exists(int(pid))
    except (ImportError, ValueError):
        return False


def _finished_result(run_dir: Path) -> dict[str, Any] | None:
    return read_json_or(run_dir / "result.json", None)


def _config_conflict(job: Job) -> list[str]:
    """Fields where a run dir's saved config differs from the job's (the label set, hence model.num_classes,
    is the data's: the trainer sets it, a job's config does not know it yet)."""
    saved_path = job.run_dir / "config.json"
    if not saved_path.exists():
        return []
    return config_differences(load_run_config(saved_path), job.config, ignore=("model.num_classes",))


def job_status(entry: Mapping[str, Any], executor: str) -> tuple[str, str]:
    """(state, note) of one recorded job, from its run dir, submitit's result pickle, sacct or its pid."""
    result = _finished_result(Path(entry["run_dir"]))
    if result is not None:
        return "done", f"UAR {result.get('uar', 0):.2f} WAR {result.get('war', 0):.2f}"
    if not entry.get("job_id"):
        return ("queued", "waiting for a free slot") if entry.get("state") == "queued" else ("not submitted", "")
    outcome = _result_outcome(entry)
    if outcome is not None and outcome[0] == "error":
        return "failed", outcome[1]
    if executor == "slurm":
        try:
            raw = submitit.SlurmJob(folder=entry["folder"], job_id=str(entry["job_id"])).state
        except Exception as exc:  # sacct missing or unparsable
            return "unknown", f"sacct: {type(exc).__name__}"
        key = str(raw).split()[0].upper() if raw else "UNKNOWN"
        state = _SLURM_STATES.get(key, "unknown")
        if state == "done":  # COMPLETED without result.json: the job ended without finishing the run
            return "failed", "job completed but wrote no result.json"
        return state, key.lower()
    # local: the job's controller process is alive while it runs
    if _pid_alive(entry["job_id"]):
        return "running", f"pid {entry['job_id']}"
    if outcome is not None:
        return "failed", "job ended without result.json"
    return "failed", "interrupted (no live process, no result)"


def sweep_status(ws: Workspace, dataset: str, sweep: str | None = None) -> list[dict[str, Any]]:
    """Per job of one sweep (or every sweep of the dataset): sweep, key, state, note, job id, log path."""
    base = ws.sweeps_dir(dataset)
    names = [sweep] if sweep else sorted(p.name for p in base.glob("*") if (p / "jobs.json").exists())
    if sweep and not (base / sweep / "jobs.json").exists():
        experiment, _, preset_name = sweep.rpartition("-")
        raise MMAError(f"{base / sweep}: no sweep state (jobs.json); submit it first with "
                       f"`{follow_up_command('', experiment or sweep, dataset, preset_name or 'paper')}`")
    rows = []
    for name in names:
        state = read_state(base / name)
        for key, entry in state.get("jobs", {}).items():
            st, note = job_status(entry, entry.get("executor", state.get("executor", "local")))
            rows.append({"sweep": name, "job": key, "state": st, "note": note, "job_id": entry.get("job_id"),
                         "log": entry.get("log"), "run_dir": entry.get("run_dir")})
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `sweep_status` rows with a per-state count."""
    if not rows:
        return "no sweeps"
    head = ("sweep", "job", "state", "job id", "note", "log")
    table = [head] + [(r["sweep"], r["job"], r["state"], str(r["job_id"] or "-"), r["note"] or "", r["log"] or "-")
                      for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


def plan_jobs(jobs: list[Job], state: Mapping[str, Any], *, force: bool = False) -> dict[str, list[Job]]:
    """Split jobs into submit / done (finished run with this config) / active (queued or running)."""
    plan: dict[str, list[Job]] = {"submit": [], "done": [], "active": []}
    recorded = state.get("jobs", {})
    for job in jobs:
        if force:
            plan["submit"].append(job)
            continue
        diffs = _config_conflict(job)
        if diffs:
            raise MMAError(f"{job.run_dir}: holds a run with a different config ({'; '.join(diffs[:3])}); "
                           "pass --force to retrain it")
        if _finished_result(job.run_dir) is not None:
            plan["done"].append(job)
            continue
        entry = recorded_entry(recorded, job)
        if entry and entry.get("job_id"):
            st, _ = job_status(entry, entry.get("executor", "local"))
            if st in ("queued", "running"):
                plan["active"].append(job)
                continue
        plan["submit"].append(job)
    return plan


def recorded_entry(recorded: Mapping[str, Any], job: Job) -> Mapping[str, Any] | None:
    """The jobs.json entry of `job`: under its key, else (a jobs.json written before seeds were part of the
    key) the entry recorded for the same run dir."""
    entry = recorded.get(job.key)
    if entry is not None:
        return entry
    run_dir = str(Path(job.run_dir).absolute())
    return next((e for e in recorded.values() if e.get("run_dir") == run_dir), None)


def record_entry(state: dict[str, Any], job: Job, entry: dict[str, Any]) -> None:
    """Put `entry` under `job.key` in the state's jobs, dropping an entry recorded for the same run dir under
    another key (a jobs.json written before seeds were part of the key)."""
    jobs = state.setdefault("jobs", {})
    for key in [k for k, e in jobs.items() if k != job.key and e.get("run_dir") == entry.get("run_dir")]:
        del jobs[key]
    jobs[job.key] = entry


def entry_seed(entry: Mapping[str, Any]) -> int:
    """The seed a jobs.json entry trains (the default seed for an entry written before seeds were recorded)."""
    return int(entry.get("seed", DEFAULT_SEED))


def entry_for(job: Job, executor: str) -> dict[str, Any]:
    return {"row": job.row, "label": job.label, "fold": job.fold, "seed": job.seed, "run_name": job.run_name,
            "run_dir": str(Path(job.run_dir).absolute()), "executor": executor, "state": "queued",
            "job_id": None, "folder": None, "log": None, "submitted": None, "finished": None, "error": None}
