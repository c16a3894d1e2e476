"""Where each stage reads and writes, relative to the workdir and the manifest folder.

Layout under the workdir (default ./work, env MMA_WORKDIR):
  <dataset>/prep/            per-clip prep results, failures.jsonl, summary.json
  <dataset>/shards/          WebDataset tars grouped by test fold + index.json
  <dataset>/cache.zarr       stage-1 patch-embedding cache
  <dataset>/runs/<name>/seed<s>/fold<k>/   training runs (runs made before seeds were a dimension:
                             <name>/fold<k>/, still found; pipeline.core.seeds)
  <dataset>/sweeps/<preset>/ sweep job state and reports
  weights/                   checkpoints `mma weights` fetched or registered + weights.json
                             (`weights_dir` in the project file puts it elsewhere)
Manifests: <manifest_dir>/<dataset>/clips.csv and classes.json (default ./data_manifests,
env MMA_MANIFESTS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.seeds import DEFAULT_SEED, seeded_run_dir

DEFAULT_WORKDIR = "work"
DEFAULT_MANIFESTS = "data_manifests"


def default_workdir() -> Path:
    return Path(os.environ.get("MMA_WORKDIR", DEFAULT_WORKDIR))


def default_manifest_dir() -> Path:
    return Path(os.environ.get("MMA_MANIFESTS", DEFAULT_MANIFESTS))


@dataclass(frozen=True)
class Workspace:
    """Paths of every stage's inputs and outputs for one workdir."""

    workdir: Path
    manifest_dir: Path
    weights_dir: Path | None = None

    @classmethod
    def from_env(cls, workdir: str | Path | None = None, manifest_dir: str | Path | None = None) -> "Workspace":
        return cls(
            Path(workdir) if workdir is not None else default_workdir(),
            Path(manifest_dir) if manifest_dir is not None else default_manifest_dir(),
        )

    @property
    def weights(self) -> Path:
        """The weights folder: encoder and trained checkpoints plus weights.json (`mma weights`)."""
        return self.weights_dir or self.workdir / "weights"

    def dataset_dir(self, dataset: str) -> Path:
        return self.workdir / dataset

    def manifest(self, dataset: str) -> Path:
        return self.manifest_dir / dataset / "clips.csv"

    def classes(self, dataset: str) -> Path:
        return self.manifest_dir / dataset / "classes.json"

    def prep_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "prep"

    def shards_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "shards"

    def cache_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "cache.zarr"

    def runs_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "runs"

    def run_dir(self, dataset: str, name: str, fold: int, seed: int = DEFAULT_SEED) -> Path:
        """`runs/<name>/seed<s>/fold<k>`; an existing `runs/<name>/fold<k>` of this seed (the layout before
        seeds) when the seeded folder does not exist."""
        return seeded_run_dir(self.runs_dir(dataset) / name, fold, seed)

    def sweeps_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "sweeps"
