"""The README's quick start for a real dataset, verbatim, on a synthetic MAFW copy:
`mma init`, `mma check mafw`, `mma prep mafw`, `mma shard`, `mma train --fold 3`, then
`mma eval --fold 3` and `mma report`, from a folder holding only the copy and mma.yaml."""

from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

import cli
from pipeline.data.synth import make_synth_dataset

runner = CliRunner()


def mma(command: str):
    args = shlex.split(command)
    assert args[0] == "mma"
    return runner.invoke(cli.app, args[1:])


@pytest.mark.slow
def test_quick_start_commands_work_verbatim(tmp_path, monkeypatch):
    make_synth_dataset(tmp_path / "datasets" / "MAFW", layout="mafw", clips_per_class=5, seconds=0.8, classes=2,
                       published_ids=True)
    monkeypatch.chdir(tmp_path)
    for var in ("MMA_WORKDIR", "MMA_MANIFESTS", "MMA_CONFIG"):
        monkeypatch.delenv(var, raising=False)

    result = mma("mma init")
    assert result.exit_code == 0, result.output
    assert "next: mma check mafw, then mma prep mafw" in result.output
    # what a lab sets once for CPU: the tiny preset, small crops, two epochs
    text = (tmp_path / "mma.yaml").read_text().replace("preset: paper ", "preset: tiny  ")
    text += "data:\n  crop_size: 64\n  num_workers: 0\ntrain:\n  epochs: 2\n"
    (tmp_path / "mma.yaml").write_text(text)

    result = mma("mma check mafw")
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output and "published clips not in this copy" in result.output

    for command in ("mma prep mafw", "mma shard", "mma train --fold 3", "mma eval --fold 3", "mma report"):
        result = mma(command)
        assert result.exit_code == 0, (command, result.output)

    run = tmp_path / "work" / "mafw" / "runs" / "tiny" / "seed1" / "fold3"
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "mafw" and config["fold"] == 3 and config["data"]["crop_size"] == 64
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
    assert (tmp_path / "data_manifests" / "mafw" / "clips.csv").is_file()  # the project file's manifests
    assert "| fold3 |" in result.output
