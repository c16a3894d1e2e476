
"""`mma cache`: stage 1 of the model (frozen patch embeddings) over the shards into a zarr v3 store.

Store `<workdir>/<ds>/cache.zarr` (one row per clip, rows grouped by shard):
  vision   (rows, K+3, T, Nv, D)  patch tokens of the face frames   } float16/bfloat16-as-float16,
  audio    (rows, A, Na, D)       patch tokens of the spectrogram   } Blosc(lz4, shuffle)-compressed
  clip_id, label, fold, valid (rows,)   valid=False marks alignment padding and unreadable clips
  shard_done (shards,)                  per-shard done markers (resume)
Views (axis 1): 0..K-1 = K pre-augmented training views (`data.cache_views`), K = the test view,
K+1, K+2 = the two-clip test views. Every clip has both kinds, because it is a training clip
for four folds and a test clip for its own. A = 1 when data.audio_window="start" (the audio
input is then the same for every view), else A = K+3.

Chunks: one view of `chunk_rows` clips, chunk_rows the smallest count reaching 1 MiB (paper
geometry: 1 clip for vision, 3 for audio), capped at the largest shard; each shard's rows start
on a chunk boundary (at most chunk_rows-1 padding rows per shard), so the Dask tasks (one per
shard, via pipeline.prep.cluster) write disjoint chunks in parallel. With the `tiny` preset
(S=32, D=64: 8 KiB vision / 32 KiB audio per clip-view) the cap wins: one chunk per shard.

The store's attrs record its provenance (shards, prep hash, sampling, image size, model
geometry, and per encoder its timm name, the weights file's path/sha256 ("random init" when
none) and a hash of the patch-embedding weights actually used - which also pins randomly
initialised encoders to their seed). `check_cache_matches` recomputes that for a config and
names the first field that differs; a cache made with one encoder (name or weights) is never
read for another: building, `check_cache_matches` and the loader refuse it in one line naming both. `build_cached_loader`
yields (vision_tokens, audio_tokens, label, clip_id) batches for `forward_embedded`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from model.families import encoder_geometry, encoder_norm
from pipeline.core.config import RunConfig, saved_run_config, to_dict
from pipeline.core.device import pick_device
from pipeline.core.disk import SpaceEstimate, block_bytes, check_space, stop_when_full, tree_bytes
from pipeline.core.errors import MMAError
from pipeline.core.folds import split_mask
from pipeline.core.io import sha256_json
from pipeline.core.paths import Workspace
from pipeline.core.results import StageResult
from pipeline.core.seeded_model import build_seeded_model
from pipeline.prep.cluster import ClusterSpec, map_tasks, open_client
from pipeline.store.sampling import ClipSampler, clip_rng
from pipeline.store.shard import read_index, sample_key
from pipeline.store.stream import EpochDataset, epoch_clips, iter_clips, loader_kwargs, reader_slot, step_share
from pipeline.weights.resolve import RANDOM_INIT, describe_identity, encoder_identities, resolve_encoder_checkpoints

log = logging.getLogger(__name__)

CACHE_FORMAT = "mma-cache-v1"
TEST_VIEWS = ((0, 1), (0, 2), (1, 2))  # (view, num_views) of the deterministic views after the K train views
MIN_CHUNK_BYTES = 1 << 20
READ_THREADS = 4


# --------------------------------------------------------------------------- model and provenance


def _module_sha256(module: torch.nn.Module | None) -> str | None:
    if module is None:
        return None
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def build_stage1_model(cfg: RunConfig) -> torch.nn.Module:
    """The model as the trainer builds it (torch seeded with train.seed, then encoder checkpoints).

    The caller's RNG state is left untouched.
    """

    return build_seeded_model(cfg.model, cfg.train.seed, cfg.vision_ckpt, cfg.audio_ckpt).eval()


def encoder_provenance(net: torch.nn.Module) -> dict[str, Any]:
    """Per encoder: timm name, weights path + sha256 ("random init" when none) and the patch-embedding
    weights' hash (None for an encoder the model does not have)."""
    sources = getattr(net, "encoder_sources", {}) or {}
    identities = encoder_identities(net.config, sources)
    out = {}
    for which in ("vision", "audio"):
        enc = getattr(net, which, None)
        ident = identities.get(which) or {"name": None, "sha256": None}
        out[which] = {**ident, "path": (sources.get(which) or {}).get("path"),
                      "patch_embed_sha256": _module_sha256(enc.patch_embed if enc is not None else None)}
    return out


