"""The Typer CLI: help lists every stage, global options, and one-line error paths."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import cli
from pipeline.results.report import ReportResult

runner = CliRunner()

STAGES = ["prep", "shard", "cache", "train", "eval", "report", "predict", "sweep", "demo", "synth", "model", "weights"]


def test_help_lists_every_stage():
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0, result.output
    for stage in STAGES:
        assert f" {stage} " in result.output, stage


def test_model_group_lists_its_commands():
    result = runner.invoke(cli.app, ["model", "--help"])
    assert result.exit_code == 0
    assert "summary" in result.output and "import-official" in result.output


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "model"])
def test_each_stage_has_help(stage):
    result = runner.invoke(cli.app, [stage, "--help"])
    assert result.exit_code == 0, result.output


def test_global_options_are_documented():
    result = runner.invoke(cli.app, ["--help"])
    for option in ("--workdir", "--log-level", "--seed", "MMA_WORKDIR"):
        assert option in result.output


def test_bad_log_level_is_a_one_line_error():
    result = runner.invoke(cli.app, ["--log-level", "LOUD", "report", "synth"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --log-level 'LOUD'")


def test_fold_out_of_range_is_rejected():
    result = runner.invoke(cli.app, ["train", "synth", "--fold", "9"])
    assert result.exit_code != 0
    assert "--fold" in result.output


def test_bad_config_value_is_a_one_line_error(tmp_path):
    result = runner.invoke(
        cli.app, ["--workdir", str(tmp_path), "train", "synth", "--fold", "1", "--fusion", "sum"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.fusion='sum' is not one of")


def test_missing_config_file_names_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(cli.app, ["train", "synth", "--fold", "1", "--config", str(missing)])
    assert result.exit_code == 2
    assert str(missing) in result.output and result.output.startswith("error:")


def test_workdir_from_environment(monkeypatch, tmp_path):
    seen = {}

    def fake_report(dataset, ws, runs_dir=None, **options):
        seen["workdir"] = ws.workdir
        return ReportResult({"refused": []}, "| fold | UAR |")

    import pipeline.results.report

    monkeypatch.setattr(pipeline.results.report, "make_report", fake_report)
    result = runner.invoke(cli.app, ["report", "synth"], env={"MMA_WORKDIR": str(tmp_path / "w")})
    assert result.exit_code == 0, result.output
    assert seen["workdir"] == tmp_path / "w"


def test_only_the_projects_errors_become_one_line(monkeypatch, tmp_path):
    """A bug (here a ValueError from inside a stage) keeps its traceback and exits 1; MMAError is one line."""
    import pipeline.results.report
    from pipeline.core.errors import MMAError

    def buggy(dataset, ws, runs_dir=None, **options):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(pipeline.results.report, "make_report", buggy)
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path), "report", "synth"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.output

    def refused(dataset, ws, runs_dir=None, **options):
        raise MMAError(f"{tmp_path}: a problem the user can fix\nsecond line is not printed")

    monkeypatch.setattr(pipeline.results.report, "make_report", refused)
    result = runner.invoke(cli.app, ["--workdir", str(tmp_path), "report", "synth"])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path}: a problem the user can fix\n"
