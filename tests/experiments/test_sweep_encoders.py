"""`mma sweep encoders`: rows for encoder pairs, rows without their weights skipped with the command that
fetches them, a tiny local sweep whose runs record which encoders made them, reported like the other tables."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoint_files import audio_file, vision_file
from hub_files import timm_encoder, tiny_geometry, to_openai_clip

from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.experiments.presets import bind_weights, expand, get_experiment, list_experiments
from pipeline.experiments.sweep import run_sweep
from pipeline.weights.store import add

CLIP = "vit_base_patch16_clip_quickgelu_224.openai"


def _tiny_weights(folder, tmp_path, names=("mae-face", "audiomae", "vit_base_patch16_clip_224.openai")):
    """Tiny encoder files at the tiny preset's geometry, registered in `folder`; returns {name: WeightFile}."""
    out = {}
    for name in names:
        g = tiny_geometry(name)
        kw = dict(dim=g["embed_dim"], depth=g["depth"], heads=g["num_heads"])
        if name == "mae-face":
            src = vision_file(tmp_path / "face.pth", **kw)
        elif name == "audiomae":
            src = audio_file(tmp_path / "audio.pth", **kw)
        else:
            _, sd = timm_encoder("vit_base_patch16_clip_quickgelu_224", **g)
            src = tmp_path / "clip.bin"
            torch.save(to_openai_clip(sd), src)
        out[name] = add(name, src, folder, preset_name="tiny")
    return out


def test_rows_without_their_weights_are_skipped_with_the_fetch_command(tmp_path, tiny_config):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    assert "encoders" in {e["name"] for e in list_experiments()}
    weights = _tiny_weights(ws.weights, tmp_path)
    bound, skipped = bind_weights(get_experiment("encoders"), ws.weights)
    assert [r.key for r in bound.rows] == ["paper", "clip-b16"]
    clip = bound.rows[1].overrides
    assert clip["model.vision_encoder"] == CLIP and clip["vision_ckpt"] == weights["vit_base_patch16_clip_224.openai"].path
    assert clip["audio_ckpt"] == weights["audiomae"].path
    assert {s.key: s.commands for s in skipped} == {
        "dinov2-s14": ("mma weights fetch vit_small_patch14_dinov2.lvd142m",),
        "mae-b16": ("mma weights fetch vit_base_patch16_224.mae",)}
    jobs = expand(bound, tiny_config, ws, preset_name="tiny")
    assert [j.config.model.vision_encoder for j in jobs] == ["vit_base_patch16_224.mae_face", CLIP]
    empty = Workspace(tmp_path / "empty", tmp_path / "manifests")
    with pytest.raises(MMAError, match="no row has its weights in .*`mma weights fetch mae-face`"):
        run_sweep("encoders", dataset="synth", folds="1", executor="local", base_config=tiny_config,
                  preset_name="tiny", workspace=empty, slurm={}, dry_run=True)


def test_a_tiny_encoder_sweep_runs_records_its_encoders_and_reports(sharded, workspace, tiny_config, tmp_path):
    ws = Workspace(workspace.workdir, workspace.manifest_dir, weights_dir=tmp_path / "weights")
    weights = _tiny_weights(ws.weights, tmp_path)
    base = tiny_config
    base.train.epochs = 1
    base.train.source = "shards"
    base.train.eval_two_clip = False
    out = run_sweep("encoders", dataset="synth", folds="1", executor="local", base_config=base, preset_name="tiny",
                    workspace=ws, rows="paper,clip-b16,mae-b16", slurm={})
    assert out.failed == 0 and out.jobs == 2, out.text()
    assert out.skipped == ("skipped mae-b16 (MAE B/16 (ImageNet) + AudioMAE): no vit_base_patch16_224.mae in the "
                           "weights folder; `mma weights fetch vit_base_patch16_224.mae`",)
    result = json.loads((ws.run_dir("synth", "encoders-clip-b16-tiny", 1) / "result.json").read_text())
    assert result["provenance"]["encoders"] == {
        "vision": {"name": CLIP, "sha256": weights["vit_base_patch16_clip_224.openai"].sha256},
        "audio": {"name": "vit_base_patch16_224.audiomae_as2m", "sha256": weights["audiomae"].sha256}}
    saved = json.loads((ws.run_dir("synth", "encoders-paper-tiny", 1) / "config.json").read_text())
    assert saved["vision_ckpt"] == weights["mae-face"].path and saved["model"]["vision_encoder"] == \
        "vit_base_patch16_224.mae_face"
    text = out.text()
    assert "| CLIP B/16 + AudioMAE | 1/1 |" in text and "| MAE-Face + AudioMAE (paper) | 1/1 |" in text
    assert "skipped dinov2-s14 (DINOv2 S/14 (140 px) + AudioMAE): no vit_small_patch14_dinov2.lvd142m" in text
    report = json.loads((ws.sweeps_dir("synth") / "encoders-tiny" / "report.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["mae-b16"]["skipped"].endswith("`mma weights fetch vit_base_patch16_224.mae`")
    assert rows["clip-b16"]["folds_ok"] == [1] and rows["clip-b16"]["skipped"] is None
