"""`mma sweep`: run a paper experiment's (row x fold) jobs through submitit, follow them, report them.

Executors:
- `slurm`: submitit's AutoExecutor; the jobs of one submission form one SLURM job array
  (`--array=0-(n-1)%parallelism`), with partition / GPUs / CPUs / memory / time from the CLI or
  the config file's `sweep:` section.
- `local`: submitit's LocalExecutor on this machine, one job at a time per GPU (one at a time
  on CPU); the command waits for the jobs, with a progress bar.

Every job is a `TrainJob` (a `submitit.helpers.Checkpointable`): it calls
`pipeline.engine.train.train_fold` in `mma train`'s run directory. When SLURM preempts it or its time
runs out, submitit calls `checkpoint()`, which requeues the same job with `resume=True`, so it
continues from the run's `last.pt`. A job whose run already holds `result.json` (with the same
config) is skipped on re-submission; one that is queued or running is not submitted twice.

State lives in `<workdir>/<dataset>/sweeps/<sweep>/`: `jobs.json` (per job: run dir, submitit
job id, log path, state), `logs/` (submitit's pickles and logs), and the report files
`report.md`, `report.csv`, `report.png` written by `mma sweep report`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import submitit

from pipeline.core.config import (
    RunConfig,
    apply_overrides,
    from_dict,
    load_config_file,
    preset,
    to_dict,
)
from pipeline.core.errors import MMAError
from pipeline.core.io import (
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_json_or,
)
from pipeline.core.paths import Workspace
from pipeline.core.plots import plot_ours_vs_paper
from pipeline.data.datasets import NUM_FOLDS
from pipeline.experiments.presets import (
    EXPERIMENTS,
    Experiment,
    Job,
    expand,
    get_experiment,
    list_experiments,
    parse_folds,
    run_name,
    sweep_id,
)

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm")
STATES = ("queued", "running", "done", "failed", "unknown", "not submitted")

# SLURM job parameters: defaults < config file `sweep:` section < CLI options.
SLURM_DEFAULTS: dict[str, Any] = {
    "partition": None,
    "gpus": 1,
    "cpus": 8,
    "mem_gb": 64,
    "time_min": 600,
    "array_parallelism": 16,
    "max_num_timeout": 3,
    "signal_delay_s": 120,
    "account": None,
    "qos": None,
    "constraint": None,
    "setup": None,
}

# sacct states -> ours (PREEMPTED / REQUEUED jobs come back: they are queued again).
_SLURM_STATES = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "PREEMPTED": "queued", "CONFIGURING": "queued", "RESIZING": "queued", "SUSPENDED": "queued",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running",
    "COMPLETED": "done", "FAILED": "failed", "CANCELLED": "failed", "TIMEOUT": "failed",
    "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed",
}


# --------------------------------------------------------------------------- the job submitit runs


class TrainJob(submitit.helpers.Checkpointable):
    """Train one fold in a submitit job; on preemption or timeout, requeue itself with resume=True."""

    def __call__(self, *, config: dict[str, Any], workdir: str, manifest_dir: str, run_dir: str,
                 resume: bool = False, force: bool = False) -> dict[str, Any]:
        from pipeline.core.logs import setup_logging
        from pipeline.engine.train import train_fold

        setup_logging(logging.INFO)
        cfg = from_dict(config, base=RunConfig())
        ws = Workspace(Path(workdir), Path(manifest_dir))
        resume = not force and (resume or (Path(run_dir) / "last.pt").exists())
        log.info("sweep job: %s fold %d -> %s (resume=%s, force=%s)", cfg.name, cfg.fold, run_dir, resume, force)
        return train_fold(cfg, ws, run_dir=run_dir, resume=resume, force=force)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The requeued job continues from last.pt (never restarts from scratch, even under --force)."""
        kwargs.update(resume=True, force=False)
        return submitit.helpers.DelayedSubmission(TrainJob(), *args, **kwargs)


def job_kwargs(job: Job, ws: Workspace, *, force: bool = False) -> dict[str, Any]:
    """The keyword arguments a TrainJob is submitted with (plain data: paths absolute, config a dict)."""
    return {"config": to_dict(job.config), "workdir": str(Path(ws.workdir).absolute()),
            "manifest_dir": str(Path(ws.manifest_dir).absolute()), "run_dir": str(Path(job.run_dir).absolute()),
            "resume": False, "force": force}


# --------------------------------------------------------------------------- configuration


