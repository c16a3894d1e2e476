"""`mma predict` on synthetic mp4 files: one with audio, one without an audio track."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli


def _videos(synth_root: Path) -> tuple[Path, Path]:
    info = json.loads((synth_root / "synth.json").read_text())
    silent = next(synth_root / f["video"] for f in info["faults"] if f["kind"] == "no_audio")
    faulty = {Path(f["video"]).name for f in info["faults"]}
    normal = next(p for p in sorted(synth_root.rglob("*.mp4")) if p.name not in faulty)
    return normal, silent


def test_predict_cli_json_with_windows_and_silent_video(synth_root, tiny_checkpoint, tmp_path):
    normal, silent = _videos(synth_root)
    res = CliRunner().invoke(cli.app, ["--workdir", str(tmp_path / "w"), "--manifests", str(tmp_path / "m"),
                                       "predict", str(normal), str(silent), "--checkpoint", str(tiny_checkpoint),
                                       "--json", "--window", "0.5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["failed"] == 0 and out["classes"] == ["happiness", "sadness", "neutral", "anger"]
    by_name = {Path(v["video"]).name: v for v in out["videos"]}
    for v in by_name.values():
        assert sum(v["distribution"].values()) == pytest.approx(1.0, abs=1e-4)
        assert v["top_class"] in out["classes"]
        # 1.6 s clips in 0.5 s windows -> 4 windows covering the clip in order
        assert [w["start"] for w in v["windows"]] == [0.0, 0.5, 1.0, 1.5]
        for w in v["windows"]:
            assert sum(w["distribution"].values()) == pytest.approx(1.0, abs=1e-4)
    assert by_name[normal.name]["has_audio"] and not by_name[normal.name]["warnings"]
    assert not by_name[silent.name]["has_audio"]
    assert any("no audio" in w for w in by_name[silent.name]["warnings"])


def test_predict_table_and_missing_file(synth_root, tiny_checkpoint, tmp_path):
    normal, _ = _videos(synth_root)
    res = CliRunner().invoke(cli.app, ["--workdir", str(tmp_path / "w"), "predict", str(normal),
                                       str(tmp_path / "nope.mp4"), "--checkpoint", str(tiny_checkpoint)])
    assert res.exit_code == 1  # one of the two videos failed; the other was still predicted
    assert f"{normal}: " in res.stdout and "%" in res.stdout
    assert "nope.mp4: error:" in res.stdout and "not found" in res.stdout
