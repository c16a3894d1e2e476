"""Disk space before and during a stage: free space, the refusal, and a full disk as a one-line error.

`mma prep`, `mma shard` and `mma cache` estimate what they will write (each next to its own
stage: `pipeline.prep.estimate`, `pipeline.store.shard.estimate_shard_bytes`,
`pipeline.store.cache.estimate_cache_bytes`), then call `check_space`, which logs the estimate and
refuses with one line naming the folder, the estimate and the free space when it does not fit
(`space_check=False`, `--no-space-check` on the command line, lets the stage try anyway).

A disk that fills up mid-stage raises OSError(ENOSPC) (or EDQUOT, a full quota) somewhere in the
stage's writes; every write is atomic (temp + rename), so nothing half-written is ever marked
finished. `stop_when_full` turns that OSError into the same kind of one-line error, saying that
the finished work is kept and that a rerun after freeing space resumes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.core.errors import MMAError

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_SPACE_CHECK = "--no-space-check"


class DiskSpaceError(MMAError):
    """A stage's output does not fit (refused before work), or the disk filled up while it wrote."""


def existing_parent(path: str | Path) -> Path:
    """`path` itself if it exists, else its nearest existing ancestor (the filesystem it will be on)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged writer can still use on the filesystem that holds (or will hold) `path`."""
    return int(shutil.disk_usage(existing_parent(path)).free)


def block_bytes(path: str | Path) -> int:
    """The filesystem's allocation unit at `path` (a 1-byte file still takes one of these)."""
    try:
        return max(1, int(os.statvfs(existing_parent(path)).f_frsize))
    except (OSError, AttributeError):  # no statvfs (Windows)
        return 4096


def allocated(size: int, block: int) -> int:
    """Bytes a file of `size` bytes takes on disk: whole blocks (an empty file takes none)."""
    return -(-int(size) // block) * block


def tree_bytes(path: str | Path) -> int:
    """Bytes the files under `path` take (0 when it does not exist): what removing it frees."""
    root = Path(path)
    if not root.exists():
        return 0
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def human_bytes(n: float) -> str:
    """'206.3 GB', '1.2 MB', '512 B' (decimal units, as disks are sold and `df -H` shows)."""
    value = float(n)
    if abs(value) < 1000:
        return f"{value:.0f} B"
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if abs(value) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


@dataclass(frozen=True)
class SpaceEstimate:
    """What a stage will write to `folder` (`needed` bytes), and what is free there (`free`, counting
    `freed`: what the stage removes before writing, e.g. a store it rebuilds)."""

    folder: str
    needed: int
    free: int
    freed: int = 0
    checked: bool = True

    @property
    def fits(self) -> bool:
        return self.needed <= self.free

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "estimate_bytes": self.needed, "free_bytes": self.free,
                "freed_bytes": self.freed, "checked": self.checked}


def check_space(folder: str | Path, needed: int, what: str, *, space_check: bool = True,
                freed: int = 0) -> SpaceEstimate:
    """Log what `what` (e.g. "prep dfew: 11697 clips") will write to `folder`; refuse when it does not fit.

    `freed` is what the stage deletes before it writes (added to the free space). Raises
    DiskSpaceError naming the folder, the estimate and the free space unless `space_check` is false,
    in which case the shortfall is only a warning.
    """
    folder = Path(folder)
    free = free_bytes(folder) + int(freed)
    estimate = SpaceEstimate(str(folder), int(needed), free, int(freed), space_check)
    extra = f", {human_bytes(freed)} of it freed by this run" if freed else ""
    log.info("%s: writes about %s to %s (%s free%s)", what, human_bytes(needed), folder, human_bytes(free), extra)
    if estimate.fits:
        return estimate
    message = (f"{folder}: not enough disk space for {what}: needs about {human_bytes(needed)}, "
               f"{human_bytes(free)} free")
    if space_check:
        raise DiskSpaceError(f"{message} (free some space, write elsewhere with --workdir, "
                             f"or pass {NO_SPACE_CHECK} to try anyway)")
    log.warning("%s (%s: trying anyway)", message, NO_SPACE_CHECK)
    return estimate


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write that failed because the filesystem (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


@contextlib.contextmanager
def stop_when_full(folder: str | Path, stage: str, rerun: str) -> Iterator[None]:
    """Turn a full disk inside the block into a one-line DiskSpaceError.

    `stage` words what was running ("mma shard dfew"), `rerun` the command that resumes it. The
    stage's atomic writes guarantee what the message says: finished work is kept, nothing
    half-written counts as finished.
    """
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = exc.filename or folder
        raise DiskSpaceError(f"{where}: disk full during {stage} ({os.strerror(exc.errno)}); finished work is "
                             f"kept: free some space and rerun `{rerun}` to resume") from None


__all__ = ["DiskSpaceError", "SpaceEstimate", "allocated", "block_bytes", "check_space", "existing_parent",
           "free_bytes", "human_bytes", "is_disk_full", "stop_when_full", "tree_bytes"]
