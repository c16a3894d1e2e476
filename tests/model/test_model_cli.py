"""`mma model summary` and `mma model import-official` through the real Typer app."""

from __future__ import annotations

import json

import torch
from official_layout import write_official_checkpoint
from typer.testing import CliRunner

from cli import app
from pipeline.core.config import tiny

runner = CliRunner()




def summary(*args: str) -> dict:
    result = runner.invoke(app, ["model", "summary", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_summary_json_counts_follow_the_architecture():
    paper = summary()
    assert paper["trainable_params"] == 7_556_639
    assert paper["per_component"]["fusion"] == {"trainable": 12 * 395_522, "frozen": 0}
    assert paper["per_component"]["vision_encoder"]["trainable"] == 0
    mafw = summary("--dataset", "mafw")
    assert mafw["trainable_params"] - paper["trainable_params"] == 4 * (512 + 1)
    big = summary("--image-size", "224", "--latent-dim", "64")
    assert big["per_component"]["vision_pos_embed"]["trainable"] == (1 + 196 + 6) * 768
    assert big["per_component"]["fusion"]["trainable"] == 12 * (2 * (768 * 64 + 64) + 4 * 64 + 2 * (64 * 768 + 768) + 2)
    variant = summary("--fusion", "mult", "--temporal", "ita", "--ita-dim", "64", "--prompts", "static")
    assert variant["config"]["fusion"] == "mult" and "temporal_transformer" not in variant["per_component"]
    assert variant["per_component"]["vision_prompts"]["trainable"] == 6 * 768
    audio = summary("--modality", "audio", "--prompts", "none", "--fusion", "none", "--temporal", "none")
    assert audio["trainable_params"] == 768 * 7 + 7 and audio["prompt_layout"] is None
    assert paper["prompt_layout"] == {"tokens": 6, "sets": [{"after_block": 0, "tokens": [0, 3]},
                                                            {"after_block": 6, "tokens": [3, 6]}]}
    table7 = summary("--prompt-introductions", "4", "--set", "model.num_prompts=12")
    assert [s["after_block"] for s in table7["prompt_layout"]["sets"]] == [0, 3, 6, 9]
    assert table7["trainable_params"] == 7_584_287


def test_summary_table_and_bad_values():
    result = runner.invoke(app, ["model", "summary", "--preset", "tiny", "--prompt-introductions", "4"])
    assert result.exit_code == 0, result.output
    assert "temporal_transformer" in result.stdout and "total" in result.stdout and "progressive x4" in result.stdout
    # the flag implies the authors' 3 tokens per introduction (the set after the last block is not created)
    assert "prompts: 12 tokens per encoder, 3 progressive set(s) (0-2 after block 0; 3-5 after block 1; " \
           "6-8 after block 2)" in result.stdout
    fixed = runner.invoke(app, ["model", "summary", "--preset", "tiny", "--prompt-introductions", "4",
                                "--set", "model.num_prompts=6"])  # an explicit --set wins over the implied count
    assert "prompts: 6 tokens per encoder, 3 progressive set(s) (0-1 after block 0; 2-3 after block 1; " \
           "4-4 after block 2)" in fixed.stdout
    unimodal = runner.invoke(app, ["model", "summary", "--modality", "vision"])
    assert unimodal.exit_code == 2 and unimodal.stderr.strip().splitlines()[0].startswith(
        "error: model.modality='vision' is the frozen encoder with a linear classifier")
    bad = runner.invoke(app, ["model", "summary", "--fusion", "concat"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == ["error: model.fusion='concat' is not one of bottleneck, add, mult, "
                                               "mult-concat, none"]


def test_import_official_writes_a_full_state_mma_checkpoint(tmp_path):
    from model import build_model, load_official_checkpoint
    from model.checkpoint import load_model_checkpoint
    from pipeline.core.config import from_dict

    cfg = tiny().model
    torch.manual_seed(2)
    ours = build_model(cfg)
    src = write_official_checkpoint(tmp_path / "DFEW-set1-model.pth", ours)
    out = tmp_path / "imported.pt"
    # (--log-level WARNING: pipeline/logs.py's rich handler currently writes to stdout)
    args = ["--log-level", "WARNING", "model", "import-official", str(src), "--dataset", "dfew", "--image-size", "32", "--preset", "tiny",
            "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["out"] == str(out) and report["num_classes"] == 7
    assert sorted(report["dropped"]) == sorted(
        ["audio_model.head.bias", "audio_model.head.weight", "image_encoder.head.bias", "image_encoder.head.weight"]
        + [f"temporal_net.temporal_transformer.layers.0.{i}.fn.norm2.{w}" for i in (0, 1) for w in ("weight", "bias")]
    )
    ck = load_model_checkpoint(out)
    assert ck["full_state"] is True and ck["dataset"] == "dfew" and ck["official"]["path"] == str(src)
    run_cfg = from_dict(ck["config"])
    rebuilt = build_model(run_cfg.model)
    rebuilt.load_state_dict(ck["model"])
    frames = torch.rand(1, 16, 3, 32, 32)
    spec = torch.randn(1, 1, 512, 128)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(frames, spec), load_official_checkpoint(src, run_cfg.model).eval()(frames, spec))
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists (use --force" in again.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    wrong = runner.invoke(app, [*args[:-1], str(tmp_path / "x.pt"), "--image-size", "64"])
    assert wrong.exit_code == 2 and "trained at image size 32" in wrong.stderr


def test_summary_shows_each_encoder_and_the_fusion_pairing():
    args = ["--preset", "tiny", "--set", "model.vision_encoder=vit_small_patch14_reg4_dinov2",
            "--set", "model.image_size=28", "--set", "model.vision_depth=2"]
    data = summary(*args)
    assert data["fusion_pairs"] == [[0, 1], [1, 3]]  # vision block i with audio block round((i+1) * 4/2) - 1
    assert data["encoders"]["vision"]["reg_tokens"] == 4 and data["encoders"]["vision"]["patch_size"] == [14, 14]
    assert data["encoders"]["audio"]["mean"] == [-4.2677393] and data["config"]["vision_encoder"].endswith("dinov2")
    text = runner.invoke(app, ["model", "summary", *args])
    assert text.exit_code == 0, text.output
    assert "fusion pairs (vision block, audio block): (0,1) (1,3)" in text.stdout
    assert "vision encoder: vit_small_patch14_reg4_dinov2 (ViT): 64 wide, 2 blocks, 4 heads" in text.stdout
    bad = runner.invoke(app, ["model", "summary", "--set", "model.vision_encoder=resnet18"])
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines()[0].startswith(
        "error: model.vision_encoder='resnet18' is a resnet model, not a ViT mma can adapt; supported: ")
