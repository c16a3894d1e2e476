"""`mma sweep`: run a paper experiment's (row x fold x seed) jobs through submitit, follow them, report them.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import RunConfig
from pipeline.core.errors import MMAError
from pipeline.core.folds import parse_folds
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile
from pipeline.core.results import StageResult
from pipeline.core.seeds import parse_seeds
from pipeline.core.stage_config import ConfigRequest
from pipeline.core.stage_config import preset_name as resolve_preset_name
from pipeline.core.stage_config import preset_was_given, resolve_stage_config, stage_dataset
from pipeline.experiments.executors import run_local, submit_slurm
from pipeline.experiments.jobs import slurm_parameters, sweep_section
from pipeline.experiments.presets import (
    EXPERIMENTS,
    Experiment,
    Job,
    bind_weights,
    expand,
    get_experiment,
    list_experiments,
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
from pipeline.results.uncertainty import DEFAULT_RESAMPLES

log = logging.getLogger(__name__)

__all__ = ["EXPERIMENTS", "SweepList", "SweepReport", "SweepRun", "SweepStatus", "make_sweep_report",
           "resolve_sweep_id", "run_sweep", "sweep_command", "sweep_list", "sweep_preset", "sweep_status"]


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
                      experiment.paper_source, experiment.extra_columns, experiment.knobs, experiment.reference)


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


@dataclass(frozen=True)
class SweepRun(StageResult):
    """A submission (or a local run, or a dry run) of a sweep: its jobs, what ran, what failed."""

    sweep: str
    summary: str  # what the terminal shows: the plan, or the status and the table after a local run
    jobs: int
    submitted: int
    failed: int
    sweep_dir: str
    status_command: str
    skipped: tuple[str, ...] = ()  # rows left out: their weights are not in the weights folder (with the command)

    def text(self) -> str:
        return self.summary

    @property
    def errors(self) -> tuple[str, ...]:
        if not self.failed:
            return ()
        return (f"{self.failed} sweep job(s) failed; `{self.status_command}` shows their logs",)


@dataclass(frozen=True)
class SweepStatus(StageResult):
    """Per job of one sweep (or every sweep of the dataset): sweep, job, state, note, job id, log, run dir."""

    jobs: list[dict[str, Any]]

    def text(self) -> str:
        return format_status(self.jobs)


@dataclass(frozen=True)
class SweepReport(StageResult):
    """A sweep's table: `report` is report.json's content, `markdown` report.md's, `files` what was written."""

    report: dict[str, Any]
    markdown: str
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**self.report, "files": list(self.files)}

    def text(self) -> str:
        return self.markdown + "\n" + "\n".join(f"wrote {f}" for f in self.files)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(self.report["refused"])


@dataclass(frozen=True)
class SweepList(StageResult):
    """`mma sweep --list`: every experiment with its table, rows, default folds and job count."""

    experiments: list[dict[str, Any]]

    def text(self) -> str:
        lines = []
        for e in self.experiments:
            lines.append(f"{e['name']:<11} {e['table']:<8} {e['title']} — {e['jobs']} job(s): "
                         f"{len(e['rows'])} row(s) x folds {','.join(map(str, e['folds']))}")
            lines.append(f"{'':<11} rows: {' | '.join(e['rows'])}")
        return "\n".join(lines)


def sweep_list(dataset: str = "dfew") -> SweepList:
    """The experiment presets (`mma sweep --list`)."""
    return SweepList(list_experiments(dataset))


def make_sweep_report(ws: Workspace, dataset: str, experiment_name: str, *, preset_name: str = "paper",
                      state: Mapping[str, Any] | None = None, allow_partial: bool = False,
                      mixed: bool = False, bootstrap: int = DEFAULT_RESAMPLES,
                      against: str | None = None) -> SweepReport:
    """`sweep_report` (the table, written into the sweep folder) as a stage result."""
    report = sweep_report(ws, dataset, experiment_name, preset_name=preset_name, state=state,
                          allow_partial=allow_partial, mixed=mixed, bootstrap=bootstrap, against=against)
    markdown, files = report.pop("markdown"), report.pop("files")
    return SweepReport(report, markdown, files)


