"""`mma init`: find DFEW/MAFW roots under a folder and write a commented project file `mma.yaml`.

A DFEW root holds `EmoLabel_DataSplit/` and `Clip/`; a MAFW root holds `Train & Test Set/` and
`data/clips/`. The folder itself, its subfolders and theirs (two levels down) are searched.
The file's keys are those `pipeline.core.project` reads; paths are written as found (absolute).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_text
from pipeline.core.project import PROJECT_FILE_NAME
from pipeline.core.results import StageResult

MARKERS = {
    "dfew": (Path("EmoLabel_DataSplit"), Path("Clip")),
    "mafw": (Path("Train & Test Set"), Path("data") / "clips"),
}


def _kind(folder: Path) -> str | None:
    for name, markers in MARKERS.items():
        if all((folder / m).is_dir() for m in markers):
            return name
    return None


def find_dataset_roots(folder: str | Path) -> dict[str, list[Path]]:
    """dataset name -> roots found at `folder`, in its subfolders, or one level below those."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MMAError(f"{folder}: not a directory (name the folder that holds your datasets)")
    found: dict[str, list[Path]] = {}
    level = [folder]
    for _depth in range(3):
        nxt: list[Path] = []
        for d in level:
            kind = _kind(d)
            if kind is not None:
                found.setdefault(kind, []).append(d.resolve())
                continue  # a dataset root's own subfolders are not searched
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        level = nxt
    return found


def render_project_file(roots: dict[str, Path], scanned: Path) -> str:
    """The commented `mma.yaml` text for the roots found (one per dataset)."""
    lines = [
        "# mma project file: what this lab sets once. Every `mma` command run in this folder reads it",
        "# (or name it with `mma --config FILE` / MMA_CONFIG). Relative paths are relative to this file.",
        "# Precedence: preset < this file < a command's --config file < --set < explicit flags;",
        "# workdir/manifests: --workdir/--manifests > MMA_WORKDIR/MMA_MANIFESTS > this file > defaults.",
        f"# Written by `mma init` from the datasets found under {scanned}.",
        "",
        "workdir: work                 # where every stage writes (prep, shards, cache, runs, sweeps)",
        "manifests: data_manifests     # generated manifests (clips.csv, classes.json)",
        "weights_dir: work/weights     # encoder checkpoints (MAE-Face, AudioMAE)",
        "",
        "datasets:",
    ]
    if roots:
        lines += [f"  {name}:\n    root: {_yaml_str(str(root))}" for name, root in sorted(roots.items())]
    else:
        lines[-1] = "datasets: {}"
        lines += ["#  mafw:", "#    root: /data/MAFW", "#  dfew:", "#    root: /data/DFEW"]
    lines.append("")
    if len(roots) == 1:
        lines.append(f"dataset: {next(iter(roots))}                 # used when a command names none")
    else:
        lines.append("# dataset: mafw               # used when a command names none")
    lines += [
        "preset: paper                 # paper | tiny",
        "",
        "# Any config field can be set here, e.g.:",
        "# vision_ckpt: work/weights/mae_face.pth",
        "# audio_ckpt: work/weights/audiomae.pth",
        "# model:",
        "#   image_size: 160",
        "#   latent_dim: 128",
        "# data:",
        "#   num_workers: 8",
        "# train:",
        "#   epochs: 25",
        "#   batch_size: 8",
        "# sweep:                      # SLURM options of `mma sweep`",
        "#   partition: gpu",
        "#   gpus: 1",
        "",
    ]
    return "\n".join(lines)


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML scalar (quotes '&', spaces, ...)


@dataclass(frozen=True)
class InitResult(StageResult):
    """`mma init`: the project file written, the dataset roots found (name -> root), the default dataset."""

    project_file: str
    datasets: dict[str, str]
    dataset: str | None
    scanned: str

    def text(self) -> str:
        lines = [f"wrote {self.project_file}"] + [f"  {name}: {root}" for name, root in self.datasets.items()]
        if not self.datasets:
            lines.append(f"no DFEW or MAFW root found under {self.scanned}: set datasets: in {self.project_file}")
        else:
            first = self.dataset or next(iter(self.datasets))
            lines.append(f"next: mma check {first}, then mma prep {first}")
        return "\n".join(lines)


def write_project_file(scan_dir: str | Path, out: str | Path | None = None, *, force: bool = False) -> InitResult:
    """Scan `scan_dir`, write the project file to `out` (default ./mma.yaml) atomically; return what was found.

    Refuses to overwrite an existing file unless `force`, and a folder holding two roots of one
    dataset (name the one you mean).
    """
    out = Path(out) if out is not None else Path(PROJECT_FILE_NAME)
    if out.exists() and not force:
        raise MMAError(f"{out}: exists (use --force to overwrite it)")
    found = find_dataset_roots(scan_dir)
    twice = {name: paths for name, paths in found.items() if len(paths) > 1}
    if twice:
        name, paths = next(iter(twice.items()))
        raise MMAError(f"{scan_dir}: several {name} roots ({', '.join(map(str, paths))}); run `mma init` on the one you mean")
    roots = {name: paths[0] for name, paths in found.items()}
    atomic_write_text(out, render_project_file(roots, Path(scan_dir).resolve()))
    return InitResult(str(out), {k: str(v) for k, v in roots.items()}, next(iter(roots)) if len(roots) == 1 else None,
                      str(scan_dir))
