"""What one sweep job is: the submitit job that trains a fold, its arguments, and the sweep's
configuration (the run config plus the SLURM parameters of a config file's `sweep:` section).

A `TrainJob` is a `submitit.helpers.Checkpointable`: it calls `pipeline.engine.train.train_fold`
in `mma train`'s run directory; when its time runs out (SIGUSR2 `signal_delay_s` before the limit),
submitit calls `checkpoint()`, which requeues the same job with `resume=True`. When SLURM itself
requeues it (preemption, `scontrol requeue`), the batch script reruns the submitted call; a run dir
holding `last.pt` is then resumed (even for a `--force` submission). Either way it continues from
`last.pt`.

A job given more than one GPU (`mma sweep ... --gpus N`) runs `torchrun` inside its SLURM job: the
decided arguments go to a JSON file beside the run directory, N ranks train the fold with DDP
(`pipeline.experiments.torchrun_job`), and the job returns the result.json rank 0 wrote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import submitit

from pipeline.core.config import saved_run_config, to_dict
from pipeline.core.errors import MMAError
from pipeline.core.logs import setup_logging
from pipeline.core.paths import Workspace
from pipeline.engine.train import train_fold
from pipeline.experiments.presets import Job
from pipeline.experiments.torchrun_job import torchrun_command

log = logging.getLogger(__name__)

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


class TrainJob(submitit.helpers.Checkpointable):
    """Train one fold in a submitit job; on preemption or timeout, requeue itself with resume=True."""

    def __call__(self, *, config: dict[str, Any], workdir: str, manifest_dir: str, run_dir: str,
                 resume: bool = False, force: bool = False, gpus: int = 1) -> dict[str, Any]:
        setup_logging(logging.INFO)
        cfg = saved_run_config(config)
        ws = Workspace(Path(workdir), Path(manifest_dir))
        restarts = slurm_restart_count()
        if restarts and force:
            # requeued by SLURM itself (preemption, `scontrol requeue`): the batch script reruns the
            # submitted pickle, so --force would otherwise throw away the epochs already trained
            log.info("SLURM restart %d of a --force job: continuing from last.pt, not starting over", restarts)
            force = False
        resume = not force and (resume or (Path(run_dir) / "last.pt").exists())
        log.info("sweep job: %s fold %d -> %s (resume=%s, force=%s%s)", cfg.name, cfg.fold, run_dir, resume, force,
                 f", {gpus} GPUs under torchrun" if gpus > 1 else "")
        if gpus > 1:
            return run_under_torchrun(dict(config=config, workdir=workdir, manifest_dir=manifest_dir, run_dir=run_dir,
                                           resume=resume, force=force), gpus)
        return train_fold(cfg, ws, run_dir=run_dir, resume=resume, force=force).to_json()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The requeued job continues from last.pt (never restarts from scratch, even under --force)."""
        kwargs.update(resume=True, force=False)
        return submitit.helpers.DelayedSubmission(TrainJob(), *args, **kwargs)


def run_under_torchrun(kwargs: dict[str, Any], gpus: int) -> dict[str, Any]:
    """Train one job on `gpus` local ranks with torchrun; returns the result.json rank 0 wrote (MMAError
    naming the exit status when torchrun fails)."""
    run_dir = Path(kwargs["run_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=run_dir.parent, prefix=f".{run_dir.name}-torchrun-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(kwargs, fh)
        cmd = torchrun_command(name, gpus)
        log.info("running %s", " ".join(cmd))
        code = subprocess.run(cmd, check=False).returncode
    finally:
        Path(name).unlink(missing_ok=True)
    if code != 0:
        raise MMAError(f"{run_dir}: torchrun with {gpus} ranks exited with status {code} (see the job's log)")
    return json.loads((run_dir / "result.json").read_text())


def slurm_restart_count() -> int:
    """How often SLURM has requeued the running job (SLURM_RESTART_COUNT; 0 outside SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def job_kwargs(job: Job, ws: Workspace, *, force: bool = False, gpus: int = 1) -> dict[str, Any]:
    """The keyword arguments a TrainJob is submitted with (plain data: paths absolute, config a dict);
    `gpus` > 1 trains under torchrun with one rank per GPU."""
    return {"config": to_dict(job.config), "workdir": str(Path(ws.workdir).absolute()),
            "manifest_dir": str(Path(ws.manifest_dir).absolute()), "run_dir": str(Path(job.run_dir).absolute()),
            "resume": False, "force": force, "gpus": int(gpus)}


def sweep_section(layers: Sequence[tuple[Any, Mapping[str, Any]]]) -> dict[str, Any]:
    """The SLURM parameters of the `sweep:` sections of (source file, section) layers, later ones winning;
    MMAError naming the file for a key that is not a sweep parameter."""
    merged: dict[str, Any] = {}
    for source, section in layers:
        unknown = sorted(set(section) - set(SLURM_DEFAULTS))
        if unknown:
            raise MMAError(f"{source}: unknown key(s) sweep.{', sweep.'.join(unknown)}; "
                           f"known: {', '.join(SLURM_DEFAULTS)}")
        merged.update(section)
    return merged


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
