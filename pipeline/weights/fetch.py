"""`mma weights fetch`: download a known checkpoint over plain HTTPS, resumably, and install it.

The body goes to `<file>.part` in the weights folder with a progress bar. A dropped connection
is retried with a `Range` request from the bytes already there (a server that ignores Range
answers 200 and the download restarts); after the last retry the `.part` stays, and the same
command resumes it later. A finished download is checked (size, the registry's sha256 when
known, then the structure check of `model.inspect`) before it is renamed into place and its
sha256 recorded in `weights.json`; a corrupt one is deleted and never installed. A source that
needs a browser is not scraped: the result carries the link and the `mma weights add` command.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.inspect import Expected
from pipeline.core.errors import USER_ERRORS, MMAError
from pipeline.core.io import sha256_file
from pipeline.core.progress import progress_bar
from pipeline.core.results import StageResult
from pipeline.weights.check import expected_for_weights
from pipeline.weights.registry import (
    WeightSpec,
    source_url,
    url_override_var,
    weight_spec,
)
from pipeline.weights.store import WeightFile, check_structure, find, install, read_ledger

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MIB = float(1 << 20)
_DROPPED = (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError, socket.timeout,
            TimeoutError)


class _Dropped(Exception):
    """The connection ended before the body did."""


@dataclass(frozen=True)
class ManualSteps(StageResult):
    """A checkpoint whose source needs a browser: the link and the exact registration command."""

    name: str
    url: str
    command: str
    instructions: str
    status: str = "manual"

    def text(self) -> str:
        return self.instructions


@dataclass(frozen=True)
class FetchResult(StageResult):
    """`mma weights fetch NAME...`: per name a WeightFile (present | fetched) or ManualSteps, and one line
    per download that failed (rerunning resumes it; the others were still tried)."""

    results: list[WeightFile | ManualSteps]
    failures: list[str]

    def text(self) -> str:
        return "\n".join(r.text() for r in self.results)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(self.failures)


def manual_steps(spec: WeightSpec, url: str) -> ManualSteps:
    """What to do for a source that needs a browser: the link and the exact registration command."""
    command = f"mma weights add {spec.name} {spec.filename}"
    text = (f"{spec.name}: {spec.title} needs a browser ({spec.note or 'not a plain HTTPS file'}).\n"
            f"  1. download it from {url}\n"
            f"  2. register it (checked, copied into the weights folder, sha256 recorded):\n"
            f"       {command}\n"
            f"  licence: {spec.licence}")
    return ManualSteps(spec.name, url, command, text)


def _total_from(resp: Any, offset: int) -> int | None:
    content_range = resp.headers.get("Content-Range") or ""
    m = re.match(r"bytes\s+\d+-\d+/(\d+)", content_range)
    if m:
        return int(m.group(1))
    length = resp.headers.get("Content-Length")
    return int(length) + offset if length is not None and length.isdigit() else None


def _download_once(url: str, part: Path, timeout: float, progress: Any, task: Any) -> int | None:
    """One request: append to `part` from its size (Range), restart on a 200; returns the total size.

    Raises _Dropped when the body ends early.
    """
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mma-weights"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left after `offset`: the part is complete
            return offset
        raise MMAError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, _DROPPED):
            raise _Dropped(str(exc.reason)) from None
        raise MMAError(f"{url}: cannot connect ({exc.reason})") from None
    except _DROPPED as exc:
        raise _Dropped(str(exc)) from None
    with resp:
        if offset and resp.status != 206:
            log.info("%s: the server ignored the Range request; downloading from the start", url)
            offset = 0
        total = _total_from(resp, offset)
        progress.update(task, total=total / MIB if total else None, completed=offset / MIB)
        with open(part, "ab" if offset else "wb") as fh:
            try:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    progress.advance(task, len(block) / MIB)
            except _DROPPED as exc:
                raise _Dropped(f"{type(exc).__name__}") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Dropped(f"body ended at {size} of {total} bytes")
    return total


def fetch(name: str, folder: str | Path, *, url: str | None = None, force: bool = False, retries: int = 3,
          timeout: float = 60.0, expected: Expected | None = None, preset_name: str = "paper"
          ) -> WeightFile | ManualSteps:
    """Download checkpoint `name` into `folder`.

    A WeightFile with status "present" (already there and recorded; `force` downloads again) or
    "fetched", or ManualSteps (needs a browser). `url` (or the `MMA_WEIGHTS_URL_<NAME>` variable)
    replaces the registry's URL. The download must have `expected`'s geometry (default: its
    encoder's architecture under `preset_name`, `check.expected_for_weights`).
    """
    spec = weight_spec(name)
    expected = expected if expected is not None else expected_for_weights(name, preset_name)
    folder = Path(folder)
    src, fetchable = (url, True) if url else source_url(spec)
    existing = find(name, folder)
    if existing is not None and not force:
        entry = read_ledger(folder)["weights"].get(name) or {}
        log.info("%s: already in %s (use --force to download again)", name, existing)
        return WeightFile(name, "present", str(existing), entry.get("sha256") or sha256_file(existing), entry)
    if not fetchable:
        return manual_steps(spec, src)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{spec.filename}.part"
    if part.exists():
        log.info("%s: resuming %s from %d bytes", name, part, part.stat().st_size)
    total: int | None = None
    with progress_bar(f"fetch {name}", 0, unit="MiB") as progress:
        task = progress.add_task(f"fetch {name}", total=None)
        for attempt in range(retries + 1):
            try:
                total = _download_once(src, part, timeout, progress, task)
                break
            except _Dropped as exc:
                have = part.stat().st_size if part.exists() else 0
                log.warning("%s: connection dropped (%s) at %d bytes%s", name, exc, have,
                            "; resuming" if attempt < retries else "")
        else:
            have = part.stat().st_size if part.exists() else 0
            raise MMAError(f"{src}: download of {name} interrupted at {have} bytes after {retries + 1} attempt(s); "
                           f"run the same command again to resume from {part}")
    size = part.stat().st_size
    digest = sha256_file(part)
    problem = None
    checked = None
    if total is not None and size != total:
        problem = f"{size} bytes instead of {total}"
    elif spec.sha256 and digest != spec.sha256:
        problem = f"sha256 {digest[:16]}... is not the published {spec.sha256[:16]}..."
    else:
        try:
            checked = check_structure(spec, part, expected, f"a download of {name}")
        except ModelError as exc:
            problem = str(exc).split(": ", 1)[-1]
    if problem or checked is None:
        part.unlink(missing_ok=True)
        raise MMAError(f"{src}: the download of {name} is corrupt ({problem}); deleted, not installed")
    entry = install(spec, checked, folder, source=src, sha256=digest)
    return WeightFile(name, "fetched", str(folder / spec.filename), entry["sha256"], entry)


__all__ = ["fetch", "manual_steps", "url_override_var"]


def fetch_all(names: list[str], folder: str | Path, *, force: bool = False, preset_name: str = "paper",
              expected: Expected | None = None) -> FetchResult:
    """`mma weights fetch NAME...`: every name is tried (an unknown one fails before any download); a
    failed download is an error line and the others still run (rerunning resumes it). Each file is
    checked against `expected`, by default its encoder's geometry under `preset_name`."""
    for name in names:
        weight_spec(name)
    results, errors = [], []
    for name in names:
        try:
            results.append(fetch(name, folder, force=force, expected=expected, preset_name=preset_name))
        except USER_ERRORS as exc:
            errors.append(str(exc).splitlines()[0])
    return FetchResult(results, errors)
