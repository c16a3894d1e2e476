"""Where a number came from: the `provenance` object of result.json / eval.json, and the check that
folds averaged into one mean share it.

A fold's provenance names the code (version, git commit), the data (manifest sha256, prep
settings hash, shard index sha256, the cache's provenance hash when trained from the cache), the
model (each encoder's timm name and weights sha256 or "random init", the resolved config's hash,
the training source), and the runtime (torch/timm versions, device, precision). `provenance_conflicts` lists the data and model
fields on which a set of folds disagree, which reports refuse to average unless told otherwise.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from pipeline.core.config import RunConfig, to_dict
from pipeline.core.io import read_json_or, sha256_file, sha256_json
from pipeline.core.paths import Workspace
from pipeline.engine.batches import autocast_dtype
from pipeline.store.cache import stored_provenance
from pipeline.weights.resolve import encoder_identities

log = logging.getLogger(__name__)

# Config fields that say where or how fast a run ran, not what it computed.
RUN_ONLY_FIELDS = ("fold", "name", "vision_ckpt", "audio_ckpt", "data.num_workers", "train.compile",
                   "train.checkpointing", "train.log_every")
# Fields that must agree for folds to be averaged: what data went in, and what model/recipe made the number.
DATA_FIELDS = ("manifest_sha256", "prep_config_hash", "shard_index_sha256")
MODEL_FIELDS = ("encoders", "config_sha256", "source", "cache_views", "cache_provenance_sha256", "precision")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The installed `mma` version and, when running from a git checkout, its commit (+ '-dirty')."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("mma")
    except PackageNotFoundError:
        ver = None
    root = Path(__file__).resolve().parents[2]
    commit = None
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10)
            if head.returncode == 0:
                commit = head.stdout.strip()
                dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10)
                if dirty.returncode == 0 and dirty.stdout.strip():
                    commit += "-dirty"
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"version": ver, "git_commit": commit}


def config_hash(cfg: RunConfig) -> str:
    """sha256 of the resolved config without the fields that do not change what a run computes."""
    values = to_dict(cfg)
    for dotted in RUN_ONLY_FIELDS:
        *parents, leaf = dotted.split(".")
        node = values
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return sha256_json(values)


def precision_name(cfg: RunConfig, device: torch.device) -> str:
    """The arithmetic the run used: bf16 (autocast) or fp32."""
    return "bf16" if autocast_dtype(cfg.train.precision, device, cfg.data.compat) == torch.bfloat16 else "fp32"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def run_provenance(cfg: RunConfig, ws: Workspace, net: torch.nn.Module, device: torch.device,
                   encoders: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance object of a result computed by `net` under `cfg` on `ws`'s data."""
    import timm

    manifest = ws.manifest(cfg.dataset)
    index_path = ws.shards_dir(cfg.dataset) / "index.json"
    index = read_json_or(index_path, {}) or {}
    sources = dict(encoders or getattr(net, "encoder_sources", {}) or {})
    cache_hash = None
    if cfg.train.source == "cache":
        stored = stored_provenance(ws.cache_path(cfg.dataset))
        cache_hash = sha256_json(stored) if stored is not None else None
    return {
        **code_version(),
        "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
        "prep_config_hash": index.get("prep_hash"),
        "shard_index_sha256": sha256_file(index_path) if index_path.is_file() else None,
        "cache_provenance_sha256": cache_hash,
        "encoders": encoder_identities(cfg.model, sources),
        "config_sha256": config_hash(cfg),
        "source": cfg.train.source,
        "cache_views": cfg.data.cache_views if cfg.train.source == "cache" else None,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": _device_name(device),
        "precision": precision_name(cfg, device),
    }


def provenance_conflicts(results: Mapping[int, Mapping[str, Any]], *, label: str = "fold",
                         ignore: Sequence[str] = ()) -> list[str]:
    """One line per data/model provenance field on which the results disagree (empty: they agree).

    `results` are keyed by fold (or by what `label` names, e.g. "seed"); fields in `ignore` are not
    compared. A result without a provenance object (written before provenance existed) counts as unknown.
    """
    lines = []
    for field in (*DATA_FIELDS, *MODEL_FIELDS):
        if field in ignore:
            continue
        values = {k: sha256_json((r.get("provenance") or {}).get(field, "unknown")) for k, r in results.items()}
        if len(set(values.values())) > 1:
            groups: dict[str, list[int]] = {}
            for k, v in values.items():
                groups.setdefault(v, []).append(k)
            shown = {v: (results[ks[0]].get("provenance") or {}).get(field, "unknown") for v, ks in groups.items()}
            parts = [f"{label}{'s' if len(ks) > 1 else ''} {','.join(map(str, ks))}: {_short(shown[v])}"
                     for v, ks in groups.items()]
            lines.append(f"{field} differs ({'; '.join(parts)})")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "…"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return str(value)
