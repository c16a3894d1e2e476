"""Dataset manifests: parse each dataset's official split files, validate, write `clips.csv`.

Layouts (docs/architecture.md, "Data"):
- DFEW: `EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv` (`video_name,label`,
  labels 1..7), videos `Clip/original/<id>.mp4`, official faces `Clip/clip_224x224/<5-digit id>/`.
- MAFW: `Train & Test Set/single/no_caption/set_{1..5}/{train,test}.txt` (`00025.mp4 anger`),
  videos `data/clips/<id>.mp4`.
- synth (`mma synth`): MAFW's layout (or DFEW's, as its `synth.json` says); classes from `synth.json`.

One row per clip: `clip_id, label, label_name, test_fold, video` (+ `frames_dir`, `label_raw`,
`problem`, `usable`, and after prep `num_frames, fps, has_audio, audio_seconds, prep_status`).
Problems (clip in two test folds or none, train/test lists disagreeing, unknown label, missing
video) are reported per clip and recorded in the `problem` column; they never abort. Only an
unreadable root or split file (the run itself is broken) raises MMAError.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import MMAError
from pipeline.core.folds import FOLDS
from pipeline.core.io import atomic_write_json, atomic_write_text, read_json
from pipeline.core.paths import Workspace
from pipeline.data.datasets import (
    DATASET_NAMES,
    DATASETS,
    DFEW_CLASSES,
    MAFW_CLASSES,
    MAFW_NAME_MAP,
    SYNTH,
)
from pipeline.data.synth import read_synth_info

log = logging.getLogger(__name__)

BASE_COLUMNS = ["clip_id", "label", "label_name", "test_fold", "video", "frames_dir", "label_raw", "usable", "problem"]
PREP_COLUMNS = ["num_frames", "fps", "has_audio", "audio_seconds", "prep_status"]
MAFW_SPLIT_DIR = Path("Train & Test Set") / "single" / "no_caption"
DFEW_SPLIT_DIR = Path("EmoLabel_DataSplit")


@dataclass
class _Entry:
    """What the split files say about one clip."""

    labels: dict[str, str] = field(default_factory=dict)  # source "set_k/test" -> raw label
    test_folds: list[int] = field(default_factory=list)
    train_folds: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise MMAError(f"{path}: split file not found (is --root the dataset's root folder?)")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MMAError(f"{path}: cannot read split file ({exc})") from None


def _parse_mafw_file(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Lines `00025.mp4 anger` -> [(clip_id, word)], plus per-line problems for unparseable lines."""
    rows, bad = [], []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            bad.append(f"{path}:{n}: cannot parse {text!r} (want '<clip>.mp4 <label>')")
            continue
        name, word = parts
        rows.append((Path(name).stem, word))
    return rows, bad


def _parse_dfew_file(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """CSV `video_name,label` -> [(5-digit clip_id, label text)], plus per-row problems."""
    rows, bad = [], []
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["video_name", "label"]:
        raise MMAError(f"{path}: not a DFEW split file (want header 'video_name,label', got {header})")
    for n, rec in enumerate(reader, 2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) < 2 or not re.fullmatch(r"\d+", Path(rec[0].strip()).stem):
            bad.append(f"{path}:{n}: cannot parse {','.join(rec)!r} (want '<video number>,<label 1..7>')")
            continue
        rows.append((f"{int(Path(rec[0].strip()).stem):05d}", rec[1].strip()))
    return rows, bad


def _split_files(layout: str, root: Path) -> list[tuple[int, str, Path]]:
    files = []
    for k in FOLDS:
        for part in ("train", "test"):
            if layout == "mafw":
                files.append((k, part, root / MAFW_SPLIT_DIR / f"set_{k}" / f"{part}.txt"))
            else:
                files.append((k, part, root / DFEW_SPLIT_DIR / f"{part}(single-labeled)" / f"set_{k}.csv"))
    return files


def _layout_and_classes(dataset: str, root: Path) -> tuple[str, list[str] | None]:
    """The on-disk layout and, where fixed, the class names in label-id order."""
    if dataset == "dfew":
        return "dfew", list(DFEW_CLASSES)
    if dataset == "mafw":
        return "mafw", list(MAFW_CLASSES)
    if dataset == SYNTH:
        info = read_synth_info(root)
        if info is not None:
            return info.get("layout", "mafw"), list(info["classes"])
        layout = "dfew" if (root / DFEW_SPLIT_DIR).is_dir() else "mafw"
        return layout, None
    raise MMAError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_NAMES)}")


