"""The command line of other encoders: `mma weights fetch/check` for a hub encoder, `--vision-encoder` with a
file of another geometry refused before any work, `mma sweep encoders --dry-run` listing its skipped rows."""

from __future__ import annotations

import json

import torch
from checkpoint_files import audio_file, vision_file
from hub_files import save_safetensors, timm_encoder, tiny_geometry
from typer.testing import CliRunner
from weights_server import Served

import cli
from pipeline.weights.registry import url_override_var

runner = CliRunner()
DINO = "vit_small_patch14_dinov2.lvd142m"


def error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_fetch_list_and_check_a_hub_encoder(tmp_path, weights_server, monkeypatch):
    _, sd = timm_encoder("vit_small_patch14_dinov2", **tiny_geometry(DINO))
    published = save_safetensors(sd, tmp_path / "model.safetensors")
    base, files = weights_server
    files["/dino/model.safetensors"] = Served(published.read_bytes())
    monkeypatch.setenv(url_override_var(DINO), f"{base}/dino/model.safetensors")
    work = tmp_path / "work"
    res = runner.invoke(cli.app, ["--workdir", str(work), "weights", "fetch", DINO, "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert f"{DINO}: fetched {work / 'weights' / (DINO + '.pth')}" in res.output
    listed = runner.invoke(cli.app, ["--workdir", str(work), "weights", "list", "--json"])
    row = next(r for r in json.loads(listed.output)["weights"] if r["name"] == DINO)
    assert row["present"] and row["encoders"] == [DINO] and row["licence"].startswith("Apache-2.0")
    ok = runner.invoke(cli.app, ["weights", "check", str(published), "--as", "vision", "--encoder", DINO,
                                 "--preset", "tiny"])
    assert ok.exit_code == 0 and ok.output.rstrip().endswith("ok"), ok.output
    assert "installed converted by `mma weights add` (safetensors -> torch)" in ok.output
    paper = runner.invoke(cli.app, ["weights", "check", str(published), "--as", "vision", "--encoder", DINO])
    assert paper.exit_code == 2
    assert f"model.vision_encoder={DINO} needs width 384, depth 12, 14 px patches" in error_line(paper)
    trained = tmp_path / "trained.pth"
    torch.save({"not": "an encoder"}, trained)
    unused = runner.invoke(cli.app, ["weights", "check", str(trained), "--as", "mma", "--encoder", DINO])
    assert unused.exit_code == 2 and error_line(unused).startswith(f"error: --encoder {DINO}: {trained} is ")


def test_train_refuses_a_file_of_another_geometry_before_any_work(tmp_path):
    _, sd = timm_encoder("vit_small_patch14_dinov2", **{**tiny_geometry(DINO), "depth": 2})
    shallow = tmp_path / "dino.pth"
    torch.save({"model": sd}, shallow)
    work = tmp_path / "work"
    res = runner.invoke(cli.app, ["--workdir", str(work), "--manifests", str(tmp_path / "m"), "train", "synth",
                                  "--fold", "1", "--preset", "tiny", "--vision-encoder", DINO, "--image-size",
                                  str(2 * tiny_geometry(DINO)["patch_size"]), "--vision-ckpt", str(shallow)])
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert line.startswith(f"error: {shallow}: this DINOv2-style vision encoder") and "depth 2" in line
    assert f"model.vision_encoder={DINO} needs" in line
    assert not work.exists()
    unknown = runner.invoke(cli.app, ["--workdir", str(work), "train", "synth", "--fold", "1", "--preset", "tiny",
                                      "--audio-encoder", "resnet50"])
    assert unknown.exit_code == 2 and "is a resnet model, not a ViT mma can adapt; supported:" in error_line(unknown)


def test_sweep_encoders_dry_run_lists_rows_without_weights_as_skipped(tmp_path):
    work = tmp_path / "work"
    g = tiny_geometry("mae-face")
    kw = dict(dim=g["embed_dim"], depth=g["depth"], heads=g["num_heads"])
    for name, path in (("mae-face", vision_file(tmp_path / "f.pth", **kw)), ("audiomae", audio_file(tmp_path / "a.pth", **kw))):
        added = runner.invoke(cli.app, ["--workdir", str(work), "weights", "add", name, str(path), "--preset", "tiny"])
        assert added.exit_code == 0, added.output
    res = runner.invoke(cli.app, ["--workdir", str(work), "sweep", "encoders", "--dataset", "dfew", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1 job(s): 1 to run" in res.output and "encoders-paper/" in res.output
    for name in ("vit_base_patch16_clip_224.openai", DINO, "vit_base_patch16_224.mae"):
        assert f"`mma weights fetch {name}`" in res.output
    listed = runner.invoke(cli.app, ["sweep", "--list"])
    assert "encoders" in listed.output and "CLIP B/16 + AudioMAE" in listed.output
