"""Manifests from synthetic copies of the official DFEW and MAFW split files, bad rows included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.data.datasets import DFEW_CLASSES, MAFW_CLASSES
from pipeline.data.manifest import (
    build_manifest,
    parse_dataset,
    read_classes,
    read_manifest,
)

MAFW_SPLITS = Path("Train & Test Set") / "single" / "no_caption"


def _write_mafw(root: Path, clips: dict[str, tuple[str, int]], *, extra: dict[tuple[int, str], list[str]] | None = None,
                drop_train: set[tuple[str, int]] = frozenset(), videos: bool = True) -> None:
    """MAFW layout: clips = {clip_id: (label word, test fold)}; extra lines appended per (fold, part)."""
    for k in range(1, 6):
        folder = root / MAFW_SPLITS / f"set_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        test = [f"{c}.mp4 {w}" for c, (w, f) in clips.items() if f == k]
        train = [f"{c}.mp4 {w}" for c, (w, f) in clips.items() if f != k and (c, k) not in drop_train]
        test += (extra or {}).get((k, "test"), [])
        train += (extra or {}).get((k, "train"), [])
        (folder / "test.txt").write_text("\n".join(test) + "\n")
        (folder / "train.txt").write_text("\n".join(train) + "\n")
    if videos:
        (root / "data" / "clips").mkdir(parents=True, exist_ok=True)
        for c in clips:
            (root / "data" / "clips" / f"{c}.mp4").write_bytes(b"\0")


def _write_dfew(root: Path, clips: dict[int, tuple[int, int]], *, extra_test: dict[int, list[str]] | None = None) -> None:
    """DFEW layout: clips = {video number: (label 1..7, test fold)}."""
    for part in ("train", "test"):
        (root / "EmoLabel_DataSplit" / f"{part}(single-labeled)").mkdir(parents=True, exist_ok=True)
    for k in range(1, 6):
        test = [f"{v},{lab}" for v, (lab, f) in clips.items() if f == k] + (extra_test or {}).get(k, [])
        train = [f"{v},{lab}" for v, (lab, f) in clips.items() if f != k]
        for part, rows in (("test", test), ("train", train)):
            (root / "EmoLabel_DataSplit" / f"{part}(single-labeled)" / f"set_{k}.csv").write_text(
                "\n".join(["video_name,label"] + rows) + "\n")
    (root / "Clip" / "original").mkdir(parents=True, exist_ok=True)
    for v in clips:
        (root / "Clip" / "original" / f"{v}.mp4").write_bytes(b"\0")
        (root / "Clip" / "clip_224x224" / f"{v:05d}").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work", tmp_path / "manifests")


def test_mafw_clean_split_files(tmp_path: Path, ws: Workspace):
    words = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
             "helplessness", "disappointment"]
    clips = {f"{i:05d}": (words[i % len(words)], i % 5 + 1) for i in range(1, 23)}
    _write_mafw(tmp_path / "MAFW", clips)
    rows, classes = build_manifest("mafw", tmp_path / "MAFW", ws)
    assert classes == list(MAFW_CLASSES)
    assert [r["clip_id"] for r in rows] == sorted(clips)
    for r in rows:
        word, fold = clips[r["clip_id"]]
        assert r["label_name"] == word and r["label"] == MAFW_CLASSES.index(word)  # authors' order, not MAFW's
        assert r["test_fold"] == fold and r["usable"] == 1 and r["problem"] == ""
        assert Path(r["video"]).is_absolute() and Path(r["video"]).name == f"{r['clip_id']}.mp4"
    back = read_manifest(ws, "mafw")
    assert [(r["clip_id"], r["label"], r["test_fold"]) for r in back] == [(r["clip_id"], r["label"], r["test_fold"]) for r in rows]
    assert isinstance(back[0]["label"], int) and isinstance(back[0]["test_fold"], int)
    assert read_classes(ws, "mafw") == list(MAFW_CLASSES)
    assert json.loads(ws.classes("mafw").read_text()) == list(MAFW_CLASSES)


def test_mafw_bad_rows_are_recorded_not_fatal(tmp_path: Path, ws: Workspace):
    clips = {
        "00001": ("anger", 1),
        "00002": ("happy", 2),  # dataset spelling -> happiness
        "00003": ("boredom", 3),  # unknown label
        "00004": ("sadness", 4),
        "00005": ("fear", 5),
        "00006": ("contempt", 1),
    }
    extra = {
        (3, "test"): ["00001.mp4 anger", "this line is broken garbage"],  # 00001 in two test folds
        (2, "train"): ["00007.mp4 fear"],  # listed only in a train file: no test fold
    }
    root = tmp_path / "MAFW"
    _write_mafw(root, clips, extra=extra, drop_train={("00004", 1)})
    (root / "data" / "clips" / "00005.mp4").unlink()  # missing video
    rows, _, file_problems = parse_dataset("mafw", root)
    by_id = {r["clip_id"]: r for r in rows}
    assert set(by_id) == {f"{i:05d}" for i in range(1, 8)}
    assert any("this line is broken garbage" in p and "set_3" in p for p in file_problems)
    assert by_id["00002"]["label_name"] == "happiness" and by_id["00002"]["label"] == 0 and by_id["00002"]["usable"]
    assert "several test folds (1, 3)" in by_id["00001"]["problem"] and by_id["00001"]["test_fold"] == 1
    assert "in both train and test" in by_id["00001"]["problem"]
    assert "unknown label 'boredom'" in by_id["00003"]["problem"] and by_id["00003"]["usable"] == 0
    assert by_id["00003"]["label"] == -1
    assert "missing from train lists of set_1" in by_id["00004"]["problem"] and by_id["00004"]["usable"] == 1
    assert "video missing" in by_id["00005"]["problem"] and by_id["00005"]["usable"] == 0
    assert "in no test fold" in by_id["00007"]["problem"] and by_id["00007"]["test_fold"] == 0
    assert by_id["00006"]["problem"] == "" and by_id["00006"]["label"] == MAFW_CLASSES.index("contempt")
    # the written manifest keeps every clip and its problem
    build_manifest("mafw", root, ws)
    written = {r["clip_id"]: r for r in read_manifest(ws, "mafw")}
    assert written["00003"]["usable"] == 0 and "boredom" in written["00003"]["problem"]


def test_dfew_split_files(tmp_path: Path, ws: Workspace):
    clips = {v: (v % 7 + 1, v % 5 + 1) for v in range(1, 16)}
    root = tmp_path / "DFEW"
    _write_dfew(root, clips, extra_test={2: ["16,9", "abc,3"]})
    (root / "Clip" / "original" / "16.mp4").write_bytes(b"\0")
    rows, classes = build_manifest("dfew", root, ws, check_frames=True)
    assert classes == list(DFEW_CLASSES)
    by_id = {r["clip_id"]: r for r in rows}
    assert by_id["00004"]["label_name"] == DFEW_CLASSES[4] and by_id["00004"]["label"] == 4  # label 5 -> id 4
    assert by_id["00003"]["label_name"] == "anger" and by_id["00003"]["label"] == 3  # CSV label 4 = anger
    assert by_id["00001"]["frames_dir"].endswith("Clip/clip_224x224/00001")
    assert by_id["00001"]["video"].endswith("Clip/original/1.mp4") and by_id["00001"]["problem"] == ""
    assert "unknown label '9'" in by_id["00016"]["problem"] and "official frames missing" in by_id["00016"]["problem"]
    assert "00abc" not in by_id and len(rows) == 16


def test_broken_runs_raise_naming_the_file(tmp_path: Path, ws: Workspace):
    with pytest.raises(MMAError, match="dataset root not found"):
        build_manifest("mafw", tmp_path / "nowhere", ws)
    root = tmp_path / "MAFW"
    _write_mafw(root, {"00001": ("anger", 1)})
    (root / MAFW_SPLITS / "set_4" / "train.txt").unlink()
    with pytest.raises(MMAError, match=r"set_4/train\.txt: split file not found"):
        build_manifest("mafw", root, ws)
    droot = tmp_path / "DFEW"
    _write_dfew(droot, {1: (1, 1)})
    (droot / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_2.csv").write_text("name;emotion\n1;2\n")
    with pytest.raises(MMAError, match=r"set_2\.csv: not a DFEW split file"):
        build_manifest("dfew", droot, ws)
    with pytest.raises(MMAError, match="manifest not found"):
        read_manifest(ws, "dfew")


def test_synth_without_synth_json_takes_authors_order(tmp_path: Path, ws: Workspace):
    root = tmp_path / "S"
    _write_mafw(root, {"00001": ("surprise", 1), "00002": ("happiness", 2), "00003": ("anger", 3)})
    rows, classes = build_manifest("synth", root, ws)
    assert classes == ["happiness", "anger", "surprise"]
    assert [r["label"] for r in rows] == [2, 0, 1]
