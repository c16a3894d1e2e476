"""data.compat: one switch for every data-side choice (each still settable), resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.config import (
    ConfigError,
    DataConfig,
    paper,
    resolve_config,
    resolve_precision,
    resolve_run,
    tiny,
)

CHOICES = ("faces", "face_select", "audio_rate", "frame_order")


def _choices(d: DataConfig) -> tuple[str, ...]:
    return tuple(getattr(d, k) for k in CHOICES)


def test_presets_and_resolution(tmp_path: Path):
    assert paper().data.compat == "authors" and tiny().data.compat == "mma"
    assert _choices(DataConfig().resolved("mafw")) == ("detect", "track", "16k", "numeric")
    authors = DataConfig(compat="authors")
    assert _choices(authors.resolved("mafw")) == ("detect", "union", "native", "authors")
    assert _choices(authors.resolved("synth")) == ("detect", "union", "native", "numeric")
    (tmp_path / "Clip" / "clip_224x224").mkdir(parents=True)
    assert _choices(authors.resolved("dfew", tmp_path)) == ("official", "union", "native", "numeric")
    assert authors.resolved("dfew").faces == "official"  # no root (training): the preset's intent
    # each choice stays settable on its own, and resolution is idempotent
    own = DataConfig(compat="authors", face_select="track", frame_order="numeric", faces="detect")
    assert _choices(own.resolved("mafw")) == ("detect", "track", "native", "numeric")
    assert own.resolved("mafw").resolved("mafw") == own.resolved("mafw")
    with pytest.raises(ConfigError, match="data.compat='paper' is not one of mma, authors"):
        DataConfig(compat="paper").validate()


def test_dfew_without_official_frames_is_one_line_error(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        DataConfig(compat="authors").resolved("dfew", tmp_path)
    assert str(err.value) == (f"{tmp_path / 'Clip' / 'clip_224x224'}: not found; data.compat=authors uses DFEW's "
                              "official face frames: pass --faces detect to detect faces in the videos instead")
    res = CliRunner().invoke(cli.app, ["--workdir", str(tmp_path / "w"), "--manifests", str(tmp_path / "m"),
                                       "prep", "dfew", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"error: {err.value}"]


def test_precision_resolution_and_run_config():
    assert resolve_precision("auto", "authors", "cuda") == "fp32"
    assert resolve_precision("auto", "mma", "cuda") == "bf16"
    assert resolve_precision("auto", "mma", "cpu") == "fp32"
    assert resolve_precision("bf16", "authors", "cuda") == "bf16"
    cfg = resolve_config("paper", overrides={"dataset": "mafw"})
    resolve_run(cfg, "cuda")
    assert cfg.train.precision == "fp32" and _choices(cfg.data) == ("detect", "union", "native", "authors")
    cfg = resolve_run(resolve_config("tiny", overrides={"dataset": "mafw"}), "cuda")
    assert cfg.train.precision == "bf16" and _choices(cfg.data) == ("detect", "track", "16k", "numeric")
