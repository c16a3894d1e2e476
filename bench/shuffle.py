"""How far each training order of `pipeline.store.stream.ShardStream` is from a uniform per-epoch permutation.

Reproduces both orders without reading tars. `buffer` (`data.shuffle=buffer`): the train shards of one
fold (clips in clip-id order, `data.shard_max_clips` per shard) shuffled per epoch with the run seed,
then webdataset's sample buffer (`data.shuffle_buffer`, initial 64) with the same seeds.
`permutation` (`data.shuffle=permutation`, the default): the clip list shuffled with the stream's own
per-epoch seed, which is what the reader follows clip by clip. Measures, for each:
  same_shard_pairs   fraction of clip pairs inside one batch that come from the same shard
  shards_per_batch   distinct shards in a batch
  within_shard_rho   Spearman correlation of a clip's place in its shard with its place among its
                     shard's clips in the epoch (1 = the shard's order survives, 0 = forgotten)
  epoch_rho          Spearman correlation of the clip order of two consecutive epochs

Usage: python bench/shuffle.py [--clips 9400] [--shard-clips 500] [--buffer 256] [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def stream_order(clips: int, shard_clips: int, buffer: int, seed: int, epoch: int) -> list[int]:
    """Clip positions in the order one reader (one rank, no workers) yields them."""
    import webdataset as wds

    shards = [list(range(s, min(s + shard_clips, clips))) for s in range(0, clips, shard_clips)]
    random.Random(f"{seed}|shards|{epoch}").shuffle(shards)
    source = (c for shard in shards for c in shard)
    if buffer <= 1:
        return list(source)
    shuffle = wds.shuffle(buffer, initial=min(buffer, 64), rng=random.Random(f"{seed}|samples|{epoch}|0"))
    return list(shuffle(source))


def permutation_order(clips: int, seed: int, epoch: int) -> list[int]:
    """The default training order: the same seeded shuffle as `ShardStream.permutation`."""
    order = list(range(clips))
    random.Random(f"{seed}|clips|{epoch}").shuffle(order)
    return order


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(order: list[int], next_order: list[int], shard_clips: int, batch: int) -> dict[str, float]:
    order_arr = np.asarray(order)
    shard = order_arr // shard_clips
    same, pairs, per_batch = 0, 0, []
    for s in range(0, len(order) - batch + 1, batch):
        b = shard[s:s + batch]
        counts = np.bincount(b)
        same += int((counts * (counts - 1) // 2).sum())
        pairs += batch * (batch - 1) // 2
        per_batch.append(len(set(b.tolist())))
    place = np.empty(len(order), int)
    place[order_arr] = np.arange(len(order))
    rhos = []
    for k in range(int(shard.max()) + 1):
        members = np.arange(k * shard_clips, min((k + 1) * shard_clips, len(order)))
        if len(members) > 2:
            rhos.append(_spearman(members, place[members]))
    nxt = np.empty(len(order), int)
    nxt[np.asarray(next_order)] = np.arange(len(order))
    return {"same_shard_pairs": same / pairs, "shards_per_batch": float(np.mean(per_batch)),
            "within_shard_rho": float(np.mean(rhos)), "epoch_rho": _spearman(place, nxt)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=9400, help="train clips of one fold (DFEW: about 9.4k)")
    p.add_argument("--shard-clips", type=int, default=500)
    p.add_argument("--buffer", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows: dict[str, dict[str, float]] = {}
    for name, make in (("buffer", lambda e: stream_order(args.clips, args.shard_clips, args.buffer, args.seed, e)),
                       ("permutation", lambda e: permutation_order(args.clips, args.seed, e))):
        runs = [measure(make(e), make(e + 1), args.shard_clips, args.batch) for e in range(args.epochs)]
        rows[name] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
    print(f"{'order':<12} {'same_shard_pairs':>17} {'shards_per_batch':>17} {'within_shard_rho':>17} {'epoch_rho':>10}")
    for name, r in rows.items():
        print(f"{name:<12} {r['same_shard_pairs']:>17.4f} {r['shards_per_batch']:>17.2f} "
              f"{r['within_shard_rho']:>17.4f} {r['epoch_rho']:>10.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