def dataset_layout(dataset: str, root: str | Path) -> str:
    """The on-disk layout ("dfew" | "mafw") of a dataset root (synth: as its synth.json says)."""
    return _layout_and_classes(dataset, Path(root))[0]


def videos_on_disk(layout: str, root: str | Path) -> dict[str, Path]:
    """clip_id -> video file for every mp4 in the layout's video folder (DFEW ids zero-padded)."""
    folder = Path(root) / ("data/clips" if layout == "mafw" else "Clip/original")
    out: dict[str, Path] = {}
    for p in sorted(folder.glob("*.mp4")) if folder.is_dir() else []:
        clip_id = f"{int(p.stem):05d}" if layout == "dfew" and p.stem.isdigit() else p.stem
        out[clip_id] = p
    return out


def _label_name(layout: str, raw: str) -> str | None:
    """The authors' class name for a split file's raw label, or None if unknown."""
    if layout == "dfew":
        if raw.isdigit() and 1 <= int(raw) <= len(DFEW_CLASSES):
            return DFEW_CLASSES[int(raw) - 1]
        return None
    return MAFW_NAME_MAP.get(raw.strip().lower())


def _video_path(layout: str, root: Path, clip_id: str) -> Path:
    if layout == "mafw":
        return root / "data" / "clips" / f"{clip_id}.mp4"
    folder = root / "Clip" / "original"
    for name in (f"{int(clip_id)}.mp4", f"{clip_id}.mp4"):
        if (folder / name).exists():
            return folder / name
    return folder / f"{int(clip_id)}.mp4"


def _sort_key(clip_id: str) -> tuple[int, str]:
    return (int(clip_id), clip_id) if clip_id.isdigit() else (1 << 62, clip_id)


def parse_dataset(dataset: str, root: str | Path, *, check_frames: bool = False) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Parse and validate a dataset's official split files.

    Returns (rows, class names in id order, file-level problems such as unparseable lines).
    Raises MMAError when the root or a split file is missing/unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise MMAError(f"{root}: dataset root not found (not a directory)")
    root = root.resolve()  # once: every clip's paths are built under it (no realpath per clip)
    layout, classes = _layout_and_classes(dataset, root)
    parse = _parse_mafw_file if layout == "mafw" else _parse_dfew_file
    entries: dict[str, _Entry] = defaultdict(_Entry)
    file_problems: list[str] = []
    for fold, part, path in _split_files(layout, root):
        rows, bad = parse(path)
        file_problems += bad
        seen: set[str] = set()
        for clip_id, raw in rows:
            e = entries[clip_id]
            if clip_id in seen:
                e.problems.append(f"listed twice in set_{fold} {part}")
                continue
            seen.add(clip_id)
            e.labels[f"set_{fold}/{part}"] = raw
            (e.test_folds if part == "test" else e.train_folds).append(fold)
    if classes is None:  # synth without synth.json: the authors' order of the names present
        names = {_label_name(layout, raw) for e in entries.values() for raw in e.labels.values()}
        classes = [c for c in MAFW_CLASSES if c in names]
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for clip_id in sorted(entries, key=_sort_key):
        e = entries[clip_id]
        problems = list(e.problems)
        fatal = False
        raws = sorted(set(e.labels.values()))
        if len(raws) > 1:
            problems.append(f"label differs between split files ({', '.join(raws)})")
        raw = e.labels.get(f"set_{e.test_folds[0]}/test") if e.test_folds else next(iter(e.labels.values()))
        name = _label_name(layout, raw)
        if name is None or name not in index:
            problems.append(f"unknown label {raw!r}")
            fatal = True
        if not e.test_folds:
            problems.append("in no test fold")
            fatal = True
        elif len(e.test_folds) > 1:
            problems.append(f"in several test folds ({', '.join(map(str, e.test_folds))})")
        test_fold = e.test_folds[0] if e.test_folds else 0
        expected_train = {k for k in FOLDS if k not in e.test_folds}
        if set(e.train_folds) & set(e.test_folds):
            both = sorted(set(e.train_folds) & set(e.test_folds))
            problems.append(f"in both train and test lists of set_{','.join(map(str, both))}")
        missing_train = sorted(expected_train - set(e.train_folds))
        if missing_train and e.test_folds:
            problems.append(f"missing from train lists of set_{','.join(map(str, missing_train))}")
        video = _video_path(layout, root, clip_id)
        frames_dir = root / "Clip" / "clip_224x224" / clip_id if layout == "dfew" else None
        if not video.is_file():
            if frames_dir is not None and frames_dir.is_dir():
                problems.append(f"video missing: {video} (official frames present)")
            else:
                problems.append(f"video missing: {video}")
                fatal = True
        if check_frames and frames_dir is not None and not frames_dir.is_dir():
            problems.append(f"official frames missing: {frames_dir}")
        out.append({
            "clip_id": clip_id,
            "label": index.get(name, -1) if name else -1,
            "label_name": name if name in index else "",
            "test_fold": test_fold,
            "video": str(video),
            "frames_dir": str(frames_dir) if frames_dir is not None else "",
            "label_raw": raw,
            "usable": 0 if fatal else 1,
            "problem": "; ".join(problems),
        })
    return out, classes, file_problems


