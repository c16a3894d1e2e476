"""`mma sweep`: run a paper experiment's (row x fold) jobs through submitit, follow them, report them.

Executors (`pipeline.experiments.executors`):
- `slurm`: submitit's AutoExecutor; the jobs of one submission form one SLURM job array
  (`--array=0-(n-1)%parallelism`), with partition / GPUs / CPUs / memory / time from the CLI or
  the config file's `sweep:` section.
- `local`: submitit's LocalExecutor on this machine, one job at a time per GPU (one at a time
  on CPU); the command waits for the jobs, with a progress bar.

Jobs (`pipeline.experiments.jobs`) requeue themselves on preemption and resume from `last.pt`. A
job whose run already holds `result.json` (with the same config) is skipped on re-submission; one
that is queued or running is not submitted twice (`pipeline.experiments.state`).

State lives in `<workdir>/<dataset>/sweeps/<sweep>/`: `jobs.json`, `logs/` (submitit's pickles and
logs), and the report files written by `mma sweep report` (`pipeline.experiments.reports`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

from pipeline.core.config import RunConfig
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.experiments.executors import run_local, submit_slurm
from pipeline.experiments.jobs import slurm_parameters, sweep_section
from pipeline.experiments.presets import (
    EXPERIMENTS,
    Experiment,
    Job,
    expand,
    get_experiment,
    list_experiments,
    parse_folds,
    sweep_id,
)
from pipeline.experiments.reports import sweep_report
from pipeline.experiments.state import (
    EXECUTORS,
    follow_up_command,
    format_status,
    plan_jobs,
    read_state,
    sweep_dir,
    sweep_status,
    write_state,
)

log = logging.getLogger(__name__)

__all__ = ["EXPERIMENTS", "follow_up_command", "format_list", "format_status", "resolve_sweep_id", "run_sweep",
           "sweep_preset", "sweep_report", "sweep_section", "sweep_status"]


def sweep_preset(ws: Workspace, dataset: str, sid: str, default: str) -> str:
    """The preset a sweep was submitted with (from its jobs.json), else `default`."""
    return read_state(sweep_dir(ws, dataset, sid)).get("preset") or default


def resolve_sweep_id(ws: Workspace, dataset: str, experiment_name: str, preset_name: str,
                     preset_given: bool = True) -> str:
    """The sweep folder name of `experiment_name`: for `preset_name`, or, when no preset was given and the
    dataset has exactly one sweep of that experiment, that one."""
    name = get_experiment(experiment_name, dataset).name
    sid = sweep_id(name, preset_name)
    if preset_given or (sweep_dir(ws, dataset, sid) / "jobs.json").exists():
        return sid
    found = sorted(p.name for p in ws.sweeps_dir(dataset).glob(f"{name}-*") if (p / "jobs.json").exists())
    if len(found) == 1:
        return found[0]
    if found:
        raise MMAError(f"{ws.sweeps_dir(dataset)}: {len(found)} sweeps of {name} ({', '.join(found)}); "
                       "pass --preset to choose one")
    return sid


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


def run_sweep(experiment_name: str, *, dataset: str, folds: str | None, executor: str, base_config: RunConfig,
              preset_name: str, workspace: Workspace, slurm: Mapping[str, Any] | None = None,
              sweep_section: Mapping[str, Any] | None = None, rows: str | None = None, force: bool = False,
              dry_run: bool = False) -> dict[str, Any]:
    """Expand an experiment into (row x fold) jobs and submit (SLURM) or run (local) those not done.

    Returns {"text": what the CLI prints, "failed": number of failed jobs, "jobs", "plan", ...}.
    """
    ws = workspace
    if executor not in EXECUTORS:
        raise MMAError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")

    experiment = _select_rows(get_experiment(experiment_name, dataset), rows)
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
        write_state(directory, state)
        result["text"] = header + f"\nnothing to run; `{follow_up_command('report', experiment.name, dataset, preset_name)}` for the table"
        return result
    if executor == "slurm":
        submit_slurm(plan["submit"], ws, directory, state, params, force=force)
        result["text"] = (header + f"\nsubmitted {len(plan['submit'])} SLURM array task(s); follow them with "
                          f"`{follow_up_command('status', experiment.name, dataset, preset_name)}`; logs in {directory / 'logs'}")
        return result
    counts = run_local(plan["submit"], ws, directory, state, params, force=force)
    result["failed"] = counts["failed"]
    report = sweep_report(ws, dataset, experiment.name, preset_name=preset_name, state=state)
    status = format_status(sweep_status(ws, dataset, sid))
    result["text"] = status + "\n\n" + report["markdown"] + "\n" + "\n".join(f"wrote {f}" for f in report["files"])
    result["report"] = report
    return result
