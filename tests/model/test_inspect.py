"""The structure check: what each kind of checkpoint file is, and one-line errors for wrong or swapped files."""

from __future__ import annotations

import pytest
import torch
from checkpoint_files import (
    audio_file,
    authors_file,
    mae_file,
    mma_run_file,
    timm_file,
    vision_file,
)
from typer.testing import CliRunner

import cli
from model.errors import ModelError
from model import ModelConfig
from model.inspect import (
    VIT_B,
    Expected,
    check_file,
    compare_geometry,
    expected_for_encoder,
    inspect_checkpoint,
    require,
)
from pipeline.core.config import tiny

runner = CliRunner()
TINY = Expected.from_model_config(tiny().model)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinds")
    text = d / "notes.txt"
    text.write_text("not a checkpoint\n")
    other = d / "random.pt"
    torch.save({"weights": torch.randn(3, 3), "step": 7}, other)
    return {"vision": vision_file(d / "face.pth"), "audio": audio_file(d / "audio.pth"),
            "mma": mma_run_file(d / "last.pt", dataset="mafw", fold=3), "authors": authors_file(d / "authors.pth"),
            "random": other, "text": text}


def error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_each_kind_of_file_is_told_apart(files):
    v = inspect_checkpoint(files["vision"])
    assert v.kind == "vision-encoder" and v.short() == "a MAE-Face encoder (3 input channels)"
    assert (v.encoder.width, v.encoder.depth, v.encoder.patch_size, v.encoder.in_chans) == (64, 4, 16, 3)
    assert v.encoder.pos_grid == (14, 14) and "mask_token" in v.mae_leftovers and "decoder_embed.weight" in v.mae_leftovers
    a = inspect_checkpoint(files["audio"])
    assert a.kind == "audio-encoder" and a.encoder.in_chans == 1 and a.encoder.pos_grid == (64, 8)
    m = inspect_checkpoint(files["mma"])
    assert m.kind == "mma-run" and m.short() == "an mma run checkpoint (mafw fold 3)" and m.run["width"] == 64
    o = inspect_checkpoint(files["authors"])
    assert o.kind == "authors-trained" and o.encoder.in_chans == 3 and o.audio_encoder.in_chans == 1
    assert o.run["classes"] == 11 and o.encoder.pos_grid == (2, 2)  # prompt rows are not counted as grid
    r = inspect_checkpoint(files["random"])
    assert r.kind == "unknown" and "top-level keys: step, weights" in r.short()
    with pytest.raises(ModelError, match=r"notes\.txt: not a PyTorch checkpoint"):
        inspect_checkpoint(files["text"])
    mae_file(files["vision"].parent / "wide.pth", img_size=224, in_chans=3, dim=768, depth=1, heads=12)
    wide = inspect_checkpoint(files["vision"].parent / "wide.pth")  # ViT-B width: 12 heads of 64
    assert wide.encoder.heads == 12 and wide.encoder.describe().startswith("width 768, depth 1, 12 heads of 64")


def test_require_names_the_file_and_what_it_is(files):
    with pytest.raises(ModelError) as err:
        check_file(files["audio"], "vision-encoder", "--vision-ckpt", TINY)
    assert str(err.value) == (f"{files['audio']}: this is an AudioMAE encoder (1 input channel), given as "
                              "--vision-ckpt (swapped --vision-ckpt and --audio-ckpt?)")
    with pytest.raises(ModelError, match=r"this MAE-Face encoder \(3 input channels\) has width 64, depth 4, 16 px "
                                         r"patches, given as --vision-ckpt; the run's model needs width 768, depth 12"):
        check_file(files["vision"], "vision-encoder", "--vision-ckpt", VIT_B)
    with pytest.raises(ModelError, match=r"this is a model trained with the authors' MMA-DFER code, given as "
                                         r"--checkpoint \(pass --official"):
        check_file(files["authors"], "mma-run", "--checkpoint", None)
    with pytest.raises(ModelError, match=r"this is an mma run checkpoint \(mafw fold 3\), given as --checkpoint "
                                         r"--official \(drop --official"):
        check_file(files["mma"], "authors-trained", "--checkpoint --official", None)
    with pytest.raises(ModelError, match=r"random\.pt: this is not a checkpoint mma knows"):
        check_file(files["random"], "audio-encoder", "--audio-ckpt", TINY)
    assert check_file(files["authors"], "authors-trained", "--checkpoint", TINY).kind == "authors-trained"
    mae_file(files["vision"].parent / "odd.pth", img_size=(64, 48), in_chans=3)  # a 4x3 grid
    with pytest.raises(ModelError, match=r"odd\.pth: this MAE-Face encoder .* has 12 positional-embedding rows, "
                                         r"not a square grid"):
        require("vision-encoder", inspect_checkpoint(files["vision"].parent / "odd.pth"), "--vision-ckpt", TINY)


