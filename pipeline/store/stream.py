"""Streaming loader over the fold-grouped WebDataset shards (the trainer's default input).

`build_loader(cfg, ws, split, ...)` returns a torch DataLoader whose batches are
`(frames uint8 (n,T,3,S,S), fbank float32 (n,1,512,128), label int64 (n,), clip_id list[str])`.
Split "train" reads the clips of the four other test folds, augmented, in a uniform random
permutation per epoch (`data.shuffle="permutation"`, the default: seeded from train.seed and the
epoch; each clip is read through a per-shard table of byte ranges, one contiguous read per clip,
since a clip's members are adjacent in its tar), or, with `data.shuffle="buffer"`, streamed: shard
order shuffled per epoch, then a sample shuffle buffer (cheaper on storage that only streams well,
but far from uniform: `bench/shuffle.py`). "test" reads fold cfg.fold's shards in index order,
deterministic, view `view` of `num_views`.

Splitting: every (rank, DataLoader worker) pair is one of world_size x num_workers "slots".
Under the permutation, training steps take consecutive batches of it (`step_share`): global step i
is positions [i G, (i + 1) G) with G = batch_size x world_size, rank r reads the r-th batch_size of
them, through DataLoader worker i mod num_workers (the DataLoader takes its workers' batches in
turn), so what a step sees depends on the seed and the epoch only, not on the number of workers or
ranks. `drop_last` leaves out the last partial global batch (every rank then takes the same steps).
Streaming (test, and "buffer" training): with at least as many shards as slots, shards are dealt out (rank first, like
webdataset's split_by_node / split_by_worker, with rank and world size passed explicitly so a
test can simulate DDP); with fewer shards, every slot reads the shards and keeps the samples
whose position in the index falls to it. Either way the slots see disjoint subsets whose union
is the split: evaluation visits every test clip exactly once, without padding.

A truncated or corrupt shard is reported (file, byte offset reached, samples lost) and the read
goes on with the next shard; an undecodable sample is skipped. Both are counted
(`dataset.report.skipped`), logged as warnings and appended to `<shards>/read_errors.jsonl`.
JPEG decoding and augmentation run in the DataLoader workers. The epoch lives in shared memory
(`set_epoch`), so one DataLoader with persistent workers serves every epoch of a run.
"""

from __future__ import annotations

import io
import logging
import random
import tarfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from pipeline.core.errors import MMAError
from pipeline.core.folds import in_split
from pipeline.core.io import append_jsonl
from pipeline.core.paths import Workspace
from pipeline.store.sampling import ClipSampler, clip_rng, decode_npy
from pipeline.store.shard import read_index, sample_key

log = logging.getLogger(__name__)

# What a damaged shard or member can raise while being read or decoded; anything else is a bug.
SHARD_READ_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, UnicodeDecodeError)
SAMPLE_DECODE_ERRORS = (OSError, ValueError, KeyError, EOFError)  # PIL's UnidentifiedImageError is an OSError


class ReadReport:
    """Counts and reports what a reader had to skip (per process: each worker has its own)."""

    def __init__(self, ledger: Path | None = None) -> None:
        self.ledger = ledger
        self.skipped = 0
        self.events: list[dict[str, Any]] = []

    def record(self, shard: str, error: str, skipped: int, offset: int | None = None, key: str | None = None) -> None:
        self.skipped += skipped
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "shard": shard, "offset": offset, "sample": key,
                 "error": error, "skipped": skipped}
        self.events.append(event)
        where = f"{shard}" + (f" at byte {offset}" if offset is not None else "") + (f" (sample {key})" if key else "")
        log.warning("shard read error in %s: %s; %d sample(s) skipped", where, error, skipped)
        if self.ledger is not None:
            try:
                append_jsonl(self.ledger, event)
            except OSError as exc:  # a read-only shard folder must not stop training
                log.warning("cannot append to %s: %s", self.ledger, exc)


