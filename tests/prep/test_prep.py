"""`mma prep` on real `mma synth` clips: outputs, faulty clips, fbank, faces, Dask, resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_sizes import SYNTH_CLASSES, SYNTH_CLIPS_PER_CLASS, TEST_CROP_SIZE
from typer.testing import CliRunner

import cli
from pipeline.core.config import DataConfig
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.prep.clip import clip_is_done, process_video, settings_hash
from pipeline.prep.run import run_prep

NORMAL_CLIPS = SYNTH_CLASSES * SYNTH_CLIPS_PER_CLASS


def _faults(synth_root: Path) -> dict[str, str]:
    return {f["kind"]: f["clip_id"] for f in json.loads((synth_root / "synth.json").read_text())["faults"]}


def test_summary_counts_and_failures_ledger(prepped: dict, synth_root: Path, workspace: Workspace):
    faults = _faults(synth_root)
    assert prepped["clips_total"] == NORMAL_CLIPS + 4
    assert prepped["clips_ok"] == NORMAL_CLIPS + 3 and prepped["clips_failed"] == 1
    assert prepped["no_audio"] == 1 and prepped["no_face_clips"] == 1 and prepped["short_clips"] == 1
    no_face_frames = json.loads((workspace.prep_dir("synth") / "clips" / faults["no_face"] / "meta.json").read_text())
    assert no_face_frames["num_frames"] <= prepped["no_face_frames"] <= no_face_frames["num_frames"] + 5
    ledger = [json.loads(line) for line in (workspace.prep_dir("synth") / "failures.jsonl").read_text().splitlines()]
    assert [(f["clip_id"], f["stage"]) for f in ledger] == [(faults["truncated"], "open")]
    assert "Invalid data" in ledger[0]["error"] and faults["truncated"] in ledger[0]["video"]
    on_disk = json.loads((workspace.prep_dir("synth") / "summary.json").read_text())
    assert on_disk["clips_ok"] == prepped["clips_ok"] and on_disk["failures"][0]["clip_id"] == faults["truncated"]
    config = json.loads((workspace.prep_dir("synth") / "prep_config.json").read_text())
    assert config["hash"] == prepped["config_hash"] and config["settings"]["crop_size"] == TEST_CROP_SIZE
    from pipeline.data.manifest import read_manifest

    rows = {r["clip_id"]: r for r in read_manifest(workspace, "synth")}
    assert rows[faults["truncated"]]["prep_status"] == "failed:open"
    assert rows[faults["no_audio"]]["has_audio"] is False and rows[faults["short"]]["num_frames"] < 16


def test_clip_directory_contract(prepped: dict, synth_root: Path, workspace: Workspace, test_data_config):
    from PIL import Image

    faults = _faults(synth_root)
    clips = workspace.prep_dir("synth") / "clips"
    assert not (clips / faults["truncated"]).exists()
    assert not [p for p in clips.iterdir() if p.name.startswith(".")]
    for clip_id in ("00001", faults["short"], faults["no_audio"], faults["no_face"]):
        meta = clip_is_done(clips / clip_id, settings_hash(test_data_config), clip_id)
        assert meta is not None, clip_id
        for key in ("clip_id", "label", "num_frames", "fps", "has_audio", "sample_rate", "audio_seconds",
                    "faces_found", "warnings"):
            assert key in meta
        frames = sorted((clips / clip_id / "frames").iterdir())
        assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(meta["num_frames"])]
        assert Image.open(frames[0]).size == (TEST_CROP_SIZE, TEST_CROP_SIZE)
        fbank = np.load(clips / clip_id / "fbank.npy")
        assert fbank.dtype == np.float16 and fbank.shape[1] == 128
    assert json.loads((clips / faults["short"] / "meta.json").read_text())["num_frames"] == 10
    silent = json.loads((clips / faults["no_audio"] / "meta.json").read_text())
    assert silent["has_audio"] is False and np.load(clips / faults["no_audio"] / "fbank.npy").shape == (0, 128)
    blank = json.loads((clips / faults["no_face"] / "meta.json").read_text())
    assert any("centre crop" in w for w in blank["warnings"]) and sum(blank["faces_found"]) == 0
    normal = json.loads((clips / "00001" / "meta.json").read_text())
    assert normal["fps"] == 25.0 and normal["num_frames"] == 40 and normal["sample_rate"] == 16000
    assert abs(normal["audio_seconds"] - 1.6) < 0.05 and normal["fbank_frames"] > 150


def test_fbank_equals_torchaudio_kaldi(prepped: dict, synth_root: Path, workspace: Workspace):
    import torchaudio
    from torchaudio.compliance import kaldi

    from pipeline.prep.audio import prepare_waveform, waveform_to_fbank
    from pipeline.prep.video import decode_clip

    decoded = decode_clip(synth_root / "data" / "clips" / "00001.mp4", video=False)
    assert decoded.sample_rate == 44100 and decoded.audio.shape[0] == 2
    mono = torch.from_numpy(decoded.audio).mean(0, keepdim=True)
    wav16 = torchaudio.functional.resample(mono, 44100, 16000)
    expected = kaldi.fbank(wav16 - wav16.mean(), htk_compat=True, sample_frequency=16000, use_energy=False,
                           window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    stored = np.load(workspace.prep_dir("synth") / "clips" / "00001" / "fbank.npy")
    assert stored.shape == tuple(expected.shape)
    np.testing.assert_allclose(stored.astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-2)
    # the authors' mode: first channel at the native rate
    native, rate = prepare_waveform(decoded.audio, decoded.sample_rate, "native")
    first = torch.from_numpy(decoded.audio[:1])
    expected_native = kaldi.fbank(first - first.mean(), htk_compat=True, sample_frequency=44100, use_energy=False,
                                  window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    assert rate == 44100
    torch.testing.assert_close(waveform_to_fbank(native, rate), expected_native)


def test_mtcnn_redetects_the_face_in_saved_crops(prepped: dict, workspace: Workspace):
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(keep_all=True, device="cpu")
    frames = workspace.prep_dir("synth") / "clips" / "00001" / "frames"
    crops = np.stack([np.asarray(Image.open(frames / f"{i:06d}.jpg")) for i in (0, 20, 39)])
    boxes, probs = mtcnn.detect(crops)
    for b, p in zip(boxes, probs):
        assert b is not None and max(p) > 0.9
        x0, y0, x1, y1 = b[int(np.argmax(p))]
        assert (x1 - x0) > TEST_CROP_SIZE * 0.4  # the face fills the crop, not a corner of it


def test_union_mode_and_process_video(synth_root: Path, tmp_path: Path):
    cfg = DataConfig(crop_size=48, face_select="union", audio_rate="native", jpeg_quality=80)
    meta = process_video(synth_root / "data" / "clips" / "00002.mp4", tmp_path / "clip", cfg, clip_id="00002", label=1)
    assert meta["face_source"] == "mtcnn-union" and meta["sample_rate"] == 44100 and meta["label"] == 1
    assert len(list((tmp_path / "clip" / "frames").glob("*.jpg"))) == meta["num_frames"] == 40
    assert clip_is_done(tmp_path / "clip", settings_hash(cfg), "00002") is not None
    assert clip_is_done(tmp_path / "clip", settings_hash(DataConfig(crop_size=48)), "00002") is None


def test_local_cluster_run_then_resume_and_settings_guard(synth_root: Path, tmp_path: Path, test_data_config):
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    first = run_prep("synth", synth_root, ws, test_data_config, workers=2, cluster="local", limit=5).summary
    assert first["clips_total"] == 5 and first["clips_ok"] == 5 and first["processed"] == 5
    again = run_prep("synth", synth_root, ws, test_data_config, cluster="serial", limit=5).summary
    assert again["processed"] == 0 and again["skipped"] == 5 and again["clips_ok"] == 5
    other = DataConfig(crop_size=32)
    with pytest.raises(MMAError, match=r"prep_config\.json: this prep was made with other settings \(crop_size 64 -> 32"):
        run_prep("synth", synth_root, ws, other, cluster="serial", limit=1)


def test_official_faces_for_dfew(tmp_path: Path):
    from pipeline.data.synth import make_synth_dataset

    root = tmp_path / "DFEW"
    make_synth_dataset(root, layout="dfew", clips_per_class=5, seconds=0.4, classes=1, seed=3)
    ws = Workspace(tmp_path / "work", tmp_path / "manifests")
    cfg = DataConfig(crop_size=32, faces="official")
    summary = run_prep("dfew", root, ws, cfg, cluster="serial").summary
    assert summary["clips_ok"] == 5 and summary["no_face_frames"] == 0
    meta = json.loads((ws.prep_dir("dfew") / "clips" / "00001" / "meta.json").read_text())
    assert meta["face_source"] == "official" and meta["num_frames"] == 10 and meta["has_audio"]


def test_resume_after_killing_prep_midway(synth_root: Path, tmp_path: Path):
    limit = 10
    args = ["--workdir", str(tmp_path / "work"), "--manifests", str(tmp_path / "manifests"), "prep", "synth",
            "--root", str(synth_root), "--cluster", "serial", "--limit", str(limit),
            "--set", f"data.crop_size={TEST_CROP_SIZE}"]
    clips = tmp_path / "work" / "synth" / "prep" / "clips"
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=Path(cli.__file__).parent)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if clips.is_dir() and sum(1 for p in clips.glob("[!.]*") if (p / "meta.json").exists()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"prep ended before it could be interrupted: {proc.stderr.read()!r}"
    finally:
        proc.kill()
        proc.wait()
    finished = {p.name: (p / "meta.json").stat().st_ino for p in clips.glob("[!.]*") if (p / "meta.json").exists()}
    assert 3 <= len(finished) < limit
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "work" / "synth" / "prep" / "summary.json").read_text())
    assert summary["skipped"] == len(finished) and summary["processed"] == limit - len(finished)  # nothing redone
    assert summary["clips_ok"] == limit and summary["clips_failed"] == 0  # nothing missing
    for name, inode in finished.items():
        assert (clips / name / "meta.json").stat().st_ino == inode, f"{name} was redone"
    assert sorted(p.name for p in clips.iterdir()) == [f"{i:05d}" for i in range(1, limit + 1)]  # no temp dirs left


def test_cli_bad_root_is_a_one_line_error(tmp_path: Path):
    result = CliRunner().invoke(cli.app, ["--workdir", str(tmp_path), "prep", "synth", "--root", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: dataset root not found (not a directory)"
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli.app, ["--workdir", str(tmp_path), "prep", "mafw", "--root", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "set_1/train.txt: split file not found" in result.output


def test_slurm_worker_job_script_carries_cli_options_and_dask_config_directives():
    """What `--cluster slurm` hands sbatch (the real scheduler runs it in tests/cluster): the CLI's queue,
    walltime, memory and GPUs, plus account/QOS lines from dask's jobqueue config."""
    import dask
    from dask_jobqueue import SLURMCluster

    from pipeline.prep.cluster import ClusterSpec, slurm_cluster_options

    spec = ClusterSpec("slurm", workers=1, threads_per_worker=2,
                       slurm={"queue": "gpu", "walltime": "00:30:00", "memory": "8GB", "gpus": 1})
    with dask.config.set({"jobqueue.slurm.job-extra-directives": ["--qos=high"], "jobqueue.slurm.account": "lab42"}):
        cluster = SLURMCluster(**slurm_cluster_options(spec))
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab42", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8G",
                 "#SBATCH -t 00:30:00", "#SBATCH --qos=high", "#SBATCH --gres=gpu:1"):
        assert line in script, (line, script)


def test_prep_exits_1_when_more_than_max_failed(prepped, synth_root: Path, workspace):
    """The synth set's faulty clips are ~10% of it: over the 1% default, under --max-failed 20%."""
    failed, total = prepped["clips_failed"], prepped["clips_total"]
    assert failed >= 1
    args = ["--workdir", str(workspace.workdir), "--manifests", str(workspace.manifest_dir), "prep", "synth",
            "--root", str(synth_root), "--cluster", "serial", "--set", "data.compat=mma", "--set",
            f"data.crop_size={TEST_CROP_SIZE}"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == f"error: {failed} of {total} clips failed ({100 * failed / total:.1f}% > --max-failed 1%)", last
    result = CliRunner().invoke(cli.app, [*args, "--max-failed", "20%"])
    assert result.exit_code == 0, result.output
    summary = json.loads((workspace.prep_dir("synth") / "summary.json").read_text())
    assert summary["too_many_failed"] is False and summary["max_failed"] == 0.2 and summary["clips_failed"] == failed
    result = CliRunner().invoke(cli.app, [*args, "--max-failed", "lots"])
    assert result.exit_code == 2 and "--max-failed 'lots'" in result.output