@pytest.mark.parametrize(("kind", "as_", "ok"), [
    ("vision", "vision", True), ("audio", "audio", True), ("mma", "mma", True), ("authors", "authors", True),
    ("audio", "vision", False), ("vision", "audio", False), ("authors", "mma", False), ("mma", "authors", False),
])
def test_weights_check_command(files, kind, as_, ok):
    res = runner.invoke(cli.app, ["weights", "check", str(files[kind]), "--as", as_, "--preset", "tiny"])
    assert (res.exit_code == 0) is ok, res.output
    if ok:
        assert res.output.rstrip().endswith("ok") and f"{files[kind]}: " in res.output
    else:
        assert error_line(res).startswith(f"error: {files[kind]}: this is ")


def test_weights_check_without_as(files):
    res = runner.invoke(cli.app, ["weights", "check", str(files["vision"]), "--json", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert '"kind": "vision-encoder"' in res.output and '"mae_leftovers"' in res.output
    paper = runner.invoke(cli.app, ["weights", "check", str(files["audio"])])  # default: the paper's ViT-B/16
    assert paper.exit_code == 2 and "--preset paper needs width 768, depth 12, 16 px patches (ViT-B/16)" in paper.output
    for name in ("random", "text"):
        res = runner.invoke(cli.app, ["weights", "check", str(files[name])])
        assert res.exit_code == 2 and error_line(res).startswith(f"error: {files[name]}: not ")


@pytest.mark.parametrize("name,family,prefix", [
    ("vit_base_patch16_clip_224", "CLIP-style", 1),
    ("vit_small_patch14_dinov2", "DINOv2-style", 1),
    ("vit_small_patch14_reg4_dinov2", "DINOv2-style", 5),  # register tokens have no position rows
    ("eva02_tiny_patch14_224", "EVA-02", 1),
    ("eva02_base_patch14_224", "EVA-02", 1),  # base/large: separate q/k/v projections, no q_bias
])
def test_each_family_is_read_from_its_tensors(tmp_path, name, family, prefix):
    path = tmp_path / f"{name}.pth"
    timm_file(path, name)
    info = inspect_checkpoint(path)
    assert info.kind == "vision-encoder" and info.short() == f"a {family} vision encoder (3 input channels)"
    geo = info.encoder
    assert (geo.width, geo.depth, geo.family, geo.prefix_tokens) == (32, 2, family, prefix)
    assert geo.pos_grid == ((14, 14) if "patch16" in name else (16, 16))
    expected = expected_for_encoder(name, cfg=ModelConfig(embed_dim=32, depth=2, num_heads=2))
    assert geo.key() == expected.key() and geo.family == expected.family
    compare_geometry(geo, expected, path)  # fits: no error


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(tmp_path):
    full = expected_for_encoder("vit_small_patch14_reg4_dinov2")  # read from timm at full size
    assert (full.width, full.depth, full.heads, full.patch_size, full.prefix_tokens) == (384, 12, 6, 14, 5)
    assert expected_for_encoder("vit_base_patch16_224.audiomae_as2m", "audio").in_chans == 1
    clip = tmp_path / "clip.pth"
    timm_file(clip, "vit_base_patch16_clip_224")
    with pytest.raises(ModelError) as err:
        compare_geometry(inspect_checkpoint(clip).encoder, full, clip)
    assert str(err.value) == (f"{clip}: this file has width 32, depth 2, 16 px patches, 1 prefix token, CLIP-style "
                              "layout; vit_small_patch14_reg4_dinov2 needs width 384, depth 12, 14 px patches, "
                              "5 prefix tokens, DINOv2-style layout")
    # the same numbers in another family's layout: refused by the run's check, naming the architecture
    run = Expected.from_model_config(ModelConfig(vision_encoder="vit_base_patch16_clip_224", embed_dim=32, depth=2,
                                                 num_heads=2))
    assert check_file(clip, "vision-encoder", "--vision-ckpt", run).encoder.family == "CLIP-style"
    mae = tmp_path / "mae.pth"
    timm_file(mae, "vit_base_patch16_224")
    with pytest.raises(ModelError, match=r"mae\.pth: this MAE-Face encoder \(3 input channels\) has width 32, depth 2, "
                                         r"16 px patches, ViT layout, given as --vision-ckpt; the run's model needs "
                                         r"width 32, depth 2, 16 px patches \(vit_base_patch16_clip_224\), CLIP-style "
                                         r"layout$"):
        check_file(mae, "vision-encoder", "--vision-ckpt", run)
