"""The weights folder: known checkpoints under their expected names, and `weights.json` beside them.

`weights.json` records, per name, the file, its sha256 and size, where it came from and when.
Every file enters through `install` after the structure check (`model.inspect`), whether
`mma weights fetch` downloaded it or `mma weights add` copied (or linked) the user's file.
`find` is how stages look an encoder up by name.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.inspect import VIT_B, Expected, check_file
from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json, read_json, sha256_file
from pipeline.core.results import StageResult
from pipeline.weights.registry import WEIGHTS, WeightSpec, weight_spec

log = logging.getLogger(__name__)

LEDGER = "weights.json"
LEDGER_FORMAT = "mma-weights-v1"


def read_ledger(folder: str | Path) -> dict[str, Any]:
    """`weights.json` of `folder` ({"format", "weights": {name: entry}}); empty when absent."""
    path = Path(folder) / LEDGER
    data = read_json(path, default={"format": LEDGER_FORMAT, "weights": {}})
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise MMAError(f"{path}: not a weights ledger (no 'weights' object)")
    return data


def record(folder: str | Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Write `entry` for `name` into `weights.json` (atomically); returns the ledger."""
    ledger = read_ledger(folder)
    ledger["weights"][name] = entry
    atomic_write_json(Path(folder) / LEDGER, ledger)
    return ledger


def find(name: str, folder: str | Path) -> Path | None:
    """The file of `name` in the weights folder, or None when it is not there."""
    path = Path(folder) / weight_spec(name).filename
    return path if path.is_file() else None


def check_structure(spec: WeightSpec, path: Path, expected: Expected | None, given_as: str) -> None:
    """ModelError (one line naming `path`) unless it is a `spec.kind` checkpoint fitting `expected`."""
    check_file(path, spec.kind, given_as, expected)


def install(spec: WeightSpec, staged: Path, folder: Path, *, source: str, sha256: str | None = None,
            link: bool = False) -> dict[str, Any]:
    """Move (or link) a checked file into `folder` under `spec.filename` and record it; returns the entry."""
    target = folder / spec.filename
    digest = sha256 or sha256_file(staged)
    if link:
        tmp = target.with_name(f".{target.name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(staged.resolve())
        os.replace(tmp, target)
    else:
        os.replace(staged, target)
    entry = {"file": spec.filename, "sha256": digest, "bytes": target.stat().st_size, "kind": spec.kind,
             "source": source, "linked": link,
             "added": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    record(folder, spec.name, entry)
    log.info("%s: %s installed as %s (sha256 %s)", spec.name, source, target, digest)
    return entry


@dataclass(frozen=True)
class WeightFile(StageResult):
    """A checkpoint in the weights folder after `add` or `fetch`: status added | present | fetched."""

    name: str
    status: str
    path: str
    sha256: str
    entry: dict[str, Any] = field(default_factory=dict)  # its weights.json entry (source, size, when)

    def text(self) -> str:
        return f"{self.name}: {self.status} {self.path} (sha256 {self.sha256})"


@dataclass(frozen=True)
class WeightsListing(StageResult):
    """`mma weights list`: every known checkpoint, its source and licence, and whether `folder` holds it."""

    dir: str
    weights: list[dict[str, Any]]

    def text(self) -> str:
        lines = [f"weights folder: {self.dir}"]
        for r in self.weights:
            state = f"present: {r['path']}" + (f" (sha256 {r['sha256'][:12]})" if r["sha256"] else "") \
                if r["present"] else "missing"
            how = f"mma weights fetch {r['name']}" if r["fetchable"] else f"browser, then: mma weights add {r['name']} FILE"
            lines.append(f"\n{r['name']}  [{state}]\n  {r['title']}\n  used as: {r['use']}\n  file:    {r['file']}"
                         f"\n  source:  {r['url']}\n  get it:  {how}\n  licence: {r['licence']}"
                         + (f"\n  note:    {r['note']}" if r["note"] else ""))
        return "\n".join(lines)


def add(name: str, file: str | Path, folder: str | Path, *, force: bool = False, link: bool = False,
        expected: Expected | None = VIT_B) -> WeightFile:
    """Register the user's `file` as `name`: structure check, copy (or symlink) into `folder`, sha256."""
    spec = weight_spec(name)
    file, folder = Path(file), Path(folder)
    if not file.is_file():
        raise MMAError(f"{file}: file not found")
    check_structure(spec, file, expected, f"`mma weights add {name}`")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.filename
    digest = sha256_file(file)
    if target.exists() and not force:
        if sha256_file(target) == digest:
            log.info("%s: %s already holds this file", name, target)
            return WeightFile(name, "present", str(target), digest)
        raise MMAError(f"{target}: already holds another {name} file (use --force to replace it)")
    if link:
        entry = install(spec, file, folder, source=str(file.resolve()), sha256=digest, link=True)
    else:
        staged = target.with_name(f".{target.name}.copy")
        try:
            shutil.copyfile(file, staged)
            entry = install(spec, staged, folder, source=str(file.resolve()), sha256=digest)
        finally:
            staged.unlink(missing_ok=True)
    return WeightFile(name, "added", str(target), entry["sha256"], entry)


def listing(folder: str | Path) -> WeightsListing:
    """Every known checkpoint with its registry fields and whether (and as what) it is in `folder`."""
    folder = Path(folder)
    ledger = read_ledger(folder)["weights"] if folder.is_dir() else {}
    rows = []
    for name, spec in WEIGHTS.items():
        path = find(name, folder)
        entry = ledger.get(name) or {}
        rows.append({"name": name, "title": spec.title, "kind": spec.kind, "file": spec.filename,
                     "url": spec.url, "page": spec.page, "licence": spec.licence, "fetchable": spec.fetchable,
                     "use": spec.use, "note": spec.note, "present": path is not None,
                     "path": str(path) if path else None, "sha256": entry.get("sha256") if path else None})
    return WeightsListing(str(folder), rows)