def run_sweep(experiment_name: str, *, dataset: str, folds: str | None, executor: str, base_config: RunConfig,
              preset_name: str, workspace: Workspace, slurm: Mapping[str, Any] | None = None,
              sweep_section: Mapping[str, Any] | None = None, rows: str | None = None, force: bool = False,
              dry_run: bool = False, seeds: str | Sequence[int] | None = None) -> SweepRun:
    """Expand an experiment into (row x fold x seed) jobs and submit (SLURM) or run (local) those not done.

    `seeds` ("1,2,3") default to the base config's seed (the global `--seed`, else the preset's)."""
    ws = workspace
    if executor not in EXECUTORS:
        raise MMAError(f"--executor {executor!r} is not one of {', '.join(EXECUTORS)}")

    experiment, skipped_rows = bind_weights(_select_rows(get_experiment(experiment_name, dataset), rows), ws.weights)
    skipped = tuple(r.text() for r in skipped_rows)
    if not experiment.rows:
        raise MMAError(f"sweep {experiment.name}: no row has its weights in {ws.weights}: {'; '.join(skipped)}")
    base = copy.deepcopy(base_config)
    base.dataset = dataset
    jobs = expand(experiment, base, ws, folds=parse_folds(folds), preset_name=preset_name,
                  seeds=parse_seeds(seeds))
    sid = sweep_id(experiment.name, preset_name)
    directory = sweep_dir(ws, dataset, sid)
    params = slurm_parameters(slurm, sweep_section)
    state = read_state(directory) or {"sweep": sid, "experiment": experiment.name, "preset": preset_name,
                                      "dataset": dataset, "jobs": {}}
    state.setdefault("jobs", {})
    plan = plan_jobs(jobs, state, force=force)
    header = (f"sweep {sid}: {experiment.table} ({experiment.title}), {len(jobs)} job(s): {len(plan['submit'])} to "
              f"run, {len(plan['done'])} done, {len(plan['active'])} queued/running; executor {executor}")
    header += "".join(f"\n{line}" for line in skipped)
    status_command = follow_up_command("status", experiment.name, dataset, preset_name)

    def result(summary: str, submitted: int = 0, failed: int = 0) -> SweepRun:
        return SweepRun(sid, summary, len(jobs), submitted, failed, str(directory), status_command, skipped)

    if dry_run:
        extra = ""
        if executor == "slurm":
            extra = "\nSLURM: " + ", ".join(f"{k}={v}" for k, v in params.items() if v is not None) + \
                    f" (one array of {len(plan['submit'])} task(s))"
        return result(header + "\n" + _format_jobs(jobs, plan) + extra)
    state.update(executor=executor, submitted_preset=preset_name,
                 seeds=sorted(set(state.get("seeds", [])) | {j.seed for j in jobs}))
    log.info("%s", header)
    if not plan["submit"]:
        write_state(directory, state)
        report_command = follow_up_command("report", experiment.name, dataset, preset_name)
        return result(header + f"\nnothing to run; `{report_command}` for the table")
    if executor == "slurm":
        submit_slurm(plan["submit"], ws, directory, state, params, force=force)
        return result(header + f"\nsubmitted {len(plan['submit'])} SLURM array task(s); follow them with "
                      f"`{status_command}`; logs in {directory / 'logs'}", submitted=len(plan["submit"]))
    counts = run_local(plan["submit"], ws, directory, state, params, force=force)
    report = make_sweep_report(ws, dataset, experiment.name, preset_name=preset_name, state=state)
    status = format_status(sweep_status(ws, dataset, sid))
    return result(status + "\n\n" + report.text(), submitted=len(plan["submit"]), failed=counts["failed"])


def sweep_command(target: Sequence[str], *, request: ConfigRequest, project: ProjectFile, workspace: Workspace,
                  folds: str | None = None, rows: str | None = None, executor: str = "local",
                  slurm: Mapping[str, Any] | None = None, force: bool = False, dry_run: bool = False,
                  allow_partial: bool = False, mixed: bool = False, seeds: str | None = None,
                  bootstrap: int = DEFAULT_RESAMPLES, against: str | None = None) -> StageResult:
    """`mma sweep PRESET | status [PRESET] | report PRESET` for the dataset and preset `request` resolves.

    PRESET submits (or runs locally) the experiment's jobs with the config `request` resolves
    (`pipeline.core.stage_config`) for every seed of `seeds` ("1,2,3"), the SLURM options `slurm` (else the
    request's --partition, --gpus, ... flags) over the `sweep:` sections of the project file and the --config
    file; `status` follows the jobs; `report` writes the table (`bootstrap` resamples of the test clips, each
    row compared with `against` or the reference row).
    """
    ws = workspace
    stage_file = request.stage_file()
    dataset = stage_dataset(request, project, ws, stage_file)
    preset_given = preset_was_given(request, project)
    preset_name = resolve_preset_name(request, project, stage_file)
    verb, args = (target[0], list(target[1:])) if target else (None, [])
    if verb is None:
        raise MMAError(f"mma sweep: give PRESET ({', '.join(EXPERIMENTS)}), `status [PRESET]` or `report PRESET`")
    if verb == "status":
        if len(args) > 1:
            raise MMAError("mma sweep status [PRESET]: at most one preset")
        sid = resolve_sweep_id(ws, dataset, args[0], preset_name, preset_given) if args else None
        return SweepStatus(sweep_status(ws, dataset, sid))
    if verb == "report":
        if len(args) != 1:
            raise MMAError("mma sweep report PRESET: name one preset")
        sid = resolve_sweep_id(ws, dataset, args[0], preset_name, preset_given)
        return make_sweep_report(ws, dataset, args[0], preset_name=sweep_preset(ws, dataset, sid, preset_name),
                                 allow_partial=allow_partial, mixed=mixed, bootstrap=bootstrap, against=against)
    if args:
        raise MMAError(f"mma sweep: unexpected arguments after {verb!r}: {' '.join(args)}")
    base_config = resolve_stage_config(request, project, ws)
    slurm = {**request.sweep_flags(), **(slurm or {})}
    section = sweep_section([(layer.path, layer.sweep) for layer in (project, stage_file)])
    return run_sweep(verb, dataset=dataset, folds=folds, executor=executor, base_config=base_config,
                     preset_name=preset_name, workspace=ws, slurm=slurm, sweep_section=section, rows=rows,
                     force=force, dry_run=dry_run, seeds=seeds)
