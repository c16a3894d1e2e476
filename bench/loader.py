"""Benchmark of the training input: the authors' JPEG folders vs our WebDataset shards vs the zarr cache.

One run, the same synthetic clips, the same DataLoader workers and batch size for all three:
  (a) jpeg_folder  the authors' way: per clip a folder of per-frame JPEGs (listed and sorted per
                   sample, each sampled frame opened with PIL, transformed frame by frame as PIL
                   images, ToTensor each) plus a .wav decoded and turned into a kaldi fbank per sample
  (b) shards       `pipeline.store.stream.build_loader` (prep output in tar shards: only the 16 sampled
                   JPEGs decoded, one batched crop/resize for the clip, fbank precomputed, uint8 out)
  (c) cache        `pipeline.store.cache.build_cached_loader` (stage-1 patch tokens from zarr; the model
                   then runs forward_embedded only)
All three produce what their model step consumes, with training augmentation on. Throughput =
clips/s in steady state (after each epoch's first batch: a real epoch has thousands of clips,
so worker start-up is amortised) and over whole epochs (a fresh iterator per epoch, as the
trainer does), best of --rounds; the ratios b/a and c/a (steady) come from the same run.

    python bench/loader.py [--clips 120] [--frames 40] [--workers 2] [--batch 8] [--epochs 2]
                           [--rounds 2] [--image-size 160] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import json
import logging
import os
import platform
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

FPS = 25
RATE = 16000


# --------------------------------------------------------------------------- synthetic clips


def _frame(rng: np.random.Generator, clip: int, i: int, size: int) -> np.ndarray:
    """A face-sized textured frame (gradient + blob + noise) so JPEG sizes are realistic."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = 0.5 + 0.1 * np.sin(i / 5 + clip), 0.5 + 0.1 * np.cos(i / 7)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)
    img = np.stack([x, y, blob], -1) * 200 + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clips(scratch: Path, n: int, frames: int, size: int, seed: int = 0) -> list[dict]:
    """Authors' layout (folder of JPEGs + wav per clip) and the same clips in prep's format."""
    from PIL import Image

    from pipeline.core.config import DataConfig
    from pipeline.core.io import atomic_write_json
    from pipeline.core.paths import Workspace
    from pipeline.data.manifest import write_manifest
    from pipeline.prep.audio import clip_fbank
    from pipeline.prep.clip import prep_settings, settings_hash

    rng = np.random.default_rng(seed)
    ws = Workspace(scratch / "work", scratch / "manifests")
    data_cfg = DataConfig(crop_size=size)
    digest = settings_hash(data_cfg)
    rows = []
    for c in range(n):
        cid = f"{c + 1:05d}"
        folder = scratch / "authors" / cid
        folder.mkdir(parents=True)
        clip_dir = ws.prep_dir("bench") / "clips" / cid
        (clip_dir / "frames").mkdir(parents=True)
        for i in range(frames):
            Image.fromarray(_frame(rng, c, i, size)).save(folder / f"{i + 1:05d}.jpg", quality=95)
            os.link(folder / f"{i + 1:05d}.jpg", clip_dir / "frames" / f"{i:06d}.jpg")  # the same bytes
        t = np.arange(int(RATE * frames / FPS)) / RATE
        audio = (0.3 * np.sin(2 * np.pi * (200 + 20 * c) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        with wave.open(str(scratch / "authors" / f"{cid}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((audio * 32767).astype(np.int16).tobytes())
        fbank, info = clip_fbank(audio[None], RATE, "16k")
        np.save(clip_dir / "fbank.npy", fbank)
        label = c % 4
        meta = {"clip_id": cid, "label": label, "num_frames": frames, "fps": float(FPS), **info,
                "fbank_frames": int(fbank.shape[0]), "warnings": [], "config_hash": digest, "crop_size": size}
        (clip_dir / "meta.json").write_text(json.dumps(meta))
        rows.append({"clip_id": cid, "label": label, "label_name": f"c{label}", "test_fold": 1 + c % 5,
                     "video": "", "frames_dir": str(folder), "label_raw": str(label), "usable": 1, "problem": ""})
    write_manifest(ws, "bench", rows, ["c0", "c1", "c2", "c3"])
    atomic_write_json(ws.prep_dir("bench") / "prep_config.json", {"hash": digest, "settings": prep_settings(data_cfg)})
    return rows


# --------------------------------------------------------------------------- (a) the authors' loader


class AuthorsDataset(torch.utils.data.Dataset):
    """Per sample: glob + sort the frame folder, PIL-open the 16 sampled frames, group transforms frame by
    frame on PIL images (resized crop, flip, brightness), ToTensor each; torchaudio-style wav -> fbank."""

    def __init__(self, root: Path, clip_ids: list[str], labels: list[int], image_size: int) -> None:
        self.root, self.clip_ids, self.labels, self.size = root, clip_ids, labels, image_size

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int):
        import random

        from PIL import ImageEnhance
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms import functional as TF

        from pipeline.prep.audio import waveform_to_fbank
        from pipeline.store.sampling import normalise_fbank, sample_frame_indices

        cid = self.clip_ids[i]
        paths = sorted(glob.glob(os.path.join(self.root, cid, "*")))
        idx = sample_frame_indices(len(paths), 16, train=True, rng=np.random.default_rng())
        from PIL import Image

        images = [Image.open(paths[j]).convert("RGB") for j in idx]
        top, left, h, w = RandomResizedCrop.get_params(images[0], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        flip = random.random() < 0.5
        factor = random.uniform(0.5, 1.5)
        out = []
        for img in images:
            img = TF.resized_crop(img, top, left, h, w, [self.size, self.size])
            if flip:
                img = TF.hflip(img)
            img = ImageEnhance.Brightness(img).enhance(factor)
            out.append(TF.to_tensor(img))
        frames = torch.stack(out)
        with wave.open(os.path.join(self.root, f"{cid}.wav"), "rb") as wv:
            pcm = np.frombuffer(wv.readframes(wv.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
            rate = wv.getframerate()
        fbank = normalise_fbank(waveform_to_fbank(torch.from_numpy(pcm), rate))
        return frames, fbank, self.labels[i], cid


# --------------------------------------------------------------------------- measuring


def measure(make_loader, epochs: int) -> dict:
    """Over `epochs` fresh-iterator epochs: steady clips/s (after each epoch's first batch), whole-epoch
    clips/s (worker start-up and first batch included) and the mean seconds to the first batch."""
    total = steady_clips = 0
    steady_s = firsts = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        t0 = time.perf_counter()
        it = iter(make_loader())
        total += len(next(it)[3])
        t1 = time.perf_counter()
        firsts += t1 - t0
        for batch in it:
            total += len(batch[3])
            steady_clips += len(batch[3])
        steady_s += time.perf_counter() - t1
    return {"steady": steady_clips / steady_s, "epoch": total / (time.perf_counter() - start),
            "clips": total // epochs, "first_batch_s": firsts / epochs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=120, help="synthetic clips (80%% of them form the train split)")
    ap.add_argument("--frames", type=int, default=40, help="frames per clip (25 fps)")
    ap.add_argument("--size", type=int, default=224, help="stored face-crop size (DFEW's official 224)")
    ap.add_argument("--image-size", type=int, default=160, help="model input S")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for all three")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="measurements per loader (best is kept)")
    ap.add_argument("--views", type=int, default=4, help="cached training views")
    ap.add_argument("--scratch", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    return ap.parse_args(argv)


def build_inputs(args: argparse.Namespace, scratch: Path) -> tuple[dict, float]:
    """Synthetic clips in both layouts, then shards and the cache; returns (the three loader factories, seconds)."""
    from pipeline.core.config import paper
    from pipeline.core.paths import Workspace
    from pipeline.store.cache import build_cached_loader, run_cache
    from pipeline.store.shard import run_shard
    from pipeline.store.stream import build_loader

    t = time.perf_counter()
    rows = make_clips(scratch, args.clips, args.frames, args.size)
    ws = Workspace(scratch / "work", scratch / "manifests")
    cfg = paper()
    cfg.dataset, cfg.fold = "bench", 1
    cfg.model.image_size = args.image_size
    cfg.model.num_classes = 4
    cfg.data.crop_size = args.size
    cfg.data.cache_views = args.views
    cfg.train.batch_size = args.batch
    run_shard("bench", ws, cfg.data)
    run_cache(cfg, ws, workers=args.workers, cluster="local")
    train = [r for r in rows if r["test_fold"] != cfg.fold]
    buffered = copy.deepcopy(cfg)
    buffered.data.shuffle = "buffer"  # the streaming order (shard order + sample buffer)
    authors = AuthorsDataset(scratch / "authors", [r["clip_id"] for r in train], [r["label"] for r in train],
                             args.image_size)
    loaders = {
        "jpeg_folder": lambda: torch.utils.data.DataLoader(authors, batch_size=args.batch, shuffle=True,
                                                           num_workers=args.workers),
        "shards": lambda: build_loader(cfg, ws, "train", num_workers=args.workers),
        "shards_buffer": lambda: build_loader(buffered, ws, "train", num_workers=args.workers),
        "cache": lambda: build_cached_loader(cfg, ws, "train", num_workers=args.workers),
    }
    return loaders, time.perf_counter() - t


def measure_loaders(loaders: dict, epochs: int, rounds: int) -> dict[str, dict]:
    """Best of `rounds` interleaved measurements per loader (a busy machine hurts all three alike)."""
    results: dict[str, dict] = {k: {"steady": 0.0} for k in loaders}
    for _ in range(rounds):
        for name, make in loaders.items():
            r = measure(make, epochs)
            if r["steady"] > results[name]["steady"]:
                results[name] = r
    return results


def summarise(results: dict[str, dict], args: argparse.Namespace, setup: float) -> dict:
    x, y, z, b = (results[k]["steady"] for k in ("jpeg_folder", "shards", "cache", "shards_buffer"))
    ex, ey, ez = (results[k]["epoch"] for k in ("jpeg_folder", "shards", "cache"))
    return {"clips_per_s": {"jpeg_folder": round(x, 2), "shards": round(y, 2), "cache": round(z, 2),
                            "shards_buffer": round(b, 2)},
            "ratios": {"shards_vs_jpeg": round(y / x, 2), "cache_vs_jpeg": round(z / x, 2),
                       "permutation_vs_buffer": round(y / b, 2)},
            "workers": args.workers, "clips": results["jpeg_folder"]["clips"],
            "epoch_clips_per_s": {"jpeg_folder": round(ex, 2), "shards": round(ey, 2), "cache": round(ez, 2)},
            "first_batch_s": {k: round(r["first_batch_s"], 3) for k, r in results.items()},
            "settings": {"frames_per_clip": args.frames, "stored_size": args.size, "image_size": args.image_size,
                         "batch": args.batch, "epochs": args.epochs, "rounds": args.rounds, "views": args.views,
                         "setup_seconds": round(setup, 1), "cpus": os.cpu_count(), "machine": platform.machine(),
                         "torch_threads": torch.get_num_threads()}}


def print_table(results: dict[str, dict], args: argparse.Namespace) -> None:
    x, ex = results["jpeg_folder"]["steady"], results["jpeg_folder"]["epoch"]
    print(f"\nloader throughput, {results['jpeg_folder']['clips']} training clips x {args.epochs} epochs, "
          f"{args.workers} workers, batch {args.batch}, S={args.image_size} (best of {args.rounds})")
    print(f"{'loader':<14}{'clips/s':>10}{'vs jpeg':>10}{'epoch clips/s':>15}{'vs jpeg':>10}{'1st batch s':>13}")
    for name, r in results.items():
        print(f"{name:<14}{r['steady']:>10.1f}{r['steady'] / x:>10.2f}{r['epoch']:>15.1f}{r['epoch'] / ex:>10.2f}"
              f"{r['first_batch_s']:>13.2f}")
    print("clips/s: steady state (after each epoch's first batch); epoch clips/s: whole epochs, worker start-up in")
    print("targets: shards/jpeg >= 3, cache/jpeg >= 10")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        if args.scratch is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mma-bench-loader-")))
        else:
            scratch = args.scratch
            scratch.mkdir(parents=True, exist_ok=True)
        loaders, setup = build_inputs(args, scratch)
        results = measure_loaders(loaders, args.epochs, args.rounds)
        out = summarise(results, args, setup)
        print_table(results, args)
    if args.json:
        from pipeline.core.io import atomic_write_json

        atomic_write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