# --------------------------------------------------------------------------- writing and reading


def write_manifest(ws: Workspace, dataset: str, rows: list[dict[str, Any]], classes: list[str]) -> Path:
    """Write clips.csv (and classes.json) atomically; extra columns present in rows are kept."""
    columns = list(BASE_COLUMNS)
    for col in PREP_COLUMNS:
        if any(col in r for r in rows):
            columns.append(col)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: ("" if r.get(c) is None else r.get(c, "")) for c in columns})
    atomic_write_json(ws.classes(dataset), list(classes))
    return atomic_write_text(ws.manifest(dataset), buf.getvalue())


def build_manifest(dataset: str, root: str | Path, ws: Workspace, *, check_frames: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse + validate + write the manifest; problems are logged (one line each, capped)."""
    rows, classes, file_problems = parse_dataset(dataset, root, check_frames=check_frames)
    if not rows:
        raise MMAError(f"{root}: the split files list no clips")
    for p in file_problems[:20]:
        log.warning("%s", p)
    if len(file_problems) > 20:
        log.warning("... and %d more unparseable split-file lines", len(file_problems) - 20)
    flagged = [r for r in rows if r["problem"]]
    for r in flagged[:20]:
        log.warning("clip %s: %s", r["clip_id"], r["problem"])
    if len(flagged) > 20:
        log.warning("... and %d more clips with problems (see the 'problem' column)", len(flagged) - 20)
    path = write_manifest(ws, dataset, rows, classes)
    log.info("manifest: %d clips, %d classes, %d with problems (%d unusable) -> %s", len(rows), len(classes),
             len(flagged), sum(1 for r in rows if not r["usable"]), path)
    return rows, classes


_INT_COLUMNS = ("label", "test_fold", "usable", "num_frames")
_FLOAT_COLUMNS = ("fps", "audio_seconds")


def read_manifest(ws: Workspace, dataset: str) -> list[dict[str, Any]]:
    """Rows of clips.csv with label/test_fold/usable as int (prep columns typed where present)."""
    path = ws.manifest(dataset)
    if not path.is_file():
        raise MMAError(f"{path}: manifest not found (run `mma prep {dataset} --root ...` first)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error) as exc:
        raise MMAError(f"{path}: cannot read manifest ({exc})") from None
    for i, r in enumerate(rows, 2):
        try:
            for c in _INT_COLUMNS:
                if c in r:
                    r[c] = int(r[c]) if r[c] not in ("", None) else (1 if c == "usable" else None)
            for c in _FLOAT_COLUMNS:
                if c in r:
                    r[c] = float(r[c]) if r[c] not in ("", None) else None
            if "has_audio" in r:
                r["has_audio"] = {"True": True, "False": False, "1": True, "0": False}.get(r["has_audio"])
        except ValueError as exc:
            raise MMAError(f"{path}:{i}: bad value ({exc})") from None
    return rows


def label_set(dataset: str, ws: Workspace | None = None) -> list[str]:
    """Class names of `dataset` in label-id order: its manifest's classes.json when `ws` has one, else the
    built-in label set (DFEW, MAFW); a dataset with neither (a synth set not prepped) is an MMAError."""
    if ws is not None and ws.classes(dataset).exists():
        return read_classes(ws, dataset)
    if dataset in DATASETS:
        return list(DATASETS[dataset].classes)
    raise MMAError(f"{dataset}: no label set (run `mma prep {dataset}` first, or name dfew or mafw)")


def read_classes(ws: Workspace, dataset: str) -> list[str]:
    """Class names in label-id order from classes.json."""
    path = ws.classes(dataset)
    classes = read_json(path, f"run `mma prep {dataset} --root ...` first")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise MMAError(f"{path}: want a JSON list of class names")
    return classes
