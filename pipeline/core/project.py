"""The project file `mma.yaml`: what a lab sets once, and which dataset a command means.

Where it is read from: the file named by `mma --config FILE` (or env `MMA_CONFIG`), else
`mma.yaml` in the current directory, else nothing (every key keeps its default). Keys:

    workdir: work                 # where every stage writes
    manifests: data_manifests     # generated manifests (clips.csv, classes.json)
    weights_dir: work/weights     # encoder checkpoints (default <workdir>/weights)
    datasets: {mafw: {root: /data/MAFW}, dfew: {root: /data/DFEW}}
    dataset: mafw                 # the dataset commands use when none is named
    preset: paper                 # paper | tiny
    model: {...}  data: {...}  train: {...}  sweep: {...}   # any config field
    vision_ckpt: ...  audio_ckpt: ...  name: ...              # run fields

Relative paths are relative to the file's folder. Unknown keys are a one-line ConfigError
naming the file and the key. A stage's `--config FILE` accepts the same keys except the
workspace ones (workdir, manifests, weights_dir, datasets), which only a project file sets.

Precedence of workdir/manifests/weights_dir: flag > environment (MMA_WORKDIR, MMA_MANIFESTS)
> project file > default. Precedence of config values: preset < project file < `--config`
file < `--set` < explicit flags. Which dataset a command means: `resolve_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.core.config import load_config_file
from pipeline.core.errors import ConfigError, MMAError
from pipeline.core.paths import DEFAULT_MANIFESTS, DEFAULT_WORKDIR, Workspace

PROJECT_FILE_NAME = "mma.yaml"
CONFIG_ENV = "MMA_CONFIG"
WORKSPACE_KEYS = ("workdir", "manifests", "weights_dir", "datasets")
SECTION_KEYS = ("model", "data", "train", "sweep")
RUN_KEYS = ("fold", "name", "vision_ckpt", "audio_ckpt")  # RunConfig fields a file may set
PROJECT_KEYS = (*WORKSPACE_KEYS, "dataset", "preset", *SECTION_KEYS, *RUN_KEYS)
DATASET_KEYS = ("root",)


@dataclass
class ProjectFile:
    """The parsed project file (or a stage's `--config` file); `path` is None when there is none."""

    path: Path | None = None
    workdir: Path | None = None
    manifests: Path | None = None
    weights_dir: Path | None = None
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: str | None = None
    preset: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    def config_layer(self) -> dict[str, Any]:
        """The RunConfig layer this file contributes: its model/data/train sections and run fields."""
        layer: dict[str, Any] = {k: dict(getattr(self, k)) for k in ("model", "data", "train") if getattr(self, k)}
        layer.update(self.run)
        return layer

    def dataset_root(self, dataset: str) -> Path | None:
        """`datasets.<dataset>.root`, or None when the file does not set it."""
        root = self.datasets.get(dataset, {}).get("root")
        return Path(root) if root is not None else None

    def describe(self) -> str:
        """Where the settings came from, for messages: the file, or that there is none."""
        return str(self.path) if self.path is not None else f"no {PROJECT_FILE_NAME} in {Path.cwd()}"


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ConfigError(f"{where}: want a path, got {value!r}")
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else base / p


def parse_project(data: Mapping[str, Any], path: Path, *, workspace_keys: bool = True) -> ProjectFile:
    """A ProjectFile from the mapping read from `path`; unknown keys raise ConfigError naming both."""
    base = path.parent
    allowed = PROJECT_KEYS if workspace_keys else tuple(k for k in PROJECT_KEYS if k not in WORKSPACE_KEYS)
    for key in data:
        if key not in allowed:
            if key in WORKSPACE_KEYS:
                raise ConfigError(f"{path}: {key!r} is a project key; name a project file with "
                                  f"`mma --config {path} ...` (or {CONFIG_ENV}) instead of a stage's --config")
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(allowed)}")
    out = ProjectFile(path=path)
    for key in ("workdir", "manifests", "weights_dir"):
        if data.get(key) is not None:
            setattr(out, key, _path(data[key], base, f"{path}: {key}"))
    datasets = data.get("datasets") or {}
    if not isinstance(datasets, Mapping):
        raise ConfigError(f"{path}: 'datasets' must map a dataset name to {{root: DIR}}")
    for name, entry in datasets.items():
        entry = entry or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{path}: 'datasets.{name}' must be a mapping like {{root: DIR}}")
        for key in entry:
            if key not in DATASET_KEYS:
                raise ConfigError(f"{path}: unknown key 'datasets.{name}.{key}'; known: {', '.join(DATASET_KEYS)}")
        out.datasets[str(name)] = (
            {"root": _path(entry["root"], base, f"{path}: datasets.{name}.root")} if entry.get("root") else {}
        )
    for key in ("dataset", "preset"):
        if data.get(key) is not None:
            setattr(out, key, str(data[key]))
    for key in SECTION_KEYS:
        section = data.get(key) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{path}: '{key}' is a section; give a mapping")
        setattr(out, key, dict(section))
    out.run = {k: data[k] for k in RUN_KEYS if k in data}
    return out