def _token_shapes(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """(patch tokens, width) of each encoder's stage-1 output; (0, width of the other) for an absent one."""
    m = cfg.model
    shapes = {w: (g.num_patches, g.width) for w in m.encoders() for g in [encoder_geometry(m, w)]}
    width = next(iter(shapes.values()))[1]
    return {w: shapes.get(w, (0, width)) for w in ("vision", "audio")}


def provenance(cfg: RunConfig, index: dict[str, Any], encoders: dict[str, Any]) -> dict[str, Any]:
    """What a cache is made from, as a flat {field: value} (the fields check_cache_matches compares)."""

    m = cfg.model
    first = encoder_geometry(m, m.encoders()[0])
    sampling = ClipSampler.from_config(cfg).params()
    return {
        "format": CACHE_FORMAT,
        "dataset": cfg.dataset,
        "prep_hash": index["prep_hash"],
        "shards_sha256": sha256_json([[s["name"], s["sha256"]] for s in index["shards"]]),
        "model.image_size": m.image_size,
        "model.num_frames": m.num_frames,
        "model.embed_dim": first.width,
        "model.patch_size": first.patch_size[0],
        "model.vision_norm": [list(n) for n in dataclasses.astuple(encoder_norm(m, "vision"))],
        "model.audio_frames": m.audio_frames,
        "model.audio_mel_bins": m.audio_mel_bins,
        "model.modality": m.modality,
        **{f"data.{k}": v for k, v in sampling.items() if k not in ("num_frames", "image_size")},
        "data.cache_views": cfg.data.cache_views,
        "data.cache_dtype": cfg.data.cache_dtype,
        "encoders.vision": encoders["vision"],
        "encoders.audio": encoders["audio"],
    }


def _describe(enc: dict[str, Any] | None) -> str:
    if not enc or not enc.get("patch_embed_sha256"):
        return "no encoder"
    if not enc.get("name"):  # a cache written before encoder names were recorded
        return f"an unnamed encoder ({enc.get('sha256') or RANDOM_INIT})"
    return describe_identity(enc)


def _identity(enc: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """(timm name, weights sha256 or "random init") of a stored encoder entry; None for no encoder."""
    if not enc or not enc.get("patch_embed_sha256"):
        return None
    return enc.get("name"), enc.get("sha256") or RANDOM_INIT


def _difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first field on which a cache's provenance differs from `wanted`, as one line; None when it fits.

    Another encoder (name or weights) is named first: it changes much else (input statistics,
    geometry). The same encoder whose patch embedding differs (random init under another seed or
    geometry) comes last, after the plain fields.
    """
    encoders = [k for k in wanted if k.startswith("encoders.")]
    for key in encoders:
        if _identity(stored.get(key)) != _identity(wanted[key]):
            return f"{key}: cache made with {_describe(stored.get(key))}, this config gives {_describe(wanted[key])}"
    for key in wanted:
        a, b = stored.get(key), wanted[key]
        if key not in encoders and json.loads(json.dumps(a)) != json.loads(json.dumps(b)):
            return f"{key}: cache has {a!r}, this config has {b!r}"
    for key in encoders:
        a, b = stored.get(key) or {}, wanted[key]
        if a.get("patch_embed_sha256") != b.get("patch_embed_sha256"):
            return (f"{key}: cache made with {_describe(a)}, patch embedding {str(a.get('patch_embed_sha256'))[:12]}; "
                    f"this config gives patch embedding {str(b.get('patch_embed_sha256'))[:12]}")
    return None


def _open_store(path: Path, mode: str = "r") -> Any:
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # FileNotFoundError, zarr errors on a damaged store
        raise MMAError(f"{path}: not a readable zarr cache ({type(exc).__name__}: {exc})") from None


def stored_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance a cache store was built with (None when there is no store)."""
    if not Path(path).exists():
        return None
    return dict(_open_store(Path(path)).attrs).get("provenance")


def check_cache_matches(cfg: RunConfig, ws: Workspace) -> dict[str, Any]:
    """Raise MMAError naming the first differing field unless the cache fits `cfg`; returns its attrs."""

    path = ws.cache_path(cfg.dataset)
    if not path.exists():
        raise MMAError(f"{path}: no cache (run `mma cache {cfg.dataset}` first)")
    attrs = dict(_open_store(path).attrs)
    if not attrs.get("complete"):
        raise MMAError(f"{path}: cache is unfinished (rerun `mma cache {cfg.dataset}` to complete it)")
    wanted = provenance(cfg, read_index(ws, cfg.dataset), encoder_provenance(build_stage1_model(cfg)))
    diff = _difference(attrs.get("provenance", {}), wanted)
    if diff:
        raise MMAError(f"{path}: cache does not match the config ({diff}); rebuild it with `mma cache {cfg.dataset} --force`")
    return attrs


# --------------------------------------------------------------------------- layout


def _chunk_rows(bytes_per_row: list[int], max_shard: int) -> tuple[int, list[int]]:
    """(alignment R, chunk rows per array): each array's rows reach 1 MiB, all dividing R <= max_shard."""
    wants = [max(1, math.ceil(MIN_CHUNK_BYTES / b)) if b else 1 for b in bytes_per_row]
    align = min(math.lcm(*wants), max(1, max_shard))
    return align, [w if w <= align and align % w == 0 else align for w in wants]


def plan_layout(cfg: RunConfig, index: dict[str, Any]) -> dict[str, Any]:
    """Rows per shard (chunk-aligned starts), array shapes and chunks."""
    shapes = _token_shapes(cfg)
    (nv, dv), (na, da) = shapes["vision"], shapes["audio"]
    m = cfg.model
    k = cfg.data.cache_views
    views = k + len(TEST_VIEWS)
    audio_views = 1 if cfg.data.audio_window == "start" else views
    vision_row = m.num_frames * nv * dv * 2
    audio_row = na * da * 2
    align, (cv, ca) = _chunk_rows([vision_row, audio_row], max(s["count"] for s in index["shards"]))
    shards, row = [], 0
    for s in index["shards"]:
        shards.append({"name": s["name"], "fold": s["fold"], "start": row, "count": s["count"]})
        row += -(-s["count"] // align) * align
    return {"rows": row, "align": align, "views": views, "train_views": k, "audio_views": audio_views,
            "vision_shape": [row, views, m.num_frames, nv, dv], "vision_chunk_rows": cv,
            "audio_shape": [row, audio_views, na, da], "audio_chunk_rows": ca, "shards": shards,
            "test_views": {"1": [k], "2": [k + 1, k + 2]}}


def _create_store(path: Path, layout: dict[str, Any], attrs: dict[str, Any]) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    root = zarr.open_group(str(path), mode="w")
    rows, align = layout["rows"], layout["align"]
    vs, as_ = layout["vision_shape"], layout["audio_shape"]
    if vs[3]:
        root.create_array("vision", shape=vs, chunks=[layout["vision_chunk_rows"], 1, *vs[2:]], dtype="float16",
                          compressors=codec, fill_value=0.0)
    if as_[2]:
        root.create_array("audio", shape=as_, chunks=[layout["audio_chunk_rows"], 1, *as_[2:]], dtype="float16",
                          compressors=codec, fill_value=0.0)
    root.create_array("clip_id", shape=(rows,), chunks=(align,), dtype=str)
    root.create_array("label", shape=(rows,), chunks=(align,), dtype="int64", fill_value=-1)
    root.create_array("fold", shape=(rows,), chunks=(align,), dtype="int8", fill_value=0)
    root.create_array("valid", shape=(rows,), chunks=(align,), dtype="bool", fill_value=False)
    root.create_array("shard_done", shape=(len(layout["shards"]),), chunks=(1,), dtype="bool", fill_value=False)
    root.attrs.update(attrs)


# --------------------------------------------------------------------------- the per-shard task

_MODEL: dict[str, torch.nn.Module] = {}


def _worker_model(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    key = sha256_json([to_dict(cfg.model), cfg.vision_ckpt, cfg.audio_ckpt, cfg.train.seed, str(device)])
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = build_stage1_model(cfg).to(device)
    return _MODEL[key]


def _store_dtype(x: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # values rounded to bf16, stored in a float16 container
        x = x.to(torch.bfloat16).float()
    return x.to(torch.float16).cpu().numpy()


def embed_views(net: Any, sampler: Any, clip: dict[str, Any], *, seed: int, train_views: int, audio_views: int,
                device: torch.device, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """All cached views of one clip -> (vision (V, T, Nv, D), audio (A, Na, D)) as stored."""

    frames, specs = [], []
    for k in range(train_views):
        f, s = sampler(clip, train=True, rng=clip_rng(seed, k, clip["clip_id"], "cache-view"))
        frames.append(f)
        specs.append(s)
    for view, num_views in TEST_VIEWS:
        f, s = sampler(clip, train=False, view=view, num_views=num_views)
        frames.append(f)
        specs.append(s)
    x = torch.stack(frames).to(device).float().div_(255)
    spec = torch.stack(specs).to(device)
    with torch.inference_mode():
        vt, at = net.embed(x, spec)
    return _store_dtype(vt, dtype), _store_dtype(at[:audio_views], dtype)


def _cache_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Embed every clip of one shard into its (disjoint, chunk-aligned) rows; mark the shard done."""

    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    cfg = saved_run_config(task["cfg"])
    device = torch.device(task["device"])
    net = _worker_model(cfg, device)
    sampler = ClipSampler.from_config(cfg)
    root = _open_store(Path(task["store"]), mode="r+")
    vision = root["vision"] if "vision" in root else None
    audio = root["audio"] if "audio" in root else None
    layout = task["layout"]
    start, align = task["start"], layout["align"]
    position = {sample_key(c): i for i, c in enumerate(task["clips"])}
    padded = -(-len(task["clips"]) // align) * align
    ids = np.array([""] * padded, dtype=object)
    labels = np.full(padded, -1, dtype=np.int64)
    valid = np.zeros(padded, dtype=bool)
    vbuf = np.zeros([align, *layout["vision_shape"][1:]], dtype=np.float16) if vision is not None else None
    abuf = np.zeros([align, *layout["audio_shape"][1:]], dtype=np.float16) if audio is not None else None
    group = 0  # chunk group (of `align` rows) being filled

    def flush(g: int) -> None:
        lo = start + g * align
        if vbuf is not None:
            vision[lo:lo + align] = vbuf
            vbuf[:] = 0
        if abuf is not None:
            audio[lo:lo + align] = abuf
            abuf[:] = 0

    error = None
    done = 0
    try:
        for clip in iter_clips(task["shard"]):
            p = position.get(sample_key(clip["clip_id"]))
            if p is None:
                continue
            if p // align != group:
                flush(group)
                group = p // align
            vt, at = embed_views(net, sampler, clip, seed=cfg.train.seed, train_views=layout["train_views"],
                                 audio_views=layout["audio_views"], device=device, dtype=cfg.data.cache_dtype)
            if vbuf is not None:
                vbuf[p % align] = vt
            if abuf is not None:
                abuf[p % align] = at
            ids[p], labels[p], valid[p] = clip["clip_id"], clip["label"], True
            done += 1
    except MMAError as exc:  # a broken shard (bad tar member): recorded, not marked done, retried on rerun
        error = str(exc)
    flush(group)
    root["clip_id"][start:start + padded] = ids.astype(str)
    root["label"][start:start + padded] = labels
    root["fold"][start:start + padded] = np.where(valid, task["fold"], 0).astype(np.int8)
    root["valid"][start:start + padded] = valid
    missing = len(task["clips"]) - done
    if error is None and missing:
        error = f"{missing} clip(s) of the index not found in the shard"
    if error is None:
        root["shard_done"][task["index"]] = True
    return {"shard": Path(task["shard"]).name, "clips": done, "skipped": missing, "error": error,
            "failed": error is not None}


# --------------------------------------------------------------------------- the stage


def _existing_store(path: Path, layout: dict[str, Any], prov: dict[str, Any], force: bool,
                    dataset: str) -> tuple[set[int], dict[str, Any] | None, bool]:
    """(indices of shards already done, the finished store's summary if it is up to date, whether the
    store is (re)built from scratch) for `path`; changes nothing on disk.

    A store made from something else is refused (naming the field) unless `force` rebuilds it.
    """
    if not path.exists() or force:
        return set(), None, True
    root = _open_store(path)
    attrs = dict(root.attrs)
    diff = _difference(attrs.get("provenance", {}), prov)
    if diff:
        raise MMAError(f"{path}: existing cache was made differently ({diff}); use --force to rebuild it")
    if attrs.get("complete"):
        log.info("cache %s: up to date (%s)", dataset, path)
        return set(), {**attrs.get("summary", {}), "store": str(path), "up_to_date": True}, False
    done = {i for i, flag in enumerate(root["shard_done"][:]) if flag}
    log.info("cache %s: resuming, %d of %d shards already done", dataset, len(done), len(layout["shards"]))
    return done, None, False


def estimate_cache_bytes(layout: dict[str, Any], shards: list[int], block: int) -> int:
    """Bytes the rows of `shards` (indices into layout["shards"]) will take: clips x views x tokens x
    width x 2 (fp16, before compression, which barely shrinks these tokens), one block per chunk file
    for rounding, and the per-shard label/id/valid chunks."""
    vs, as_ = layout["vision_shape"], layout["audio_shape"]
    vision_view = 2 * math.prod(vs[2:])  # one clip, one view
    audio_view = 2 * math.prod(as_[2:])
    total = 0
    for i in shards:
        count = layout["shards"][i]["count"]
        total += count * (vs[1] * vision_view + as_[1] * audio_view)
        chunk_files = (-(-count // layout["vision_chunk_rows"]) * vs[1] if vision_view else 0) \
            + (-(-count // layout["audio_chunk_rows"]) * as_[1] if audio_view else 0)
        total += (chunk_files + 5) * block
    return total


def _run_tasks(tasks: list[dict[str, Any]], cluster: str, workers: int, dataset: str) -> list[dict[str, Any]]:
    """Embed the shards on Dask; a task that raises is recorded as a failed shard (its traceback logged)."""

    results: list[dict[str, Any]] = []

    def on_error(task: dict[str, Any], exc: BaseException) -> None:
        results.append({"shard": Path(task["shard"]).name, "clips": 0, "skipped": len(task["clips"]),
                        "error": f"{type(exc).__name__}: {exc}", "failed": True})
        log.error("cache: shard %s failed: %s", task["shard"], exc)

    if tasks:
        spec = ClusterSpec(kind=cluster, workers=workers, threads_per_worker=1)
        with open_client(spec) as client:
            results += map_tasks(_cache_shard, tasks, client, description=f"cache {dataset}", unit="shards",
                                 on_error=on_error)
    return results


@dataclass(frozen=True)
class CacheResult(StageResult):
    """What `run_cache` did: `summary` is the store's summary (also in its attributes): clips, rows,
    shards done now / resumed, failed shards, `complete`, `up_to_date` when nothing had to be done."""

    summary: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.summary.get("complete", True))

    @property
    def failed_shards(self) -> list[str]:
        return list(self.summary.get("failed_shards") or [])

    def to_json(self) -> dict[str, Any]:
        return dict(self.summary)

    @property
    def errors(self) -> tuple[str, ...]:
        if self.complete:
            return ()
        failed = self.failed_shards
        names = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        return (f"cache unfinished: {len(failed)} shard(s) failed ({names or 'see the log'}); "
                "rerun `mma cache` to retry them",)


def run_cache(cfg: RunConfig, ws: Workspace, *, workers: int = 2, device: str | None = None, force: bool = False,
              cluster: str = "local", space_check: bool = True) -> CacheResult:
    """Build (or resume, or confirm) `<workdir>/<ds>/cache.zarr` for `cfg`.

    A finished store with the same provenance is kept unless `force`; an unfinished one resumes
    (shards marked done are skipped); one made from something else is refused (naming the field)
    unless `force`, which rebuilds it. A shard that fails is not marked done: the summary says
    `complete: False` and lists it in `failed_shards`, and a rerun retries it.

    Before any shard, the rows still to write are measured (`estimate_cache_bytes`) and the run
    refused when they do not fit (`space_check=False` tries anyway); a disk that fills up midway
    stops it with one line (shards finished are kept, marked done; a rerun resumes the others).
    """
    start = time.perf_counter()
    cfg = resolve_encoder_checkpoints(cfg, ws)  # a copy; encoder files checked before any work
    cfg.validate()
    index = read_index(ws, cfg.dataset)
    net = build_stage1_model(cfg)
    prov = provenance(cfg, index, encoder_provenance(net))
    del net
    layout = plan_layout(cfg, index)
    path = ws.cache_path(cfg.dataset)
    dev = str(pick_device(device))
    done, up_to_date, rebuild = _existing_store(path, layout, prov, force, cfg.dataset)
    if up_to_date is not None:
        return CacheResult(up_to_date)
    todo = [i for i in range(len(layout["shards"])) if i not in done]
    with stop_when_full(path, f"mma cache {cfg.dataset}", f"mma cache {cfg.dataset}"):
        disk = check_space(path, estimate_cache_bytes(layout, todo, block_bytes(path)),
                           f"cache {cfg.dataset}: {len(todo)} of {len(layout['shards'])} shards",
                           space_check=space_check, freed=tree_bytes(path) if rebuild else 0)
        if rebuild:
            if path.exists():
                shutil.rmtree(path)
            _create_store(path, layout, {"provenance": prov, "layout": layout, "complete": False})
        shard_clips = {s["name"]: s["clips"] for s in index["shards"]}
        shards_dir = ws.shards_dir(cfg.dataset)
        tasks = [{"index": i, "shard": str(shards_dir / s["name"]), "start": s["start"], "fold": s["fold"],
                  "clips": shard_clips[s["name"]], "store": str(path), "cfg": to_dict(cfg), "layout": layout,
                  "device": dev, "threads": 1 if cluster != "serial" else None}
                 for i, s in ((i, layout["shards"][i]) for i in todo)]
        results = _run_tasks(tasks, cluster, workers, cfg.dataset)
        summary = _finish_store(path, cfg.dataset, layout, done, results, disk, start, dev)
    return CacheResult(summary)


def _finish_store(path: Path, dataset: str, layout: dict[str, Any], done: set[int], results: list[dict[str, Any]],
                  disk: SpaceEstimate, start: float, dev: str) -> dict[str, Any]:
    """The run's summary, recorded in the store's attributes (with `complete` when every shard is done)."""
    for r in results:
        if r.get("error"):
            log.warning("cache: %s: %s (%d clip(s) not cached)", r["shard"], r["error"], r["skipped"])
    root = _open_store(path, mode="r+")
    finished = bool(np.all(root["shard_done"][:]))
    valid = root["valid"][:]
    summary = {
        "store": str(path), "dataset": dataset, "clips": int(valid.sum()), "rows": layout["rows"],
        "shards": len(layout["shards"]), "shards_done_now": sum(1 for r in results if not r.get("failed")),
        "shards_resumed": len(done), "skipped_clips": sum(r["skipped"] for r in results),
        "errors": [r for r in results if r.get("error")],
        "failed_shards": sorted(r["shard"] for r in results if r.get("failed")),
        "train_views": layout["train_views"],
        "chunk_rows": {"vision": layout["vision_chunk_rows"], "audio": layout["audio_chunk_rows"]},
        "complete": finished, "seconds": round(time.perf_counter() - start, 2), "device": dev,
        "disk": disk.to_json(),
    }
    root.attrs.update({"complete": finished, "summary": summary})
    log.info("cache %s: %d clips x (%d train + %d test views) in %d shards -> %s (%.1f s)%s", dataset,
             summary["clips"], layout["train_views"], len(TEST_VIEWS), len(layout["shards"]), path,
             summary["seconds"], "" if finished else "; UNFINISHED: rerun to retry failed shards")
    return summary


# --------------------------------------------------------------------------- the cached loader


def _stack(parts: list[np.ndarray], shared: bool) -> torch.Tensor:
    """Stack into a new tensor; in a DataLoader worker straight into shared memory (saves the copy
    the worker would otherwise make to send the batch)."""
    out = torch.empty((len(parts), *parts[0].shape), dtype=torch.float16)
    if shared:
        out.share_memory_()
    np.stack(parts, out=out.numpy())
    return out


class CachedStream(EpochDataset):
    """Batches of cached tokens for one split of one fold.

    Training (`train_views` K > 0): each epoch draws one of the K views per clip and permutes the rows,
    both seeded from (seed, epoch); the steps take consecutive batches of the permutation as the
    shards' permutation order does (`pipeline.store.stream.step_share`), `drop_last` leaving out the
    last partial global batch. Test: rows in store order, view `views`, dealt out batch by batch.
    The epoch is shared with persistent workers (`set_epoch`).
    """

    def __init__(self, path: Path, rows: np.ndarray, ids: list[str], labels: np.ndarray, views: np.ndarray | None,
                 audio_views: int, *, batch_size: int, seed: int, epoch: int = 0, train_views: int = 0,
                 store_rows: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> None:
        super().__init__(epoch)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.path = path
        self.rows, self.ids, self.labels, self.views = rows, ids, labels, views
        self.audio_views = audio_views
        self.batch_size = batch_size
        self.seed, self.train_views, self.store_rows = int(seed), int(train_views), int(store_rows)
        self.rank, self.world_size = rank, world_size
        self.drop_last = bool(drop_last) and self.train_views > 0

    def __len__(self) -> int:
        """Clips in the split over all ranks."""
        return len(self.rows)

    def epoch_clips(self) -> int:
        """Clips an epoch yields over all ranks (less the dropped last partial global batch)."""
        return epoch_clips(len(self), self.batch_size, self.world_size, self.drop_last)

    def epoch_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """(row order, view of each row) of the current epoch: training draws both from (seed, epoch)."""
        if self.train_views <= 0:
            return np.arange(len(self.rows)), self.views  # type: ignore[return-value]
        epoch = self.epoch
        views = np.random.default_rng([self.seed, epoch, 7]).integers(0, self.train_views, size=self.store_rows)
        shuffle_seed = int(np.random.default_rng([self.seed, epoch, 11]).integers(1 << 62))
        return np.random.default_rng(shuffle_seed).permutation(len(self.rows)), views[self.rows]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]]:

        slot, slots, workers = reader_slot(self.rank, self.world_size)
        in_worker = torch.utils.data.get_worker_info() is not None  # batches cross a process: shared memory
        order, row_views = self.epoch_plan()
        mine = order[step_share(len(order), batch_size=self.batch_size, rank=self.rank, world_size=self.world_size,
                                worker=slot % workers, workers=workers, drop_last=self.drop_last)]
        root = _open_store(self.path)
        vision = root["vision"] if "vision" in root else None
        audio = root["audio"] if "audio" in root else None

        def read(i: int) -> tuple[np.ndarray | None, np.ndarray | None]:
            row, view = int(self.rows[i]), int(row_views[i])
            return (vision[row, view] if vision is not None else None,
                    audio[row, 0 if self.audio_views == 1 else view] if audio is not None else None)

        # a few threads per reader: zarr fetches and Blosc decompression overlap (about 2x per clip)
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            for b in range(0, len(mine), self.batch_size):
                sel = mine[b:b + self.batch_size]
                parts = list(pool.map(read, sel))
                vt = _stack([p[0] for p in parts], shared=in_worker) if vision is not None \
                    else torch.zeros(len(sel), 0, 0, 0, dtype=torch.float16)
                at = _stack([p[1] for p in parts], shared=in_worker) if audio is not None \
                    else torch.zeros(len(sel), 0, 0, dtype=torch.float16)
                yield vt, at, torch.from_numpy(self.labels[sel]), [self.ids[i] for i in sel]


def build_cached_dataset(cfg: RunConfig, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0,
                         num_views: int = 1, rank: int = 0, world_size: int = 1, batch_size: int | None = None,
                         drop_last: bool = False) -> CachedStream:
    """The CachedStream of `split` for cfg.dataset / cfg.fold (train: one of the K views per clip per epoch);
    `batch_size` (default cfg.train.batch_size) is per rank, `drop_last` applies to training."""
    if split not in ("train", "test"):
        raise MMAError(f"split {split!r} is not one of train, test")
    path = ws.cache_path(cfg.dataset)
    if not path.exists():
        raise MMAError(f"{path}: no cache (run `mma cache {cfg.dataset}` first)")
    root = _open_store(path)
    attrs = dict(root.attrs)
    if not attrs.get("complete"):
        raise MMAError(f"{path}: cache is unfinished (rerun `mma cache {cfg.dataset}`)")
    for which in ("vision", "audio"):  # the cheap half of check_cache_matches: never another encoder's tokens
        stored = (attrs.get("provenance") or {}).get(f"encoders.{which}") or {}
        if stored.get("patch_embed_sha256") and stored.get("name") != getattr(cfg.model, f"{which}_encoder"):
            raise MMAError(f"{path}: cache made with the {which} encoder {_describe(stored)}, this config has "
                           f"{getattr(cfg.model, f'{which}_encoder')}; rebuild it with `mma cache {cfg.dataset} --force`")
    layout = attrs["layout"]
    valid, fold = root["valid"][:], root["fold"][:]
    mask = valid & split_mask(fold, cfg.fold, split)
    rows = np.flatnonzero(mask)
    if not len(rows):
        raise MMAError(f"{path}: no {split} clips for fold {cfg.fold}")
    ids = [str(x) for x in root["clip_id"][:][rows]]
    labels = root["label"][:][rows].astype(np.int64)
    views: np.ndarray | None = None
    train_views = 0
    if split == "train":
        train_views = int(layout["train_views"])
    else:
        key = str(num_views)
        if key not in layout["test_views"] or not 0 <= view < num_views:
            raise MMAError(f"{path}: the cache holds 1- and 2-clip test views, not view {view} of {num_views}")
        views = np.full(len(rows), layout["test_views"][key][view], dtype=np.int64)
    return CachedStream(path, rows, ids, labels, views, int(layout["audio_views"]),
                        batch_size=cfg.train.batch_size if batch_size is None else batch_size, seed=cfg.train.seed,
                        epoch=epoch, train_views=train_views, store_rows=int(valid.size), rank=rank,
                        world_size=world_size, drop_last=drop_last)


def build_cached_loader(cfg: RunConfig, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0,
                        num_views: int = 1, rank: int = 0, world_size: int = 1,
                        num_workers: int | None = None, batch_size: int | None = None,
                        drop_last: bool = False) -> DataLoader:
    """DataLoader of (vision_tokens (n,T,Nv,D), audio_tokens (n,Na,D), label (n,), clip_id list) batches."""

    dataset = build_cached_dataset(cfg, ws, split, epoch=epoch, view=view, num_views=num_views, rank=rank,
                                   world_size=world_size, batch_size=batch_size, drop_last=drop_last)
    workers = cfg.data.num_workers if num_workers is None else int(num_workers)
    return DataLoader(dataset, batch_size=None, **loader_kwargs(workers))


__all__ = ["run_cache", "check_cache_matches", "estimate_cache_bytes", "build_cached_loader", "build_cached_dataset", "plan_layout",
           "provenance", "build_stage1_model", "encoder_provenance", "embed_views"]