def resolve_sweep_config(preset_name: str, config_file: str | Path | None, set_overrides: list[str] | None,
                         overrides: Mapping[str, Any] | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """Like `resolve_config` (preset -> file -> --set -> flags), but a `sweep:` section of the file is
    split off and returned as the SLURM parameters of the sweep."""
    cfg = preset(preset_name)
    section: dict[str, Any] = {}
    if config_file is not None:
        data = load_config_file(config_file)
        section = data.pop("sweep", None) or {}
        if not isinstance(section, dict):
            raise MMAError(f"{config_file}: the sweep section must be a mapping (partition, gpus, ...)")
        unknown = sorted(set(section) - set(SLURM_DEFAULTS))
        if unknown:
            raise MMAError(f"{config_file}: unknown key(s) sweep.{', sweep.'.join(unknown)}; "
                           f"known: {', '.join(SLURM_DEFAULTS)}")
        from_dict(data, base=cfg)
    if set_overrides:
        apply_overrides(cfg, set_overrides)
    if overrides:
        apply_overrides(cfg, dict(overrides))
    cfg.model.validate()
    return cfg, section


def slurm_parameters(cli: Mapping[str, Any] | None = None, section: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """SLURM parameters: defaults, then the config's `sweep:` section, then CLI options that were given."""
    params = dict(SLURM_DEFAULTS)
    params.update({k: v for k, v in (section or {}).items() if k in SLURM_DEFAULTS})
    params.update({k: v for k, v in (cli or {}).items() if v is not None})
    for key in ("gpus", "cpus", "mem_gb", "time_min", "array_parallelism", "max_num_timeout", "signal_delay_s"):
        try:
            params[key] = int(params[key])
        except (TypeError, ValueError):
            raise MMAError(f"sweep.{key}={params[key]!r} is not an integer") from None
        if params[key] < 0 or (key in ("cpus", "time_min", "array_parallelism") and params[key] == 0):
            raise MMAError(f"sweep.{key}={params[key]} is out of range")
    if isinstance(params["setup"], str):
        params["setup"] = [params["setup"]]
    return params


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


# --------------------------------------------------------------------------- sweep state


def sweep_dir(ws: Workspace, dataset: str, sweep: str) -> Path:
    """`<workdir>/<dataset>/sweeps/<sweep>`."""
    return ws.sweeps_dir(dataset) / sweep


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def read_state(directory: Path) -> dict[str, Any]:
    """jobs.json of a sweep ({} when none); MMAError when it is unreadable."""
    return read_json(directory / "jobs.json", default={})


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    state["updated"] = _now()
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
    """Fields where a run dir's saved config differs from the job's (num_classes comes from the data)."""
    saved_path = job.run_dir / "config.json"
    if not saved_path.exists():
        return []
    from pipeline.core.config import load_run_config
    from pipeline.engine.train import config_differences

    saved = load_run_config(saved_path)
    cfg = copy.deepcopy(job.config)
    cfg.model.num_classes = saved.model.num_classes
    return config_differences(saved, cfg)


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
        raise MMAError(f"{base / sweep}: no sweep state (jobs.json); submit it first with `mma sweep {sweep}`")
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


# --------------------------------------------------------------------------- submission


def _select_rows(experiment: Experiment, rows: str | list[str] | None) -> Experiment:
    if not rows:
        return experiment
    wanted = [r.strip() for r in (rows.split(",") if isinstance(rows, str) else rows) if r.strip()]
    known = {r.key: r for r in experiment.rows}
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise MMAError(f"--rows {','.join(unknown)}: not rows of {experiment.name}; known: {', '.join(known)}")
    return Experiment(experiment.name, experiment.table, experiment.title,
                      tuple(r for r in experiment.rows if r.key in wanted), experiment.default_folds,
                      experiment.paper_source, experiment.extra_columns, experiment.knobs)


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
        entry = recorded.get(job.key)
        if entry and entry.get("job_id"):
            st, _ = job_status(entry, entry.get("executor", "local"))
            if st in ("queued", "running"):
                plan["active"].append(job)
                continue
        plan["submit"].append(job)
    return plan


def _entry(job: Job, executor: str) -> dict[str, Any]:
    return {"row": job.row, "label": job.label, "fold": job.fold, "run_name": job.run_name,
            "run_dir": str(Path(job.run_dir).absolute()), "executor": executor, "state": "queued",
            "job_id": None, "folder": None, "log": None, "submitted": None, "finished": None, "error": None}


def submit_slurm(jobs: list[Job], ws: Workspace, directory: Path, state: dict[str, Any], params: Mapping[str, Any],
                 *, force: bool = False) -> list[Any]:
    """Submit the jobs as one SLURM job array; records job ids and log paths in jobs.json."""
    folder = directory / "logs" / "%j"
    ex = slurm_executor(folder, params, name=f"mma-{directory.name}")
    with ex.batch():
        handles = [ex.submit(TrainJob(), **job_kwargs(j, ws, force=force)) for j in jobs]
    for job, handle in zip(jobs, handles):
        entry = _entry(job, "slurm")
        entry.update(state="submitted", job_id=str(handle.job_id), folder=str(folder),
                     log=str(handle.paths.stdout), submitted=_now())
        state["jobs"][job.key] = entry
    _write_state(directory, state)
    log.info("submitted %d job(s) as SLURM array %s; logs in %s", len(jobs),
             str(handles[0].job_id).split("_")[0] if handles else "-", directory / "logs")
    return handles


def run_local(jobs: list[Job], ws: Workspace, directory: Path, state: dict[str, Any], params: Mapping[str, Any],
              *, force: bool = False, poll_s: float = 0.5) -> dict[str, int]:
    """Run the jobs with submitit's LocalExecutor, one at a time per GPU (one at a time on CPU); waits."""
    import torch

    from pipeline.core.progress import progress_bar

    folder = directory / "logs" / "%j"
    slots: list[int | None] = list(range(torch.cuda.device_count())) or [None]
    state["runner_pid"] = os.getpid()
    for job in jobs:
        state["jobs"][job.key] = _entry(job, "local")
    _write_state(directory, state)
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
                                                  log=str(handle.paths.stdout), submitted=_now(), gpu=slot)
                    _write_state(directory, state)
                    log.info("started %s (pid %s, %s); log %s", job.key, handle.job_id,
                             "CPU" if slot is None else f"GPU {slot}", handle.paths.stdout)
                    running[slot] = (job, handle)
                for slot, (job, handle) in list(running.items()):
                    if not handle.done():
                        continue
                    del running[slot]
                    entry = state["jobs"][job.key]
                    st, note = job_status(entry, "local")
                    entry.update(state=st, finished=_now(), error=None if st == "done" else note)
                    _write_state(directory, state)
                    counts["done" if st == "done" else "failed"] += 1
                    (log.info if st == "done" else log.error)("%s: %s%s (log %s)", job.key, st,
                                                               f": {note}" if note else "", entry["log"])
                    progress.advance(task)
                time.sleep(poll_s)
        except KeyboardInterrupt:
            for job, handle in running.values():
                handle.cancel()
                state["jobs"][job.key].update(state="failed", error="interrupted", finished=_now())
            _write_state(directory, state)
            raise
    return counts


# --------------------------------------------------------------------------- report


def sweep_report(ws: Workspace, dataset: str, experiment_name: str, *, preset_name: str = "paper",
                 state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The experiment's table (paper row order): mean over folds, paper numbers alongside, missing folds
    flagged. Writes report.md, report.csv and report.png into the sweep folder."""
    from pipeline.results.report import METRICS, fold_status

    experiment = get_experiment(experiment_name, dataset)
    sid = sweep_id(experiment.name, preset_name)
    directory = sweep_dir(ws, dataset, sid)
    state = dict(state) if state is not None else read_state(directory)
    recorded = state.get("jobs", {})
    rows = []
    for row in experiment.rows:
        name = run_name(experiment.name, row.key, preset_name)
        tried = {int(e["fold"]) for e in recorded.values() if e.get("run_name") == name}
        tried |= {k for k in range(1, NUM_FOLDS + 1) if ws.run_dir(dataset, name, k).is_dir()}
        folds = sorted(tried | set(experiment.default_folds))
        per_fold, missing = {}, []
        for k in folds:
            st = fold_status(ws.run_dir(dataset, name, k))
            if st["status"] == "ok":
                per_fold[k] = st["result"]
            else:
                missing.append(f"fold{k} " + ("not run" if k not in tried else st["status"]))
        mean = {m: (sum(float(r[m]) for r in per_fold.values()) / len(per_fold)
                    if per_fold and all(isinstance(r.get(m), (int, float)) for r in per_fold.values()) else None)
                for m in METRICS}
        rows.append({"row": row.key, "label": row.label, "run_name": name, "folds": folds, "ran": bool(tried),
                     "folds_ok": sorted(per_fold), "missing": missing, "mean": mean, "paper": dict(row.paper),
                     "per_fold": {k: {m: r.get(m) for m in METRICS} for k, r in per_fold.items()}})
    report = {"experiment": experiment.name, "table": experiment.table, "title": experiment.title,
              "dataset": dataset, "preset": preset_name, "sweep": sid, "paper_source": experiment.paper_source,
              "extra_columns": [list(c) for c in experiment.extra_columns], "rows": rows,
              "complete": all(r["ran"] and not r["missing"] for r in rows)}
    report["markdown"] = _report_markdown(report)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "report.md", report["markdown"])
    atomic_write_text(directory / "report.csv", _report_csv(report))
    atomic_write_json(directory / "report.json", {k: v for k, v in report.items() if k != "markdown"})
    plot_ours_vs_paper(report, directory / "report.png")
    report["files"] = [str(directory / n) for n in ("report.md", "report.csv", "report.png")]
    incomplete = [f"{r['label']}: {', '.join(r['missing'])}" for r in rows if r["ran"] and r["missing"]]
    if incomplete:
        log.warning("sweep %s: some folds are missing: %s", sid, "; ".join(incomplete))
    return report


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _report_markdown(report: Mapping[str, Any]) -> str:
    extra = report["extra_columns"]
    head = ["", "folds", "UAR", "WAR", "UAR*", "WAR*", "paper UAR", "paper WAR", "ΔUAR", "ΔWAR"]
    head += [h for h, _ in extra] + ["status"]
    lines = [f"# {report['table']}: {report['title']} ({report['dataset']}, {report['preset']} preset)", "",
             f"Ours: mean over the folds that finished (UAR/WAR in %, * = 2-clip). Paper: {report['paper_source']}.",
             "Δ = ours - paper.", "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        delta = [m[k] - p[k] if m[k] is not None and k in p else None for k in ("uar", "war")]
        cells = [r["label"], f"{len(r['folds_ok'])}/{len(r['folds'])}", *[_fmt(m[k]) for k in
                 ("uar", "war", "uar_2clip", "war_2clip")], _fmt(p.get("uar")), _fmt(p.get("war")),
                 *[("+" if d is not None and d >= 0 else "") + _fmt(d) for d in delta],
                 *[_fmt(p.get(key)) for _, key in extra],
                 "not run" if not r["ran"] else ("ok" if not r["missing"] else "MISSING: " + ", ".join(r["missing"]))]
        lines.append("| " + " | ".join(cells) + " |")
    if not report["complete"]:
        lines += ["", "Rows marked MISSING average only the folds that finished; `not run` rows were never submitted."]
    return "\n".join(lines) + "\n"


def _report_csv(report: Mapping[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    extra = [key for _, key in report["extra_columns"]]
    w.writerow(["row", "label", "folds", "folds_ok", "uar", "war", "uar_2clip", "war_2clip", "paper_uar",
                "paper_war", *[f"paper_{k}" for k in extra], "missing"])
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        w.writerow([r["row"], r["label"], " ".join(map(str, r["folds"])), " ".join(map(str, r["folds_ok"])),
                    *["" if m[k] is None else f"{m[k]:.4f}" for k in ("uar", "war", "uar_2clip", "war_2clip")],
                    p.get("uar", ""), p.get("war", ""), *[p.get(k, "") for k in extra], "; ".join(r["missing"])])
    return buf.getvalue()


# --------------------------------------------------------------------------- the command


def format_list(dataset: str = "dfew") -> str:
    """`mma sweep --list`: every experiment with its table, rows, default folds and job count."""
    lines = []
    for e in list_experiments(dataset):
        lines.append(f"{e['name']:<11} {e['table']:<8} {e['title']} — {e['jobs']} job(s): "
                     f"{len(e['rows'])} row(s) x folds {','.join(map(str, e['folds']))}")
        lines.append(f"{'':<11} rows: {' | '.join(e['rows'])}")
    return "\n".join(lines)


def _format_jobs(jobs: list[Job], plan: Mapping[str, list[Job]] | None = None) -> str:
    tag = {}
    for kind, js in (plan or {}).items():
        for j in js:
            tag[j.key] = {"submit": "to run", "done": "done (skipped)", "active": "queued/running (skipped)"}[kind]
    lines = []
    for j in jobs:
        over = ", ".join(f"{k}={v}" for k, v in j.overrides.items())
        lines.append(f"{j.key:<36} {tag.get(j.key, ''):<26} {over}  -> {j.run_dir}")
    return "\n".join(lines)


def sweep_command(*, target: list[str], list_presets: bool, dataset: str, folds: str | None, executor: str,
                  base_config: RunConfig, preset_name: str, workspace: Workspace,
                  slurm: Mapping[str, Any] | None = None, sweep_section: Mapping[str, Any] | None = None,
                  rows: str | None = None, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Dispatch `mma sweep`: --list | status [PRESET] | report PRESET | PRESET (submit/run its jobs).

    Returns {"text": what the CLI prints, "failed": number of failed jobs, ...}.
    """
    ws = workspace
    if list_presets:
        return {"text": format_list(dataset), "failed": 0}
    if not target:
        raise MMAError(f"mma sweep: give PRESET ({', '.join(EXPERIMENTS)}), `status [PRESET]` or `report PRESET`")
    verb = target[0]
    if verb == "status":
        if len(target) > 2:
            raise MMAError("mma sweep status [PRESET]: at most one preset")
        sid = sweep_id(get_experiment(target[1], dataset).name, preset_name) if len(target) == 2 else None
        status_rows = sweep_status(ws, dataset, sid)
        return {"text": format_status(status_rows), "failed": 0, "jobs": status_rows}
    if verb == "report":
        if len(target) != 2:
            raise MMAError("mma sweep report PRESET: name one preset")
        report = sweep_report(ws, dataset, target[1], preset_name=preset_name)
        text = report["markdown"] + "\n" + "\n".join(f"wrote {f}" for f in report["files"])
        return {"text": text, "failed": 0, "report": report}
    if len(target) != 1:
        raise MMAError(f"mma sweep: unexpected arguments after {verb!r}: {' '.join(target[1:])}")
    if executor not in EXECUTORS:
        raise MMAError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")

    experiment = _select_rows(get_experiment(verb, dataset), rows)
    base = copy.deepcopy(base_config)
    base.dataset = dataset
    jobs = expand(experiment, base, ws, folds=parse_folds(folds), preset_name=preset_name)
    sid = sweep_id(experiment.name, preset_name)
    directory = sweep_dir(ws, dataset, sid)
    params = slurm_parameters(slurm, sweep_section)
    state = read_state(directory) or {"sweep": sid, "experiment": experiment.name, "preset": preset_name,
                                      "dataset": dataset, "jobs": {}}
    state.setdefault("jobs", {})
    plan = plan_jobs(jobs, state, force=force)
    header = (f"sweep {sid}: {experiment.table} ({experiment.title}), {len(jobs)} job(s): {len(plan['submit'])} to "
              f"run, {len(plan['done'])} done, {len(plan['active'])} queued/running; executor {executor}")
    if dry_run:
        extra = ""
        if executor == "slurm":
            extra = "\nSLURM: " + ", ".join(f"{k}={v}" for k, v in params.items() if v is not None) + \
                    f" (one array of {len(plan['submit'])} task(s))"
        return {"text": header + "\n" + _format_jobs(jobs, plan) + extra, "failed": 0, "jobs": jobs, "plan": plan}
    state.update(executor=executor, submitted_preset=preset_name)
    log.info("%s", header)
    result: dict[str, Any] = {"failed": 0, "jobs": jobs, "plan": plan, "sweep_dir": str(directory)}
    if not plan["submit"]:
        _write_state(directory, state)
        result["text"] = header + "\nnothing to run; `mma sweep report " + experiment.name + "` for the table"
        return result
    if executor == "slurm":
        submit_slurm(plan["submit"], ws, directory, state, params, force=force)
        result["text"] = (header + f"\nsubmitted {len(plan['submit'])} SLURM array task(s); follow them with "
                          f"`mma sweep status {experiment.name}`; logs in {directory / 'logs'}")
        return result
    counts = run_local(plan["submit"], ws, directory, state, params, force=force)
    result["failed"] = counts["failed"]
    report = sweep_report(ws, dataset, experiment.name, preset_name=preset_name, state=state)
    status = format_status(sweep_status(ws, dataset, sid))
    result["text"] = status + "\n\n" + report["markdown"] + "\n" + "\n".join(f"wrote {f}" for f in report["files"])
    result["report"] = report
    return result