def find_project_file(explicit: str | Path | None = None, cwd: str | Path | None = None) -> Path | None:
    """The project file to read: `explicit` (must exist), else `mma.yaml` in `cwd`, else None."""
    if explicit is not None and str(explicit):
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: project file not found (from --config / {CONFIG_ENV})")
        return path
    candidate = Path(cwd if cwd is not None else Path.cwd()) / PROJECT_FILE_NAME
    return candidate if candidate.is_file() else None


def load_project(explicit: str | Path | None = None, cwd: str | Path | None = None) -> ProjectFile:
    """Read the project file (see `find_project_file`); an empty ProjectFile when there is none."""
    path = find_project_file(explicit, cwd)
    if path is None:
        return ProjectFile()
    return parse_project(load_config_file(path), path)


def load_stage_config(path: str | Path) -> ProjectFile:
    """A stage's `--config FILE`: the project file's keys without the workspace ones."""
    path = Path(path)
    return parse_project(load_config_file(path), path, workspace_keys=False)


def project_workspace(project: ProjectFile, workdir: Path | None, manifests: Path | None) -> Workspace:
    """The Workspace: flag/env values first, then the project file, then the defaults."""
    return Workspace(
        workdir if workdir is not None else project.workdir or Path(DEFAULT_WORKDIR),
        manifests if manifests is not None else project.manifests or Path(DEFAULT_MANIFESTS),
        project.weights_dir,
    )


def prepared_datasets(ws: Workspace) -> list[str]:
    """Datasets prepared in the workdir: `<workdir>/<name>/prep/` holding summary.json or prep_config.json."""
    if not ws.workdir.is_dir():
        return []
    return sorted(
        p.name for p in ws.workdir.iterdir()
        if p.is_dir() and any((ws.prep_dir(p.name) / f).is_file() for f in ("summary.json", "prep_config.json"))
    )


def resolve_dataset(explicit: str | None, project: ProjectFile, ws: Workspace) -> str:
    """The dataset a command means: named > the project file's `dataset` > the only one prepared."""
    if explicit:
        return explicit
    if project.dataset:
        return project.dataset
    prepared = prepared_datasets(ws)
    if len(prepared) == 1:
        return prepared[0]
    if not prepared:
        raise MMAError(f"no dataset named and none is prepared in {ws.workdir}: run `mma prep <dataset>` first, "
                       f"name one (e.g. `mma train mafw --fold 3`), or set `dataset:` in {PROJECT_FILE_NAME}")
    raise MMAError(f"no dataset named and {ws.workdir} has several prepared ({', '.join(prepared)}): name one "
                   f"(e.g. `mma train {prepared[0]} --fold 3`) or set `dataset:` in {PROJECT_FILE_NAME}")


def dataset_root(dataset: str, explicit: str | Path | None, project: ProjectFile) -> Path:
    """`--root`, else the project file's `datasets.<dataset>.root`; else a one-line error saying where
    it looked and how to set it."""
    if explicit is not None:
        return Path(explicit)
    root = project.dataset_root(dataset)
    if root is not None:
        return root
    where = f"{project.path} has no datasets.{dataset}.root" if project.path else project.describe()
    raise MMAError(f"no --root for {dataset}: {where}; write one with `mma init /path/to/datasets` "
                   f"(or add datasets: {{{dataset}: {{root: DIR}}}} to {PROJECT_FILE_NAME}), or pass --root DIR")
