"""`mma synth`: real mp4s in the MAFW / DFEW on-disk layouts, learnable from faces and tones."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from synth_sizes import SYNTH_CLASSES, SYNTH_CLIPS_PER_CLASS
from typer.testing import CliRunner

import cli
from pipeline.core.folds import NUM_FOLDS
from pipeline.data.datasets import MAFW_CLASSES
from pipeline.data.synth import FAULT_KINDS, class_pitch, ffmpeg_exe, make_synth_dataset

SPLITS = Path("Train & Test Set") / "single" / "no_caption"


def _read_split(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def test_mafw_layout_and_split_files(synth_root: Path):
    info = json.loads((synth_root / "synth.json").read_text())
    classes = list(MAFW_CLASSES[:SYNTH_CLASSES])
    assert info["classes"] == classes and info["seed"] == 1
    assert sorted(f["kind"] for f in info["faults"]) == sorted(FAULT_KINDS)
    total = SYNTH_CLASSES * SYNTH_CLIPS_PER_CLASS + len(FAULT_KINDS)
    videos = sorted((synth_root / "data" / "clips").glob("*.mp4"))
    assert [v.name for v in videos] == [f"{i:05d}.mp4" for i in range(1, total + 1)]

    test_fold: dict[str, int] = {}
    labels: dict[str, str] = {}
    for k in range(1, NUM_FOLDS + 1):
        test = _read_split(synth_root / SPLITS / f"set_{k}" / "test.txt")
        train = _read_split(synth_root / SPLITS / f"set_{k}" / "train.txt")
        assert not {n for n, _ in test} & {n for n, _ in train}
        assert len(test) + len(train) == total
        for name, word in test + train:
            assert name.endswith(".mp4") and word in classes
            assert labels.setdefault(name, word) == word  # same label in every file
        for name, _ in test:
            assert name not in test_fold, f"{name} in two test folds"
            test_fold[name] = k
    assert len(test_fold) == total  # every clip in exactly one test fold
    for word in classes:  # each class spread over all 5 test folds
        folds = {test_fold[n] for n, w in labels.items() if w == word}
        assert folds == set(range(1, NUM_FOLDS + 1)), word


def test_videos_are_h264_aac_and_faults_behave(synth_root: Path):
    import av

    faults = {f["kind"]: synth_root / f["video"] for f in json.loads((synth_root / "synth.json").read_text())["faults"]}
    normal = synth_root / "data" / "clips" / "00001.mp4"
    if normal in faults.values():
        normal = synth_root / "data" / "clips" / "00002.mp4"
    # the real ffmpeg binary decodes the whole file without complaint
    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(normal), "-f", "null", "-"], capture_output=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    with av.open(str(normal)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert float(c.streams.video[0].average_rate) == 25.0
    with av.open(str(faults["no_audio"])) as c:
        assert c.streams.video and not c.streams.audio
    with av.open(str(faults["short"])) as c:
        assert sum(1 for _ in c.decode(video=0)) < 16
    with pytest.raises(av.error.FFmpegError):
        av.open(str(faults["truncated"]))


def test_mtcnn_finds_the_face_and_classes_differ_in_both_modalities(synth_root: Path):
    import av
    from facenet_pytorch import MTCNN

    info = json.loads((synth_root / "synth.json").read_text())
    faulty = {f["clip_id"] for f in info["faults"]}
    no_face = next(f for f in info["faults"] if f["kind"] == "no_face")["video"]
    label_of = {}
    for line in (synth_root / SPLITS / "set_1" / "test.txt").read_text().splitlines() + \
            (synth_root / SPLITS / "set_1" / "train.txt").read_text().splitlines():
        name, word = line.split()
        label_of[name[:-4]] = info["classes"].index(word)
    picks = {}
    for clip_id in sorted(label_of):
        if clip_id not in faulty and label_of[clip_id] not in picks:
            picks[label_of[clip_id]] = clip_id
    mtcnn = MTCNN(keep_all=True, device="cpu")
    for label in (0, 1):
        with av.open(str(synth_root / "data" / "clips" / f"{picks[label]}.mp4")) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        boxes, probs = mtcnn.detect(frame)
        assert boxes is not None and probs.max() > 0.95
    with av.open(str(synth_root / no_face)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert mtcnn.detect(frame)[0] is None

    # the dominant audio frequency is the class's pitch
    for label, clip_id in picks.items():
        with av.open(str(synth_root / "data" / "clips" / f"{clip_id}.mp4")) as c:
            rate = c.streams.audio[0].rate
            wav = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
        peak = np.fft.rfftfreq(len(wav), 1 / rate)[spectrum.argmax()]
        assert abs(peak / class_pitch(label) - 1) < 0.04, (label, peak)


def test_refuses_non_empty_out_unless_force(tmp_path: Path):
    from pipeline.core.errors import MMAError

    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MMAError, match="not empty"):
        make_synth_dataset(out, clips_per_class=1, seconds=0.2, classes=1)
    summary = make_synth_dataset(out, clips_per_class=1, seconds=0.2, classes=1, force=True)
    assert summary.clips == 1 and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_dfew_layout_via_cli(tmp_path: Path):
    out = tmp_path / "DFEW"
    result = CliRunner().invoke(cli.app, ["synth", "--out", str(out), "--layout", "dfew", "--classes", "2",
                                          "--clips-per-class", "5", "--seconds", "0.4"])
    assert result.exit_code == 0, result.output
    printed = result.stdout[result.stdout.index("{\n"):]  # log lines may precede the JSON
    assert json.loads(printed)["clips"] == 10
    seen = {}
    for k in range(1, NUM_FOLDS + 1):
        for part in ("train", "test"):
            with open(out / "EmoLabel_DataSplit" / f"{part}(single-labeled)" / f"set_{k}.csv") as fh:
                rows = list(csv.DictReader(fh))
            assert rows and set(rows[0]) == {"video_name", "label"}
            for r in rows:
                assert r["label"] in ("1", "2")
                seen[int(r["video_name"])] = r["label"]
    assert sorted(seen) == list(range(1, 11))
    for vid in seen:
        assert (out / "Clip" / "original" / f"{vid}.mp4").is_file()
        frames = sorted((out / "Clip" / "clip_224x224" / f"{vid:05d}").glob("*.jpg"))
        assert len(frames) == 10 and (out / "Clip" / "clip_224x224" / f"{vid:05d}" / "10.jpg").exists()
    from PIL import Image

    assert Image.open(frames[0]).size == (224, 224)


def test_cli_rejects_bad_options(tmp_path: Path):
    result = CliRunner().invoke(cli.app, ["synth", "--out", str(tmp_path / "x"), "--layout", "ravdess"])
    assert result.exit_code == 2 and result.output.startswith("error: --layout 'ravdess'")
    result = CliRunner().invoke(cli.app, ["synth", "--out", str(tmp_path / "x"), "--layout", "dfew", "--classes", "9"])
    assert result.exit_code == 2 and "1..7" in result.output
