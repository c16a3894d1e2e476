"""`mma prep`, `mma shard`, `mma cache` on a small real filesystem (tmpfs) through the CLI: the refusal before
work and the full disk are one `error:` line each (exit 2), `--no-space-check` starts anyway, and the same
command after freeing space finishes (exit 0)."""

from __future__ import annotations

from fake_prep import make_fake_prep
from typer.testing import CliRunner

from cli import app
from pipeline.core.paths import Workspace
from pipeline.data.synth import make_synth_dataset


def _error_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _refused_then_full_then_done(args: list[str], fill, stage: str) -> None:
    """With the disk filled: refused (naming the estimate), then full midway with --no-space-check; then freed."""
    ballast = fill()
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    line = _error_line(refused)
    assert f"not enough disk space for {stage}" in line and "needs about" in line and "--no-space-check" in line
    full = CliRunner().invoke(app, [*args, "--no-space-check"])
    assert full.exit_code == 2, full.output
    assert f"disk full during mma {stage.split(':')[0]}" in _error_line(full)
    ballast.unlink()
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output


def test_shard_and_cache_on_a_full_disk(small_disks, tmp_path):
    disk = small_disks.mount(8 << 20)
    ws = Workspace(disk / "work", tmp_path / "manifests")
    make_fake_prep(ws)
    head = ["--workdir", str(ws.workdir), "--manifests", str(ws.manifest_dir)]
    _refused_then_full_then_done([*head, "shard", "fake", "--max-clips", "2"],
                                 lambda: small_disks.fill(disk, 400 << 10), "shard fake")
    _refused_then_full_then_done([*head, "cache", "fake", "--preset", "tiny", "--set", "data.crop_size=48",
                                  "--set", "data.shard_max_clips=2", "--cluster", "serial"],
                                 lambda: small_disks.fill(disk, 400 << 10), "cache fake")


def test_prep_on_a_full_disk(small_disks, tmp_path):
    root = tmp_path / "DFEW"
    make_synth_dataset(root, layout="dfew", clips_per_class=6, seconds=0.4, classes=1, seed=7)
    disk = small_disks.mount(4 << 20)
    args = ["--workdir", str(disk / "work"), "--manifests", str(tmp_path / "manifests"), "prep", "dfew",
            "--root", str(root), "--faces", "official", "--set", "data.crop_size=48", "--cluster", "serial"]
    _refused_then_full_then_done(args, lambda: small_disks.fill(disk, 120 << 10), "prep dfew")
