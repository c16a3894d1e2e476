"""`mma check`: a synthetic MAFW copy (published ids) passes as a subset; a removed test clip, a
relabelled clip and an unreadable video are named and exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.data.published import read_published_split
from pipeline.data.synth import make_synth_dataset

runner = CliRunner()
SPLITS = Path("Train & Test Set") / "single" / "no_caption"


@pytest.fixture(scope="module")
def mafw_copy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check") / "MAFW"
    make_synth_dataset(out, layout="mafw", clips_per_class=5, seconds=0.4, classes=2, published_ids=True)
    return out


def _check(tmp_path: Path, root: Path):
    return runner.invoke(cli.app, ["--workdir", str(tmp_path / "work"), "check", "mafw", "--root", str(root)])


def test_synthetic_subset_copy_passes_with_a_warning(mafw_copy, tmp_path):
    result = _check(tmp_path, mafw_copy)
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output and "9162 published clips not in this copy (a subset)" in result.output
    report = json.loads((tmp_path / "work" / "mafw" / "check.json").read_text())
    assert report["ok"] and report["counts"] == {"published": 9172, "listed": 10, "on_disk": 10, "probed": 10}
    published = read_published_split("mafw")
    for line in (mafw_copy / SPLITS / "set_3" / "test.txt").read_text().split():
        if line.endswith(".mp4"):
            assert published[line[:-4]].test_fold == 3


def test_removed_relabelled_and_broken_clips_are_named_and_exit_1(mafw_copy, tmp_path):
    copy = tmp_path / "MAFW"
    shutil.copytree(mafw_copy, copy)
    test_lines = (copy / SPLITS / "set_2" / "test.txt").read_text().split("\n")
    removed = test_lines[0].split()[0][:-4]
    (copy / "data" / "clips" / f"{removed}.mp4").unlink()
    relabelled, word = test_lines[1].split()
    relabelled = relabelled[:-4]
    new_word = "fear" if word != "fear" else "anger"
    for path in (copy / SPLITS).rglob("*.txt"):  # consistently in every split file, as a copy would
        path.write_text(path.read_text().replace(f"{relabelled}.mp4 {word}", f"{relabelled}.mp4 {new_word}"))
    broken = (copy / SPLITS / "set_3" / "test.txt").read_text().split()[0][:-4]
    (copy / "data" / "clips" / f"{broken}.mp4").write_bytes(b"not a video")
    (copy / "data" / "clips" / "99999.mp4").write_bytes(b"")  # in no split file: a warning only

    result = _check(tmp_path, copy)
    assert result.exit_code == 1, result.output
    summary = [line for line in result.output.splitlines() if line.startswith("check mafw:")][0]
    assert f"1 listed but missing on disk: {removed}" in summary
    assert f"1 label differs from the published split: {relabelled} (yours: {new_word}, published: {word})" in summary
    assert f"1 video does not open: {broken} (" in summary
    assert "1 videos on disk in no split file" in summary
    report = json.loads((tmp_path / "work" / "mafw" / "check.json").read_text())
    assert not report["ok"] and report["problems"]["fold_differs"]["count"] == 0
    assert report["warnings"]["unlisted_on_disk"]["first"] == ["99999"]
