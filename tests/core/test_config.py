"""Config round-trip, override precedence, presets and error messages."""

from __future__ import annotations

import json

import pytest

from pipeline.core.config import (
    RunConfig,
    apply_overrides,
    from_dict,
    load_run_config,
    paper,
    preset,
    resolve_config,
    save_resolved_config,
    tiny,
    to_dict,
)


def test_paper_defaults_match_the_paper():
    cfg = paper()
    assert cfg.model.image_size == 160
    assert cfg.model.latent_dim == 128
    assert cfg.model.num_frames == 16 and not hasattr(cfg.data, "num_frames")  # one owner
    assert cfg.train.batch_size == 8
    assert cfg.train.epochs == 25
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.weight_decay == pytest.approx(1e-2)
    assert cfg.train.seed == 1
    assert cfg.model.fusion == "bottleneck" and cfg.model.temporal == "mtt"
    assert cfg.model.prompts == "progressive" and cfg.model.prompt_introductions == 2


def test_tiny_is_small_and_valid():
    cfg = tiny()
    assert cfg.model.embed_dim == 64 and cfg.model.depth == 4 and cfg.model.num_heads == 4
    assert cfg.model.image_size == 32
    cfg.model.validate()


def test_round_trip_through_json(tmp_path):
    cfg = tiny()
    cfg.model.fusion = "mult"
    cfg.data.brightness = (0.6, 1.4)
    path = save_resolved_config(cfg, tmp_path / "config.json")
    loaded = load_run_config(path)
    assert to_dict(loaded) == to_dict(cfg)
    assert loaded.data.brightness == (0.6, 1.4)
    assert isinstance(loaded.data.brightness, tuple)


def test_precedence_preset_then_file_then_set_then_flags(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("model:\n  latent_dim: 64\n  fusion: add\ntrain:\n  epochs: 3\n  lr: 0.5\n")
    cfg = resolve_config(
        "tiny",
        cfg_file,
        overrides={"train.epochs": 7, "model.image_size": None},
        set_overrides=["train.lr=0.25", "train.epochs=5"],
    )
    assert cfg.model.embed_dim == 64  # from the preset
    assert cfg.model.latent_dim == 64 and cfg.model.fusion == "add"  # from the file
    assert cfg.train.lr == pytest.approx(0.25)  # --set beats the file
    assert cfg.train.epochs == 7  # explicit flags beat --set
    assert cfg.model.image_size == 32  # an unset flag (None) changes nothing


def test_json_config_file(tmp_path):
    cfg_file = tmp_path / "exp.json"
    cfg_file.write_text(json.dumps({"data": {"audio_rate": "native"}, "fold": 4}))
    cfg = resolve_config("paper", cfg_file)
    assert cfg.data.audio_rate == "native" and cfg.fold == 4


def test_type_coercion_from_strings():
    cfg = apply_overrides(RunConfig(), ["train.compile=true", "data.crop_scale=0.2,1.0", "vision_ckpt=none"])
    assert cfg.train.compile is True
    assert cfg.data.crop_scale == (0.2, 1.0)
    assert cfg.vision_ckpt is None


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.latentdim=3"], "unknown config key 'model.latentdim'"),
        (["train.epochs=many"], "train.epochs: expected int"),
        (["model=3"], "is a section"),
        (["noequals"], "must look like section.field=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        apply_overrides(RunConfig(), override)


def test_invalid_model_choice_is_rejected():
    with pytest.raises(ValueError, match="model.fusion='sum' is not one of"):
        resolve_config("paper", overrides={"model.fusion": "sum"})


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match="known: paper, tiny"):
        preset("huge")


def test_bad_config_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=str(bad)):
        resolve_config("paper", bad)
    with pytest.raises(ValueError, match="cannot read config file"):
        resolve_config("paper", tmp_path / "missing.yaml")


def test_from_dict_rejects_unknown_section():
    with pytest.raises(ValueError, match="unknown config key 'optimizer'"):
        from_dict({"optimizer": {"lr": 1}})
