"""The published 5-fold splits that ship with mma (`data_manifests/{dfew,mafw}/splits.csv`).

One row per clip of the standard single-label protocols: `clip_id, label, label_name,
test_fold, authors_num_frames` (label ids 0-based in the authors' class order; see
`data_manifests/README.md`). The files are found next to the package (a source checkout or
an editable install: `<repo>/data_manifests/`; a wheel install: `<prefix>/share/mma/data_manifests/`,
where pyproject's `data-files` puts them), never in the current directory.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import MMAError
from pipeline.data.datasets import DATASETS

SPLITS_FILE = "splits.csv"
COLUMNS = ["clip_id", "label", "label_name", "test_fold", "authors_num_frames"]


@dataclass(frozen=True)
class PublishedClip:
    """What the published split says about one clip."""

    clip_id: str
    label: int
    label_name: str
    test_fold: int
    authors_num_frames: int


def _candidates(dataset: str) -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    return [
        repo / "data_manifests" / dataset / SPLITS_FILE,
        Path(sys.prefix) / "share" / "mma" / "data_manifests" / dataset / SPLITS_FILE,
    ]


def has_published_split(dataset: str) -> bool:
    """True for the datasets whose published split ships with mma (dfew, mafw)."""
    return dataset in DATASETS


def published_splits_path(dataset: str) -> Path:
    """Path of the shipped `splits.csv` of `dataset`; MMAError when it has none or it is missing."""
    if not has_published_split(dataset):
        raise MMAError(f"no published split for dataset {dataset!r} (mma ships dfew and mafw)")
    for path in _candidates(dataset):
        if path.is_file():
            return path
    raise MMAError(f"{_candidates(dataset)[0]}: the published {dataset} split is missing from this install")


def read_published_split(dataset: str) -> dict[str, PublishedClip]:
    """clip_id -> PublishedClip for every clip of the dataset's published protocol."""
    path = published_splits_path(dataset)
    out: dict[str, PublishedClip] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise MMAError(f"{path}: want columns {','.join(COLUMNS)}, got {reader.fieldnames}")
        for n, r in enumerate(reader, 2):
            try:
                clip = PublishedClip(r["clip_id"], int(r["label"]), r["label_name"], int(r["test_fold"]),
                                     int(r["authors_num_frames"]))
            except (TypeError, ValueError):
                raise MMAError(f"{path}:{n}: bad row {r}") from None
            out[clip.clip_id] = clip
    return out
