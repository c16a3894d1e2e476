"""Session fixtures: one small real dataset built once and shared by the suite.

`synth_root` is an `mma synth` dataset (MAFW layout, faulty clips included), `prepped` is
`mma prep` run on it (in-process), `sharded` is `mma shard` on that. The project's own modules are
imported plainly: one that does not import is a failure, never a skip. Tests marked `slurm` run
against a live SLURM cluster when `sinfo` answers, are skipped (with the reason) when it does not,
and fail instead of skipping when CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: tiny models on 2 shared cores run far faster without oversubscription."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

# Small enough for CI (2 CPU cores), large enough that a tiny model learns above chance.
SYNTH_CLASSES = 4
SYNTH_CLIPS_PER_CLASS = 10
SYNTH_SECONDS = 1.6
TEST_CROP_SIZE = 64


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A Workspace (workdir + manifest dir) in a session temp folder."""
    from pipeline.core.paths import Workspace

    root = tmp_path_factory.mktemp("mma")
    return Workspace(root / "work", root / "data_manifests")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small `mma synth` dataset in MAFW layout, with the faulty clips real datasets have."""
    from pipeline.data import synth

    out = tmp_path_factory.mktemp("synth") / "MAFW"
    synth.make_synth_dataset(
        out,
        layout="mafw",
        clips_per_class=SYNTH_CLIPS_PER_CLASS,
        seconds=SYNTH_SECONDS,
        classes=SYNTH_CLASSES,
        with_faults=True,
        seed=1,
    )
    return out


@pytest.fixture(scope="session")
def test_data_config():
    """DataConfig used for the shared fixtures: small crops so tests decode fast."""
    from pipeline.core.config import DataConfig

    return DataConfig(crop_size=TEST_CROP_SIZE, shard_max_clips=8, num_workers=0)


@pytest.fixture(scope="session")
def prepped(synth_root: Path, workspace, test_data_config) -> dict:
    """`mma prep synth` run in-process on `synth_root`; returns the summary."""
    from pipeline.prep import run as prep

    return prep.run_prep("synth", synth_root, workspace, test_data_config, cluster="serial")


@pytest.fixture(scope="session")
def sharded(prepped: dict, workspace, test_data_config) -> dict:
    """`mma shard synth` on the prepped data; returns the shard index."""
    from pipeline.store import shard

    return shard.run_shard("synth", workspace, test_data_config)


@pytest.fixture
def tiny_config():
    """A fresh `tiny` preset RunConfig for the synth dataset (4 classes), fold 1."""
    from pipeline.core.config import tiny

    cfg = tiny()
    cfg.dataset = "synth"
    cfg.fold = 1
    cfg.model.num_classes = SYNTH_CLASSES
    cfg.data.crop_size = TEST_CROP_SIZE
    cfg.data.num_workers = 0
    return cfg


_SLURM_KEY = pytest.StashKey[bool]()
NO_SLURM = ("no SLURM: `sinfo` does not answer (bring one up with `bash tests/cluster/slurm.sh up`, "
            "needs root + Debian)")


def _sinfo_answers() -> bool:
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """`slurm` tests run when `sinfo` answers; otherwise skipped, except on CI (CI=true), where they fail."""
    if item.get_closest_marker("slurm") is None:
        return
    if _SLURM_KEY not in item.config.stash:  # ask once per session
        item.config.stash[_SLURM_KEY] = _sinfo_answers()
    if item.config.stash[_SLURM_KEY]:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{NO_SLURM}; CI=true: the SLURM tests must run (.ci/run starts the cluster)", pytrace=False)
    pytest.skip(NO_SLURM)

