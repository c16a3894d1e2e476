"""One resolution of a stage's config (pipeline.core.stage_config), one fold concept (pipeline.core.folds),
one num_frames: what a Python caller gets is what the CLI runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from pipeline.core.config import RunConfig, saved_run_config, to_dict
from pipeline.core.errors import ConfigError
from pipeline.core.folds import FOLDS, NUM_FOLDS, check_fold, in_split, parse_folds, split_mask
from pipeline.core.project import ProjectFile, parse_project
from pipeline.core.stage_config import CONFIG_FLAGS, ConfigRequest, resolve_stage_config

runner = CliRunner()


def test_precedence_preset_project_file_set_flag(tmp_path):
    project = parse_project({"preset": "tiny", "model": {"latent_dim": 16}, "train": {"epochs": 3, "lr": 0.5}},
                            tmp_path / "mma.yaml")
    stage = tmp_path / "stage.yaml"
    stage.write_text("train: {epochs: 4, lr: 0.25, weight_decay: 0.2}\n")
    request = ConfigRequest(config_file=stage, set_overrides=("train.lr=0.125",), flags={"epochs": 7, "fold": 2},
                            dataset="synth")
    cfg = resolve_stage_config(request, project)
    assert cfg.name == "tiny" and cfg.dataset == "synth" and cfg.fold == 2
    assert cfg.model.latent_dim == 16  # project file over the preset
    assert cfg.train.weight_decay == 0.2  # --config over the project file
    assert cfg.train.lr == 0.125  # --set over --config
    assert cfg.train.epochs == 7  # an explicit flag over everything


def test_prompt_introductions_imply_three_tokens_each_unless_set():
    base = {"preset": "tiny", "dataset": "synth"}
    cfg = resolve_stage_config(ConfigRequest(**base, flags={"prompt_introductions": 4}), needs_dataset=False)
    assert cfg.model.prompt_introductions == 4 and cfg.model.num_prompts == 12
    cfg = resolve_stage_config(ConfigRequest(**base, flags={"prompt_introductions": 4},
                                             set_overrides=("model.num_prompts=8",)), needs_dataset=False)
    assert cfg.model.num_prompts == 8


def test_global_seed_wins_over_every_layer(tmp_path):
    stage = tmp_path / "stage.yaml"
    stage.write_text("train: {seed: 5}\n")
    request = ConfigRequest(preset="tiny", config_file=stage, set_overrides=("train.seed=6",), seed=9)
    assert resolve_stage_config(request, needs_dataset=False).train.seed == 9


def test_python_caller_gets_the_config_the_cli_runs(tmp_path, monkeypatch):
    """`mma model summary --json` sizes the network from resolve_stage_config's answer for the same words."""
    monkeypatch.chdir(tmp_path)
    args = ["--preset", "tiny", "--latent-dim", "12", "--prompt-introductions", "3", "--set", "model.fusion=add"]
    result = runner.invoke(cli.app, ["model", "summary", "--json", *args])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    cfg = resolve_stage_config(ConfigRequest(preset="tiny", flags={"latent_dim": 12, "prompt_introductions": 3},
                                             set_overrides=("model.fusion=add",)), ProjectFile(), needs_dataset=False)
    assert shown["config"]["latent_dim"] == cfg.model.latent_dim == 12
    assert shown["config"]["num_prompts"] == cfg.model.num_prompts == 9
    assert shown["config"]["fusion"] == cfg.model.fusion == "add"
    assert shown["config"]["num_classes"] == cfg.model.num_classes == 7  # DFEW's label set: nothing prepared here


def test_every_table_flag_is_an_option_of_some_command():
    helps = {name: runner.invoke(cli.app, [*name.split(), "--help"], terminal_width=200).output
             for name in ("prep", "shard", "cache", "train", "eval", "model summary", "sweep")}
    for flag in CONFIG_FLAGS.values():
        option = flag.option.split("/")[0]
        assert any(option in text for text in helps.values()), option
    for option in ("--image-size", "--vision-ckpt", "--audio-ckpt"):  # one spelling in every stage that takes it
        assert all(option in helps[c] for c in ("cache", "train", "eval")), option


def test_data_num_frames_is_refused_at_config_time():
    with pytest.raises(ConfigError, match="model.num_frames"):
        resolve_stage_config(ConfigRequest(preset="tiny", set_overrides=("data.num_frames=8",)), needs_dataset=False)
    result = runner.invoke(cli.app, ["model", "summary", "--set", "data.num_frames=8"])
    assert result.exit_code == 2 and "set model.num_frames" in result.output
    assert not hasattr(RunConfig().data, "num_frames")


def test_a_config_saved_with_data_num_frames_still_loads():
    saved = to_dict(RunConfig())
    saved["data"]["num_frames"] = saved["model"]["num_frames"]
    assert saved_run_config(saved).model.num_frames == RunConfig().model.num_frames


def test_folds_are_one_concept():
    assert NUM_FOLDS == len(FOLDS) == 5 and FOLDS[0] == 1
    assert check_fold(3) == 3 and check_fold("5") == 5 and check_fold(np.int64(2)) == 2
    for bad in (0, 6, "x", True, 2.0):
        with pytest.raises(ConfigError, match="not one of 1..5"):
            check_fold(bad)
    assert parse_folds("3, 1,3") == [3, 1] and parse_folds([2, 4]) == [2, 4]
    assert parse_folds(None) is None and parse_folds("") is None
    with pytest.raises(ConfigError, match="--folds"):
        parse_folds("1,a")
    clip_folds = np.array([1, 2, 3, 4, 5, 3])
    for k in FOLDS:
        test, train = split_mask(clip_folds, k, "test"), split_mask(clip_folds, k, "train")
        assert (test ^ train).all()  # every clip in exactly one split of every run fold
        assert list(test) == [in_split(f, k, "test") for f in clip_folds]
        assert list(train) == [in_split(f, k, "train") for f in clip_folds]
    with pytest.raises(ValueError):
        in_split(1, 1, "val")


def test_cli_fold_range_comes_from_the_fold_module():
    result = runner.invoke(cli.app, ["train", "synth", "--fold", str(NUM_FOLDS + 1)])
    assert result.exit_code == 2 and f"less than or equal to {FOLDS[-1]}" in " ".join(result.output.split())
