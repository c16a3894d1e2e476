"""Fixtures for the tests against the real SLURM cluster of `tests/cluster/slurm.sh`.

`slurm_prep` runs `mma prep synth --cluster slurm` once (its Dask workers are SLURM jobs) on a
small `mma synth` set; `slurm_sharded` shards that prep for the sweep tests. The jobs read and
write the same temp folders (one machine), and inherit this process's environment (sbatch's
default `--export=ALL`), PYTHONPATH included.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from typing import Any

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.paths import Workspace

CLASSES = 2
CLIPS_PER_CLASS = 5
CLIPS = CLASSES * CLIPS_PER_CLASS
PREP_WORKERS = 2


def mma(ws: Workspace, *args: str) -> Any:
    """`mma --workdir W --manifests M ARGS...` through the real Typer app."""
    return CliRunner().invoke(cli.app, ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir), *args])


def sh(*cmd: str) -> str:
    """stdout of a SLURM command (its failure is a test failure, with its stderr)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: rc {done.returncode}: {done.stderr.strip()}"
    return done.stdout


def sacct(*args: str, fields: str = "JobID,JobName%30,State,ExitCode") -> list[list[str]]:
    """`sacct -n -P -o FIELDS ARGS...` rows as lists of fields."""
    out = sh("sacct", "-n", "-P", "-o", fields, *args)
    return [line.split("|") for line in out.splitlines() if line.strip()]


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """Poll `predicate()` until it returns something truthy; fail naming `what` after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def slurm_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("slurm")
    return Workspace(root / "work", root / "manifests")


@pytest.fixture(scope="session")
def slurm_prep(slurm_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`mma synth` (2 classes x 5 clips) then `mma prep synth --cluster slurm` with 2 worker jobs."""
    root = tmp_path_factory.mktemp("slurm-synth") / "MAFW"
    made = mma(slurm_ws, "synth", "--out", str(root), "--classes", str(CLASSES),
               "--clips-per-class", str(CLIPS_PER_CLASS), "--seconds", "1")
    assert made.exit_code == 0, made.output
    since = dt.datetime.now().replace(microsecond=0) - dt.timedelta(seconds=1)
    result = mma(slurm_ws, "prep", "synth", "--root", str(root), "--cluster", "slurm",
                 "--workers", str(PREP_WORKERS), "--slurm-memory", "2GB", "--slurm-walltime", "00:10:00",
                 "--set", "data.crop_size=64")
    return {"result": result, "since": since.isoformat(), "root": root}


@pytest.fixture(scope="session")
def slurm_sharded(slurm_prep: dict[str, Any], slurm_ws: Workspace) -> Workspace:
    """The SLURM prep packed into shards (`mma shard synth`): data for the sweep jobs."""
    assert slurm_prep["result"].exit_code == 0, slurm_prep["result"].output
    sharded = mma(slurm_ws, "shard", "synth")
    assert sharded.exit_code == 0, sharded.output
    return slurm_ws
