"""The process `torchrun` starts on every rank of a multi-GPU sweep job (`mma sweep ... --gpus N`).

`TrainJob` (pipeline.experiments.jobs) writes the job's keyword arguments to a JSON file and runs
`python -m torch.distributed.run --standalone --nproc-per-node N -m pipeline.experiments.torchrun_job
--job FILE` inside its SLURM job; every rank reads the file and calls `train_fold`, which joins the
process group torchrun describes (DDP, rank 0 writes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.core.config import saved_run_config
from pipeline.core.errors import USER_ERRORS
from pipeline.core.io import read_json
from pipeline.core.logs import setup_logging
from pipeline.core.paths import Workspace
from pipeline.engine.train import train_fold


def torchrun_command(job_file: str | Path, gpus: int) -> list[str]:
    """The command line that trains the job in `job_file` on `gpus` local GPUs (one rank each)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(gpus)),
            "-m", "pipeline.experiments.torchrun_job", "--job", str(job_file)]


def run_job_file(path: str | Path) -> dict[str, Any]:
    """Train the fold the job file describes (keys of `jobs.job_kwargs`) on this rank; returns result.json's content."""
    kw = read_json(path)  # unreadable or not JSON: one line naming the file
    ws = Workspace(Path(kw["workdir"]), Path(kw["manifest_dir"]))
    return train_fold(saved_run_config(kw["config"]), ws, run_dir=kw["run_dir"], resume=bool(kw["resume"]),
                      force=bool(kw["force"])).to_json()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one rank of a multi-GPU sweep job")
    ap.add_argument("--job", required=True, help="JSON file of the job's keyword arguments")
    args = ap.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        run_job_file(args.job)
    except USER_ERRORS as exc:  # the same one line on every rank as `mma train` prints, not a traceback each
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
