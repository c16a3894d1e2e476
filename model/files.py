"""The two file helpers the model package needs: an atomic write path and a file's sha256.

The pipeline's I/O module re-uses these, so each exists once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _process_umask() -> int:
    mask = os.umask(0o022)  # read once at import (setting it back at once), before any worker threads start
    os.umask(mask)
    return mask


UMASK = _process_umask()
FILE_MODE = 0o666 & ~UMASK  # what open() would give a new file: a shared workdir stays readable by the group
DIR_MODE = 0o777 & ~UMASK


def tmp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty temporary file next to `path` (same filesystem, so a rename is atomic), with the mode a
    plainly created file would have (mkstemp's own 0600 would make every finished file private)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path to write to; it is renamed to `path` only if the block succeeds.

    For writers that want a file name (torch.save, matplotlib savefig, np.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path, suffix=suffix or ".tmp" + path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
