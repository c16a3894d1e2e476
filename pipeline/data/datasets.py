"""Dataset definitions: class orders (the authors' code's), name mappings, label sets.

The fold protocol (5 folds, which clips a fold trains and tests on) is `pipeline.core.folds`.

Label ids everywhere in mma are 0-based indices into the authors' class order. A dataset's
own label names (DFEW's 1..7 ids, MAFW's words) are mapped here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.config import RunConfig
from pipeline.core.errors import MMAError

# DFEW: labels 1..7 in the CSVs map to these, in this order (authors' order too).
DFEW_CLASSES = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")

# MAFW: the authors' class order (differs from the dataset's own listing).
MAFW_CLASSES = (
    "happiness",
    "sadness",
    "neutral",
    "anger",
    "surprise",
    "disgust",
    "fear",
    "contempt",
    "anxiety",
    "helplessness",
    "disappointment",
)

# MAFW's own label words and common spellings -> the authors' class names.
MAFW_NAME_MAP = {
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "neutral": "neutral",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
    "anxiety": "anxiety",
    "anxious": "anxiety",
    "helplessness": "helplessness",
    "helpless": "helplessness",
    "disappointment": "disappointment",
    "disappointed": "disappointment",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's name, on-disk layout family and class names in label-id order."""

    name: str
    layout: str  # "dfew" | "mafw"
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS = {
    "dfew": DatasetSpec("dfew", "dfew", DFEW_CLASSES),
    "mafw": DatasetSpec("mafw", "mafw", MAFW_CLASSES),
}

# `mma synth` writes MAFW's layout using the first K MAFW classes (K recorded in classes.json).
SYNTH = "synth"
DATASET_NAMES = (*DATASETS, SYNTH)


def dataset_spec(name: str) -> DatasetSpec:
    """Spec of a built-in dataset; `synth` is resolved from its manifest (see manifest module)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise MMAError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}") from None


def apply_label_set(cfg: RunConfig, classes: Sequence[str]) -> RunConfig:
    """Size the classifier for `classes`: the one place `model.num_classes` is set (in place; returns cfg).

    The label set comes from where the run's labels come from: the manifest (train, eval), the
    checkpoint (predict), the dataset's published classes (the authors' checkpoints)."""
    if len(classes) < 2:
        raise MMAError(f"a label set needs at least 2 classes, got {list(classes)}")
    cfg.model.num_classes = len(classes)
    return cfg
