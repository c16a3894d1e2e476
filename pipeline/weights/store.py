"""The weights folder: known checkpoints under their expected names, and `weights.json` beside them.

`weights.json` records, per name, the file, its sha256 and size, where it came from and when.
Every file enters through `install` after the structure check (`model.inspect`), whether
`mma weights fetch` downloaded it or `mma weights add` copied (or linked) the user's file. An
encoder published in another layout (safetensors, OpenAI's CLIP names: `pipeline.weights.convert`)
is checked and installed converted; its entry then also records the published file's sha256
(`source_sha256`) and what the conversion did. `find` is how stages look an encoder up by name.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import ModelConfig
from model.inspect import Expected, check_file, inspect_checkpoint, require
from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json, read_json, sha256_file
from pipeline.core.results import StageResult
from pipeline.weights.check import expected_for_weights
from pipeline.weights.convert import encoder_tensors, write_encoder_file
from pipeline.weights.registry import WEIGHTS, WeightSpec, fetch_command, weight_spec

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


@dataclass(frozen=True)
class Checked:
    """A file that passed the structure check; `converted` (the object to write) when it needs conversion."""

    path: Path
    conversion: str | None = None
    converted: dict[str, Any] | None = None


def check_structure(spec: WeightSpec, path: Path, expected: Expected | None, given_as: str) -> Checked:
    """ModelError (one line naming `path`) unless it is a `spec.kind` checkpoint fitting `expected`.

    An encoder file in another layout is checked as it will be installed (converted).
    """
    if spec.role is None:
        check_file(path, spec.kind, given_as, expected)
        return Checked(path)
    obj, conversion = encoder_tensors(path)
    mel = expected.audio_mel_bins if expected is not None else ModelConfig().audio_mel_bins
    require(spec.kind, inspect_checkpoint(obj, path=path, audio_mel_bins=mel), given_as, expected)
    return Checked(path, conversion, obj if conversion else None)


def install(spec: WeightSpec, checked: Checked, folder: Path, *, source: str, sha256: str | None = None,
            link: bool = False, move: bool = True) -> dict[str, Any]:
    """Put a checked file into `folder` under `spec.filename` and record it; returns the entry.

    The file is moved (`move`), copied, or linked (`link`); one that needs conversion is written
    converted instead, and its entry keeps the published file's sha256 as `source_sha256`.
    """
    target = folder / spec.filename
    staged = checked.path
    source_digest = sha256 or sha256_file(staged)
    extra: dict[str, Any] = {}
    if checked.converted is not None:
        if link:
            raise MMAError(f"{staged}: --link cannot be used for this file: it is converted when installed "
                           f"({checked.conversion}); add it without --link")
        write_encoder_file(checked.converted, target)
        extra = {"source_sha256": source_digest, "converted": checked.conversion}
        digest = sha256_file(target)
        if move:
            staged.unlink(missing_ok=True)
    else:
        digest = source_digest
        if link:
            tmp = target.with_name(f".{target.name}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(staged.resolve())
            os.replace(tmp, target)
        elif move:
            os.replace(staged, target)
        else:
            tmp = target.with_name(f".{target.name}.copy")
            try:
                shutil.copyfile(staged, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    entry = {"file": spec.filename, "sha256": digest, "bytes": target.stat().st_size, "kind": spec.kind,
             "source": source, "linked": link, **extra,
             "added": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    record(folder, spec.name, entry)
    log.info("%s: %s installed as %s (sha256 %s%s)", spec.name, source, target, digest,
             f"; converted: {checked.conversion}" if checked.conversion else "")
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
            how = r["get"] if r["fetchable"] else f"browser, then: {r['get']}"
            lines.append(f"\n{r['name']}  [{state}]\n  {r['title']}\n  used as: {r['use']}\n  file:    {r['file']}"
                         + (f"\n  encoder: {', '.join(r['encoders'])}" if r["encoders"] else "")
                         + f"\n  source:  {r['url']}\n  get it:  {how}\n  licence: {r['licence']}"
                         + (f"\n  note:    {r['note']}" if r["note"] else ""))
        return "\n".join(lines)


def add(name: str, file: str | Path, folder: str | Path, *, force: bool = False, link: bool = False,
        expected: Expected | None = None, preset_name: str = "paper") -> WeightFile:
    """Register the user's `file` as `name`: structure check against `expected` (default: its encoder's
    geometry under `preset_name`), copy (or symlink, or write converted) into `folder`, sha256."""
    spec = weight_spec(name)
    expected = expected if expected is not None else expected_for_weights(name, preset_name)
    file, folder = Path(file), Path(folder)
    if not file.is_file():
        raise MMAError(f"{file}: file not found")
    checked = check_structure(spec, file, expected, f"`mma weights add {name}`")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.filename
    digest = sha256_file(file)
    if target.exists() and not force:
        entry = read_ledger(folder)["weights"].get(name) or {}
        if digest in (sha256_file(target), entry.get("source_sha256")):
            log.info("%s: %s already holds this file", name, target)
            return WeightFile(name, "present", str(target), sha256_file(target), entry)
        raise MMAError(f"{target}: already holds another {name} file (use --force to replace it)")
    entry = install(spec, checked, folder, source=str(file.resolve()), sha256=digest, link=link, move=False)
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
                     "use": spec.use, "note": spec.note, "encoders": list(spec.encoders),
                     "hub_id": spec.hub_id, "non_commercial": spec.non_commercial, "get": fetch_command(name),
                     "present": path is not None,
                     "path": str(path) if path else None, "sha256": entry.get("sha256") if path else None})
    return WeightsListing(str(folder), rows)
