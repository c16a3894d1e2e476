"""Seeds as a dimension of runs: the default seed, a `--seeds` list, and where each seed's folds live.

A run of name N on fold k with seed s lives in `<runs>/<N>/seed<s>/fold<k>/`. Runs made before
seeds were a dimension live in `<runs>/<N>/fold<k>/`; such a folder counts as the seed its
`config.json` records (`train.seed`; the default seed when it records none), so reports and
re-submitted sweeps keep finding them. `run_folders` lists both layouts under a run's folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.config import TrainConfig
from pipeline.core.errors import ConfigError
from pipeline.core.folds import FOLDS, parse_int_list

DEFAULT_SEED: int = TrainConfig().seed
_SEED_DIR = re.compile(r"^seed(\d+)$")
_FOLD_DIR = re.compile(r"^fold(\d+)$")


def seed_dir_name(seed: int) -> str:
    """`seed<s>`: the folder of one seed's folds inside a run's folder."""
    return f"seed{int(seed)}"


def parse_seeds(text: str | Iterable[int] | None, where: str = "--seeds") -> list[int] | None:
    """`"1,2,3"` (or [1, 2, 3]) -> [1, 2, 3] (`pipeline.core.folds.parse_int_list`): duplicates dropped,
    order kept, None or empty -> None, ConfigError naming `where` for anything not a non-negative integer."""
    return parse_int_list(text, where, "seed must be a non-negative integer")


def recorded_seed(fold_dir: Path) -> int:
    """The seed a fold folder was trained with: its config.json's train.seed, else the `seed<s>` folder it
    sits in, else the default seed."""
    try:
        saved: Any = json.loads((fold_dir / "config.json").read_text())
        seed = saved.get("train", {}).get("seed") if isinstance(saved, dict) else None
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    except (OSError, ValueError):
        pass
    match = _SEED_DIR.match(fold_dir.parent.name)
    return int(match.group(1)) if match else DEFAULT_SEED


def seeded_run_dir(run_root: Path, fold: int, seed: int) -> Path:
    """Where fold `fold` of seed `seed` of the run whose folder is `run_root` lives: `seed<s>/fold<k>`,
    or the layout before seeds (`fold<k>`) when that folder holds this seed and the seeded one does not exist."""
    seeded = run_root / seed_dir_name(seed) / f"fold{fold}"
    legacy = run_root / f"fold{fold}"
    if not seeded.exists() and legacy.is_dir() and recorded_seed(legacy) == int(seed):
        return legacy
    return seeded


def run_folders(run_root: Path) -> dict[int, dict[int, Path]]:
    """{seed: {fold: folder}} of the fold folders under a run's folder, in both layouts (a `seed<s>/fold<k>`
    folder wins over a `fold<k>` folder of the same seed). Empty when there are none."""
    found: dict[int, dict[int, Path]] = {}
    if not run_root.is_dir():
        return found
    for child in sorted(run_root.iterdir()):
        seed_match = _SEED_DIR.match(child.name)
        if seed_match and child.is_dir():
            for fold_dir in sorted(child.iterdir()):
                fold_match = _FOLD_DIR.match(fold_dir.name)
                if fold_match and fold_dir.is_dir() and int(fold_match.group(1)) in FOLDS:
                    found.setdefault(int(seed_match.group(1)), {})[int(fold_match.group(1))] = fold_dir
    for child in sorted(run_root.iterdir()):
        fold_match = _FOLD_DIR.match(child.name)
        if fold_match and child.is_dir() and int(fold_match.group(1)) in FOLDS:
            found.setdefault(recorded_seed(child), {}).setdefault(int(fold_match.group(1)), child)
    return {s: dict(sorted(folds.items())) for s, folds in sorted(found.items())}
