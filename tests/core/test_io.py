"""Atomic writes leave finished files with the mode a plain `open()` gives (a shared workdir stays readable)."""

from __future__ import annotations

import stat
from pathlib import Path

from model.files import atomic_path
from pipeline.core.io import atomic_dir, atomic_write_json, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_and_folders_get_the_mode_of_plainly_created_ones(tmp_path):
    plain_file = tmp_path / "plain.txt"
    plain_file.write_text("x")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inside.txt").write_text("x")
    for name in ("a.txt", "a.json", "a.bin"):
        assert _mode(tmp_path / name) == _mode(plain_file), name
    assert _mode(tmp_path / "d") == _mode(plain_dir)
