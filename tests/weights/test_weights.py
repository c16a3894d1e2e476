"""`mma weights`: fetch from a local HTTP server (resume, corrupt files), add, list, and stages finding encoders."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from checkpoint_files import audio_file, mae_file, vision_file
from typer.testing import CliRunner
from weights_server import Served

import cli
from model.inspect import Expected
from pipeline.core.config import tiny
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.weights.fetch import fetch
from pipeline.weights.registry import url_override_var
from pipeline.weights.resolve import resolve_encoder_checkpoints
from pipeline.weights.store import add, read_ledger

runner = CliRunner()
TINY = Expected.from_model_config(tiny().model)
VISION_FILE = "mae_face_pretrain_vit_base.pth"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {"vision": vision_file(d / "face.pth"), "audio": audio_file(d / "audio.pth")}


def error_line(res) -> str:
    """The one `error: ...` line of a CLI result (log lines may come before it)."""
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def serve(weights_server, monkeypatch, name: str, body: bytes, **kw):
    base, files = weights_server
    files[f"/{name}.pth"] = item = Served(body, **kw)
    monkeypatch.setenv(url_override_var(name), f"{base}/{name}.pth")
    return item


def test_fetch_installs_the_file_and_records_its_sha256(tmp_path, weights_server, monkeypatch, ckpts):
    body = ckpts["vision"].read_bytes()
    item = serve(weights_server, monkeypatch, "mae-face", body)
    work = tmp_path / "work"
    res = runner.invoke(cli.app, ["--workdir", str(work), "weights", "fetch", "mae-face", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    target = work / "weights" / VISION_FILE
    assert target.read_bytes() == body and not list((work / "weights").glob("*.part"))
    entry = json.loads((work / "weights" / "weights.json").read_text())["weights"]["mae-face"]
    assert entry["sha256"] == sha(body) and entry["bytes"] == len(body) and entry["source"].startswith("http://127.0.0.1")
    assert sha(body) in res.output
    # present now: listed as such, and a second fetch does not download again
    listed = runner.invoke(cli.app, ["--workdir", str(work), "weights", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"mae-face  [present: {target}" in listed.output and "audiomae  [missing]" in listed.output
    again = runner.invoke(cli.app, ["--workdir", str(work), "weights", "fetch", "mae-face", "--preset", "tiny"])
    assert again.exit_code == 0 and "mae-face: present" in again.output and len(item.requests) == 1


def test_fetch_resumes_after_a_dropped_connection(tmp_path, weights_server, monkeypatch, ckpts):
    body = ckpts["audio"].read_bytes()
    item = serve(weights_server, monkeypatch, "audiomae", body, drop_first=1)
    out = fetch("audiomae", tmp_path, expected=TINY)  # the first request dies half-way; the retry resumes
    assert out.status == "fetched" and out.sha256 == sha(body)
    assert item.requests == ["", f"bytes={len(body) // 2}-"]
    assert (tmp_path / "audiomae_pretrained.pth").read_bytes() == body
    assert read_ledger(tmp_path)["weights"]["audiomae"]["sha256"] == sha(body)


def test_an_interrupted_download_resumes_on_the_next_command(tmp_path, weights_server, monkeypatch, ckpts):
    body = ckpts["vision"].read_bytes()
    item = serve(weights_server, monkeypatch, "mae-face", body, drop_first=1)
    with pytest.raises(MMAError, match="interrupted at .* run the same command again to resume"):
        fetch("mae-face", tmp_path, retries=0, expected=TINY)
    part = tmp_path / f"{VISION_FILE}.part"
    assert part.stat().st_size == len(body) // 2 and not (tmp_path / VISION_FILE).exists()
    assert not (tmp_path / "weights.json").exists()
    out = fetch("mae-face", tmp_path, retries=0, expected=TINY)
    assert out.status == "fetched" and item.requests[-1] == f"bytes={len(body) // 2}-"
    assert sha((tmp_path / VISION_FILE).read_bytes()) == sha(body) and not part.exists()


def test_a_server_ignoring_range_restarts_the_download(tmp_path, weights_server, monkeypatch, ckpts):
    body = ckpts["vision"].read_bytes()
    item = serve(weights_server, monkeypatch, "mae-face", body, ignore_range=True)
    (tmp_path / f"{VISION_FILE}.part").write_bytes(b"stale bytes of an older attempt")
    out = fetch("mae-face", tmp_path, expected=TINY)
    assert item.requests == ["bytes=31-"] and out.sha256 == sha(body)
    assert (tmp_path / VISION_FILE).read_bytes() == body


@pytest.mark.parametrize("corruption", ["not a checkpoint", "truncated", "wrong kind"])
def test_a_corrupt_download_is_refused_and_not_installed(tmp_path, weights_server, monkeypatch, ckpts, corruption):
    good = ckpts["vision"].read_bytes()
    if corruption == "not a checkpoint":
        serve(weights_server, monkeypatch, "mae-face", b"<html>Sign in to continue</html>\n" * 50)
    elif corruption == "truncated":  # the server announces (and sends) only the first half
        serve(weights_server, monkeypatch, "mae-face", good, content_length=len(good) // 2)
    else:
        serve(weights_server, monkeypatch, "mae-face", ckpts["audio"].read_bytes())
    work = tmp_path / "work"
    res = runner.invoke(cli.app, ["--workdir", str(work), "weights", "fetch", "mae-face", "--preset", "tiny"])
    assert res.exit_code == 1, res.output
    line = error_line(res)
    assert "the download of mae-face is corrupt" in line and "not installed" in line
    if corruption == "wrong kind":
        assert "this is an AudioMAE encoder (1 input channel)" in line
    assert not list((work / "weights").iterdir())  # no file, no .part, no weights.json entry


def test_a_browser_only_source_prints_the_link_and_the_add_command(tmp_path, monkeypatch):
    monkeypatch.delenv(url_override_var("mma-dfer-dfew"), raising=False)
    res = runner.invoke(cli.app, ["--workdir", str(tmp_path), "weights", "fetch", "mma-dfer-dfew"])
    assert res.exit_code == 0, res.output
    assert "https://drive.google.com/drive/folders/1I3dvClr4oVH3h5cGmaFXmTc8aV-nYHof" in res.output
    assert "mma weights add mma-dfer-dfew mma_dfer_dfew.pth" in res.output and "DFEW licence" in res.output
    assert not (tmp_path / "weights").exists()  # nothing downloaded, nothing written
    bad = runner.invoke(cli.app, ["--workdir", str(tmp_path), "weights", "fetch", "mae-face", "nope"])
    assert bad.exit_code == 2 and "unknown checkpoint name 'nope'" in bad.output


def test_add_checks_the_file_then_registers_it(tmp_path, ckpts):
    work = tmp_path / "work"
    swapped = runner.invoke(cli.app, ["--workdir", str(work), "weights", "add", "audiomae", str(ckpts["vision"]),
                                      "--preset", "tiny"])
    assert swapped.exit_code == 2
    assert error_line(swapped) == (f"error: {ckpts['vision']}: this is a MAE-Face encoder (3 input channels), given "
                                      "as `mma weights add audiomae` (swapped --vision-ckpt and --audio-ckpt?)")
    big = runner.invoke(cli.app, ["--workdir", str(work), "weights", "add", "audiomae", str(ckpts["audio"])])
    assert big.exit_code == 2 and "needs width 768, depth 12, 16 px patches (ViT-B/16)" in big.output
    res = runner.invoke(cli.app, ["--workdir", str(work), "weights", "add", "audiomae", str(ckpts["audio"]),
                                  "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    entry = read_ledger(work / "weights")["weights"]["audiomae"]
    assert entry["sha256"] == sha(ckpts["audio"].read_bytes()) and entry["source"] == str(ckpts["audio"].resolve())
    other = tmp_path / "other.pth"
    audio_file(other)
    with pytest.raises(MMAError, match="already holds another audiomae file"):
        add("audiomae", other, work / "weights", expected=TINY)
    assert add("audiomae", other, work / "weights", expected=TINY, force=True, link=True).entry["linked"]
    assert (work / "weights" / "audiomae_pretrained.pth").resolve() == other.resolve()


def test_stages_take_encoders_from_the_weights_folder(tmp_path, ckpts, caplog):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    cfg = tiny()
    with caplog.at_level(logging.WARNING):
        none = resolve_encoder_checkpoints(cfg, ws)
    assert none.vision_ckpt is None and none.audio_ckpt is None
    assert "the vision encoder stays RANDOM" in caplog.text and "the audio encoder stays RANDOM" in caplog.text
    add("mae-face", ckpts["vision"], ws.weights, expected=TINY)
    add("audiomae", ckpts["audio"], ws.weights, expected=TINY)
    found = resolve_encoder_checkpoints(cfg, ws)
    assert found.vision_ckpt == str(ws.weights / VISION_FILE)
    assert found.audio_ckpt == str(ws.weights / "audiomae_pretrained.pth")
    assert cfg.vision_ckpt is None  # the caller's config is left as it was
    # a file that does not fit the run's geometry (here: the paper's ViT-B) is not used
    paper_sized = tiny()
    paper_sized.model.embed_dim, paper_sized.model.num_heads = 128, 8
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        skipped = resolve_encoder_checkpoints(paper_sized, ws)
    assert skipped.vision_ckpt is None and "not used: the vision encoder stays RANDOM" in caplog.text


def test_train_refuses_a_swapped_encoder_before_any_work(tmp_path, ckpts):
    work = tmp_path / "work"
    res = runner.invoke(cli.app, ["--workdir", str(work), "--manifests", str(tmp_path / "m"), "train", "synth",
                                  "--fold", "1", "--preset", "tiny", "--vision-ckpt", str(ckpts["audio"]),
                                  "--audio-ckpt", str(ckpts["vision"])])
    assert res.exit_code == 2
    assert error_line(res) == (f"error: {ckpts['audio']}: this is an AudioMAE encoder (1 input channel), given as "
                                  "--vision-ckpt (swapped --vision-ckpt and --audio-ckpt?)")
    assert not work.exists()  # nothing written: the check came first
    narrow = tmp_path / "narrow.pth"
    mae_file(narrow, img_size=224, in_chans=3, dim=32, heads=2)
    res = runner.invoke(cli.app, ["--workdir", str(work), "cache", "synth", "--preset", "tiny",
                                  "--vision-ckpt", str(narrow)])
    assert res.exit_code == 2 and "has width 32, depth 4, 16 px patches, given as --vision-ckpt" in res.output
