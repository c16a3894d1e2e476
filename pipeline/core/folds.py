"""The 5-fold protocol as one concept: how many folds there are, which numbers are folds, how a fold
list is written on a command line, and which clips a fold trains and tests on.

DFEW and MAFW each ship 5 test folds that partition their clips. Fold k is a run that tests on
the clips whose test fold is k and trains on the clips of the other four. Every stage (manifest,
shards, streaming and cached loaders, the trainer, reports, sweeps, the demo) asks this module
instead of writing the range or the rule again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError

NUM_FOLDS = 5
FOLDS: tuple[int, ...] = tuple(range(1, NUM_FOLDS + 1))
SPLITS = ("train", "test")


def check_fold(fold: Any, where: str = "fold") -> int:
    """`fold` as an int when it is one of 1..NUM_FOLDS; else ConfigError naming `where`."""
    k: int | None = None
    if isinstance(fold, (int, np.integer)) and not isinstance(fold, bool):
        k = int(fold)
    elif isinstance(fold, str) and fold.strip().isdigit():
        k = int(fold.strip())
    if k not in FOLDS:
        raise ConfigError(f"{where}={fold!r} is not one of {FOLDS[0]}..{FOLDS[-1]}")
    return k  # type: ignore[return-value]


def parse_int_list(text: str | Iterable[int] | None, where: str, what: str) -> list[int] | None:
    """A command line's comma list of non-negative integers: `"1,3"` (or [1, 3]) -> [1, 3], duplicates
    dropped, order kept; None or empty -> None (the caller's default). ConfigError naming `where` and
    saying each item must be `what` for anything else (a word, a sign, a bool, a non-ASCII digit)."""
    if text is None:
        return None
    parts = str(text).split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for part in parts:
        item = part.strip() if isinstance(part, str) else part
        if item == "":
            continue
        integer = isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item >= 0
        if not (integer or (isinstance(item, str) and item.isascii() and item.isdigit())):
            raise ConfigError(f"{where} {text!r}: each {what}")
        if int(item) not in out:
            out.append(int(item))
    return out or None


def parse_folds(text: str | Iterable[int] | None, where: str = "--folds") -> list[int] | None:
    """`parse_int_list` of folds: each must be one of 1..NUM_FOLDS."""
    folds = parse_int_list(text, where, f"fold must be an integer in {FOLDS[0]}..{FOLDS[-1]}")
    return [check_fold(k, where) for k in folds] if folds else None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")


def in_split(clip_test_fold: int, fold: int, split: str) -> bool:
    """Whether a clip whose test fold is `clip_test_fold` belongs to `split` of run fold `fold`."""
    _check_split(split)
    same = int(clip_test_fold) == int(fold)
    return same if split == "test" else not same


def split_mask(clip_test_folds: np.ndarray, fold: int, split: str) -> np.ndarray:
    """`in_split` over an array of clips' test folds (bool array of the same shape)."""
    _check_split(split)
    folds = np.asarray(clip_test_folds)
    return folds == int(fold) if split == "test" else folds != int(fold)