def split_shards(index: dict[str, Any], fold: int, split: str) -> list[dict[str, Any]]:
    """The index entries of `split` for run fold `fold` (`pipeline.core.folds.in_split`), in index order."""
    return [s for s in index["shards"] if in_split(s["fold"], fold, split)]


def split_clip_ids(index: dict[str, Any], fold: int, split: str) -> list[str]:
    """Every clip id of `split` for test fold `fold`, as the shard index lists them."""
    return [cid for s in split_shards(index, fold, split) for cid in s["clips"]]


def _complete(sample: dict[str, Any]) -> dict[str, Any]:
    """Check a grouped tar sample has its json, fbank, label and every frame; parse the json."""
    import json

    if "json" not in sample:
        raise ValueError("no json member")
    meta = json.loads(sample["json"])
    n = int(meta["num_frames"])
    missing = [k for k in ("fbank.npy", "cls", *(f"{i:06d}.jpg" for i in range(n))) if k not in sample]
    if missing:
        raise ValueError(f"members missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    sample["meta"] = meta
    return sample


def _clip(sample: dict[str, Any]) -> dict[str, Any]:
    """A completed tar sample -> the sample dict of pipeline.store.sampling {clip_id, label, meta, frames, fbank}."""
    meta = sample["meta"]
    n = int(meta["num_frames"])
    return {"clip_id": str(meta.get("clip_id", sample["__key__"])), "label": int(sample["cls"]), "meta": meta,
            "fbank": decode_npy(sample["fbank.npy"]), "frames": [sample[f"{i:06d}.jpg"] for i in range(n)]}


class _SampleError(Exception):
    def __init__(self, shard: str, key: str, error: str) -> None:
        super().__init__(f"{shard}: sample {key}: {error}")
        self.shard, self.key, self.error = shard, key, error


def step_share(count: int, *, batch_size: int, rank: int, world_size: int, worker: int, workers: int,
               drop_last: bool) -> list[int]:
    """The positions of an epoch's `count` ordered items one (rank, worker) reader takes, in order:
    global step i is positions [i G, (i + 1) G) (G = batch_size x world_size), rank r takes the r-th
    batch_size of it and worker i mod workers of that rank reads it; with `drop_last` the last
    partial global step is left out."""
    g = batch_size * world_size
    end = count - count % g if drop_last else count
    out: list[int] = []
    for step, start in enumerate(range(0, end, g)):
        if step % workers == worker:
            lo = start + rank * batch_size
            out.extend(range(lo, min(lo + batch_size, end)))
    return out


def epoch_clips(count: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """How many of an epoch's `count` items the training steps of all ranks read (`step_share`)."""
    return count - count % (batch_size * world_size) if drop_last else count


class EpochDataset(IterableDataset):
    """An iterable dataset whose epoch is a shared-memory integer: `set_epoch` in the main process,
    read by every DataLoader worker, persistent ones included (the shards' and the cache's readers)."""

    def __init__(self, epoch: int = 0) -> None:
        super().__init__()
        self._epoch = torch.tensor([int(epoch)], dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (order, augmentation or cached views)."""
        self._epoch[0] = int(epoch)


def reader_slot(rank: int, world_size: int) -> tuple[int, int, int]:
    """(this reader's slot, number of slots, DataLoader workers per rank) for rank/world_size.

    Every (rank, DataLoader worker) pair is one slot: slot = rank * workers + worker.
    """
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers, workers


class ShardStream(EpochDataset):
    """One split of one fold, read from shards (see module docstring for splitting and shuffling)."""

    def __init__(self, shards_dir: Path, entries: list[dict[str, Any]], sampler: ClipSampler, *, train: bool,
                 seed: int = 1, epoch: int = 0, view: int = 0, num_views: int = 1, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 256, shuffle: str = "permutation",
                 ledger: Path | None = None, batch_size: int = 1, drop_last: bool = False) -> None:
        super().__init__(epoch)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.shards_dir = Path(shards_dir)
        self.entries = entries
        self.sampler = sampler
        self.train = train
        self.seed = int(seed)
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        self.view, self.num_views = view, num_views
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.shuffle = shuffle
        self.report = ReadReport(ledger)
        self._ranges: dict[str, dict[str, tuple[int, int]] | None] = {}  # shard name -> {key: (start, end)}
        self.position: dict[str, int] = {}  # sample key -> position in the split (for sample-level splitting)
        for s in entries:
            for cid in s["clips"]:
                self.position[sample_key(cid)] = len(self.position)

    def __len__(self) -> int:
        """Clips in the split over all ranks (a rank yields about len / world_size)."""
        return len(self.position)

    def epoch_clips(self) -> int:
        """Clips an epoch yields over all ranks: the split, less the dropped last partial global batch
        (`drop_last`, permutation order; the streaming order never drops)."""
        if self.train and self.shuffle == "permutation":
            return epoch_clips(len(self), self.batch_size, self.world_size, self.drop_last)
        return len(self)

    # ------------------------------------------------------------------ stages

    def _ordered(self) -> list[dict[str, Any]]:
        entries = list(self.entries)
        if self.train:
            random.Random(f"{self.seed}|shards|{self.epoch}").shuffle(entries)
        return entries

    def _read(self, entries: Iterator[dict[str, Any]], slot: int | None, slots: int) -> Iterator[dict[str, Any]]:
        """Complete samples of each shard; a broken shard is reported and the next one read."""
        from webdataset.handlers import reraise_exception
        from webdataset.tariterators import group_by_keys, tar_file_expander

        def mine(key: str) -> bool:
            return slot is None or self.position.get(key, -1) % slots == slot

        for entry in entries:
            path = self.shards_dir / entry["name"]
            seen: set[str] = set()
            fh = None
            error = None
            try:
                fh = open(path, "rb")
                stream = tar_file_expander([{"url": str(path), "stream": fh}], handler=reraise_exception)
                for sample in group_by_keys(stream, handler=reraise_exception):
                    key = str(sample["__key__"])
                    seen.add(key)
                    if not mine(key):
                        continue
                    try:
                        yield _complete(sample)
                    except (ValueError, KeyError) as exc:
                        self.report.record(str(path), f"incomplete sample ({exc})", 1, fh.tell(), key)
            except SHARD_READ_ERRORS as exc:  # truncated / corrupt tar, unreadable file
                first = exc.args[0] if exc.args else type(exc).__name__
                error = f"{type(exc).__name__}: {first}"
            offset = fh.tell() if fh is not None and not fh.closed else None
            if fh is not None:
                fh.close()
            lost = [k for k in map(sample_key, entry["clips"]) if k not in seen and mine(k)]
            if error is not None or lost:
                size = path.stat().st_size if path.exists() else None
                detail = error or "shard ended early"
                if size is not None and entry.get("bytes") not in (None, size):
                    detail += f" (file is {size} bytes, index says {entry['bytes']}: truncated or replaced)"
                self.report.record(str(path), detail, len(lost), offset)

    def permutation(self) -> list[tuple[str, dict[str, Any]]]:
        """This epoch's order of the split's clips: (sample key, its shard's index entry), uniformly permuted."""
        items = [(sample_key(cid), entry) for entry in self.entries for cid in entry["clips"]]
        random.Random(f"{self.seed}|clips|{self.epoch}").shuffle(items)
        return items

    def _byte_ranges(self, entry: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
        """{sample key: (first byte, end byte)} of one shard: from the index (`mma shard` records them),
        else (an index written before it did, or a shard whose size no longer matches the index: truncated
        or replaced) from the tar headers; {} for an unreadable shard."""
        name = entry["name"]
        path = self.shards_dir / name
        if name not in self._ranges and entry.get("ranges") and path.is_file() \
                and path.stat().st_size == entry.get("bytes"):
            self._ranges[name] = {sample_key(c): (int(r[0]), int(r[1])) for c, r in zip(entry["clips"], entry["ranges"])}
        if name not in self._ranges:
            ranges: dict[str, tuple[int, int]] = {}
            try:
                with tarfile.open(path, "r:") as tar:  # walks the headers, seeking over the data
                    for m in tar:
                        key = Path(m.name).name.split(".", 1)[0]
                        end = m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                        lo, hi = ranges.get(key, (m.offset, end))
                        ranges[key] = (min(lo, m.offset), max(hi, end))
            except SHARD_READ_ERRORS as exc:
                first = exc.args[0] if exc.args else type(exc).__name__
                self.report.record(str(path), f"unreadable shard ({type(exc).__name__}: {first})", 0)
                ranges = {}
            self._ranges[name] = ranges
        return self._ranges[name]

    def _read_permuted(self, items: list[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        """Complete samples in the given order, each read as one contiguous byte range of its shard."""
        handles: dict[str, Any] = {}
        try:
            for key, entry in items:
                path = self.shards_dir / entry["name"]
                span = self._byte_ranges(entry).get(key)
                if span is None:
                    self.report.record(str(path), "sample not in the shard (truncated or replaced?)", 1, key=key)
                    continue
                try:
                    fh = handles.get(entry["name"]) or handles.setdefault(entry["name"], open(path, "rb"))
                    fh.seek(span[0])
                    chunk = fh.read(span[1] - span[0])
                    sample: dict[str, Any] = {"__key__": key, "__url__": str(path)}
                    with tarfile.open(fileobj=io.BytesIO(chunk), mode="r:") as tar:
                        for m in tar:
                            if m.isfile():
                                sample[Path(m.name).name.split(".", 1)[1]] = tar.extractfile(m).read()
                    yield _complete(sample)
                except (*SHARD_READ_ERRORS, KeyError) as exc:
                    self.report.record(str(path), f"unreadable sample ({type(exc).__name__}: {exc})", 1, span[0], key)
        finally:
            for fh in handles.values():
                fh.close()

    def _decode(self, sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        try:
            clip = _clip(sample)
            rng = clip_rng(self.seed, self.epoch, clip["clip_id"]) if self.train else None
            frames, fbank = self.sampler(clip, train=self.train, rng=rng, view=self.view, num_views=self.num_views)
        except SAMPLE_DECODE_ERRORS as exc:  # a corrupt member (image, npy, json); a bug propagates
            raise _SampleError(str(sample.get("__url__", "?")), str(sample.get("__key__")),
                               f"{type(exc).__name__}: {exc}") from exc
        return frames, fbank, clip["label"], clip["clip_id"]

    def _decode_handler(self, exc: Exception) -> bool:
        """Skip (and record) a sample whose members do not decode; let anything else propagate."""
        if not isinstance(exc, _SampleError):
            raise exc
        self.report.record(exc.shard, f"undecodable sample ({exc.error})", 1, key=exc.key)
        return True

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, str]]:
        import webdataset as wds

        slot, slots, workers = reader_slot(self.rank, self.world_size)
        if self.train and self.shuffle == "permutation":
            order = self.permutation()
            mine_items = [order[i] for i in step_share(len(order), batch_size=self.batch_size, rank=self.rank,
                                                       world_size=self.world_size, worker=slot % workers,
                                                       workers=workers, drop_last=self.drop_last)]
            yield from wds.DataPipeline(lambda: self._read_permuted(mine_items),
                                        wds.map(self._decode, handler=self._decode_handler))
            return
        entries = self._ordered()
        if len(entries) >= slots:  # deal shards: by rank (split_by_node), then by worker (split_by_worker)
            mine = islice(entries, self.rank, None, self.world_size)
            source: Any = [lambda: mine, wds.split_by_worker] if workers > 1 else [lambda: mine]
            sample_slot = None
        else:  # fewer shards than readers: split samples by their index position
            source = [lambda: iter(entries)]
            sample_slot = slot
        stages = [*source, lambda it: self._read(it, sample_slot, slots)]
        if self.train and self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 64),
                                      rng=random.Random(f"{self.seed}|samples|{self.epoch}|{slot}")))
        stages.append(wds.map(self._decode, handler=self._decode_handler))
        yield from wds.DataPipeline(*stages)


def build_dataset(cfg: Any, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0, num_views: int = 1,
                  rank: int = 0, world_size: int = 1, batch_size: int | None = None,
                  drop_last: bool = False) -> ShardStream:
    """The ShardStream of `split` for cfg.dataset / cfg.fold (no DataLoader around it); `batch_size`
    (default cfg.train.batch_size) is per rank, `drop_last` applies to training."""
    index = read_index(ws, cfg.dataset)
    entries = split_shards(index, cfg.fold, split)
    if not entries:
        raise MMAError(f"{ws.shards_dir(cfg.dataset) / 'index.json'}: no {split} shards for fold {cfg.fold}")
    return ShardStream(ws.shards_dir(cfg.dataset), entries, ClipSampler.from_config(cfg), train=split == "train",
                       seed=cfg.train.seed, epoch=epoch, view=view, num_views=num_views, rank=rank,
                       world_size=world_size, shuffle_buffer=cfg.data.shuffle_buffer, shuffle=cfg.data.shuffle,
                       ledger=ws.shards_dir(cfg.dataset) / "read_errors.jsonl",
                       batch_size=cfg.train.batch_size if batch_size is None else batch_size,
                       drop_last=drop_last and split == "train")


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor, list[str]]:
    """Stack a list of (frames, fbank, label, clip_id) into the batch tuple (clip ids stay a list)."""
    frames, fbanks, labels, ids = zip(*batch)
    return torch.stack(frames), torch.stack(fbanks), torch.tensor(labels, dtype=torch.int64), list(ids)


def loader_kwargs(num_workers: int) -> dict[str, Any]:
    """DataLoader options shared with the cached loader: pinned memory on GPU; with workers, persistent
    ones (a run re-iterates one loader per split, `set_epoch` between epochs) prefetching 4 batches each.
    Its own generator: starting an iteration draws worker seeds from it, never from the global RNG, so a
    resumed run's stochastic depth sees the same random stream as an uninterrupted one (the readers
    seed their own randomness from train.seed, the epoch and the clip)."""
    kw: dict[str, Any] = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available(),
                          "generator": torch.Generator().manual_seed(0)}
    if num_workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=4)
    return kw


def build_loader(cfg: Any, ws: Workspace, split: str, *, epoch: int = 0, view: int = 0, num_views: int = 1,
                 rank: int = 0, world_size: int = 1, num_workers: int | None = None, batch_size: int | None = None,
                 drop_last: bool = False) -> DataLoader:
    """DataLoader over the shards of `split` (contract: see module docstring); `batch_size` is per rank
    (default cfg.train.batch_size)."""
    dataset = build_dataset(cfg, ws, split, epoch=epoch, view=view, num_views=num_views, rank=rank,
                            world_size=world_size, batch_size=batch_size, drop_last=drop_last)
    workers = cfg.data.num_workers if num_workers is None else int(num_workers)
    return DataLoader(dataset, batch_size=dataset.batch_size, collate_fn=collate, **loader_kwargs(workers))


def iter_clips(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete clip of one shard as a sample dict {clip_id, label, meta, frames, fbank} (for the cache).

    A broken shard raises MMAError naming the file (the cache records it and goes on).
    """
    from webdataset.handlers import reraise_exception
    from webdataset.tariterators import group_by_keys, tar_file_expander

    path = Path(path)
    with open(path, "rb") as fh:
        try:
            stream = tar_file_expander([{"url": str(path), "stream": fh}], handler=reraise_exception)
            for sample in group_by_keys(stream, handler=reraise_exception):
                yield _clip(_complete(sample))
        except (*SHARD_READ_ERRORS, *SAMPLE_DECODE_ERRORS) as exc:  # a damaged shard; a bug propagates
            first = exc.args[0] if exc.args else type(exc).__name__
            raise MMAError(f"{path}: unreadable shard at byte {fh.tell()} ({type(exc).__name__}: {first})") from None

