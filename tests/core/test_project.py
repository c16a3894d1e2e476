"""The project file mma.yaml: parsing, precedence, dataset and root resolution, `mma init`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import cli
from pipeline.core.errors import ConfigError, MMAError
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile, load_project, resolve_dataset
from pipeline.engine.evaluate import FoldResult

runner = CliRunner()


def _prepared(ws: Workspace, name: str) -> None:
    ws.prep_dir(name).mkdir(parents=True)
    (ws.prep_dir(name) / "summary.json").write_text("{}")


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "mma.yaml"
    path.write_text("workdir: w\ndatsets: {}\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'datsets'"):
        load_project(path)
    path.write_text("datasets: {mafw: {rot: /x}}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'datasets.mafw.rot'"):
        load_project(path)


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "mma.yaml").write_text("workdir: out\ndatasets: {mafw: {root: data/MAFW}}\n")
    project = load_project(cwd=tmp_path / "lab")
    assert project.workdir == tmp_path / "lab" / "out"
    assert project.dataset_root("mafw") == tmp_path / "lab" / "data" / "MAFW"
    assert load_project(cwd=tmp_path).path is None  # no mma.yaml there


def test_resolve_dataset_order_and_errors(tmp_path):
    ws = Workspace(tmp_path / "work", tmp_path / "m")
    with pytest.raises(MMAError, match="none is prepared in .*mma prep <dataset>"):
        resolve_dataset(None, ProjectFile(), ws)
    _prepared(ws, "mafw")
    assert resolve_dataset(None, ProjectFile(), ws) == "mafw"
    _prepared(ws, "dfew")
    with pytest.raises(MMAError, match=r"several prepared \(dfew, mafw\)"):
        resolve_dataset(None, ProjectFile(), ws)
    assert resolve_dataset(None, ProjectFile(dataset="dfew"), ws) == "dfew"
    assert resolve_dataset("synth", ProjectFile(dataset="dfew"), ws) == "synth"


def test_cli_dataset_error_is_one_line_and_names_the_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["shard"], ["report"], ["train", "--fold", "3"], ["eval", "--fold", "3"]):
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no dataset named and none is prepared in work")


def test_workdir_precedence_flag_env_project_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMA_WORKDIR", raising=False)

    def workdir_in_error(args, env=None):
        result = runner.invoke(cli.app, [*args, "report"], env=env)
        assert result.exit_code == 2, result.output
        return result.output.split("none is prepared in ")[1].split(":")[0]

    assert workdir_in_error([]) == "work"
    (tmp_path / "mma.yaml").write_text("workdir: from_project\n")
    assert workdir_in_error([]) == str(tmp_path / "from_project")
    assert workdir_in_error([], env={"MMA_WORKDIR": "from_env"}) == "from_env"
    assert workdir_in_error(["--workdir", "from_flag"], env={"MMA_WORKDIR": "from_env"}) == "from_flag"
    other = tmp_path / "other.yaml"
    other.write_text("workdir: from_other\n")
    assert workdir_in_error(["--config", str(other)]) == str(tmp_path / "from_other")
    assert workdir_in_error([], env={"MMA_CONFIG": str(other)}) == str(tmp_path / "from_other")


def test_config_precedence_preset_project_file_set_flags(tmp_path, monkeypatch):
    """preset < mma.yaml < --config < --set < explicit flags, seen by the trainer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mma.yaml").write_text(
        "dataset: synth\npreset: tiny\n"
        "model: {latent_dim: 16}\ndata: {hflip_p: 0.9}\n"
        "train: {epochs: 3, lr: 0.5, batch_size: 5, weight_decay: 0.3}\n"
    )
    (tmp_path / "stage.yaml").write_text("data: {hflip_p: 0.8}\ntrain: {epochs: 4, lr: 0.25, weight_decay: 0.2}\n")
    seen = {}

    def fake_train_fold(cfg, ws, **kwargs):
        seen["cfg"] = cfg
        return FoldResult(cfg.dataset, cfg.fold, 0.0, 0.0, 0.0, 0.0, False, Path("."), {})

    import pipeline.engine.train

    monkeypatch.setattr(pipeline.engine.train, "train_fold", fake_train_fold)
    result = runner.invoke(cli.app, ["train", "--fold", "2", "--config", "stage.yaml",
                                     "--set", "train.lr=0.125", "--set", "train.weight_decay=0.1", "--epochs", "7"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.dataset == "synth" and cfg.fold == 2 and cfg.name == "tiny"  # project dataset and preset
    assert cfg.model.embed_dim == 64  # the tiny preset, untouched by any layer
    assert cfg.model.latent_dim == 16 and cfg.train.batch_size == 5  # project file
    assert cfg.data.hflip_p == 0.8  # --config over project
    assert cfg.train.weight_decay == 0.1 and cfg.train.lr == 0.125  # --set over --config over project
    assert cfg.train.epochs == 7  # explicit flag over all


def test_stage_config_rejects_workspace_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stage.yaml").write_text("workdir: elsewhere\n")
    result = runner.invoke(cli.app, ["train", "synth", "--fold", "1", "--config", "stage.yaml"])
    assert result.exit_code == 2
    assert "'workdir' is a project key" in result.output and "mma --config" in result.output


def test_prep_without_root_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["prep", "mafw"])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: no --root for mafw: no mma.yaml in {tmp_path}")
    assert "mma init" in result.output and "--root" in result.output
    (tmp_path / "mma.yaml").write_text("datasets: {dfew: {root: /data/DFEW}}\n")
    result = runner.invoke(cli.app, ["prep", "mafw"])
    assert f"{tmp_path / 'mma.yaml'} has no datasets.mafw.root" in result.output


def _fake_roots(base: Path) -> tuple[Path, Path]:
    mafw, dfew = base / "corpora" / "MAFW", base / "DFEW"
    (mafw / "Train & Test Set").mkdir(parents=True)
    (mafw / "data" / "clips").mkdir(parents=True)
    (dfew / "EmoLabel_DataSplit").mkdir(parents=True)
    (dfew / "Clip").mkdir(parents=True)
    return mafw, dfew


def test_init_writes_a_project_file_that_round_trips(tmp_path, monkeypatch):
    mafw, dfew = _fake_roots(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["init", "data"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "mma.yaml").read_text()
    assert text.startswith("# mma project file") and "# dataset: mafw" in text  # two found: commented
    raw = yaml.safe_load(text)
    assert raw["preset"] == "paper" and "dataset" not in raw
    project = load_project(cwd=tmp_path)
    assert project.dataset_root("mafw") == mafw.resolve() and project.dataset_root("dfew") == dfew.resolve()
    assert project.workdir == tmp_path / "work" and project.weights_dir == tmp_path / "work" / "weights"
    assert project.manifests == tmp_path / "data_manifests"
    again = runner.invoke(cli.app, ["init", "data"])
    assert again.exit_code == 2 and "exists (use --force" in again.output
    import shutil

    shutil.rmtree(dfew)
    forced = runner.invoke(cli.app, ["init", "data", "--force"])
    assert forced.exit_code == 0 and "next: mma check mafw" in forced.output
    assert load_project(cwd=tmp_path).dataset == "mafw"
