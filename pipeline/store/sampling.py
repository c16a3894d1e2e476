"""Clip sampling, augmentation and spectrogram windowing: one implementation for every reader.

The streaming loader (`pipeline.store.stream`), the zarr cache (`pipeline.store.cache`) and `mma predict`
all turn a prepped clip (all face frames as JPEG bytes + the raw whole-clip fbank) into model
input here, exactly as docs/architecture.md, "Data" says:

- frames: T (=16) indices; train = one random frame in each of T equal segments, test = the
  segment centres; view v of num_views = the v-th of `num_views` uniformly offset samplings
  (the two-clip evaluation); clips shorter than T repeat their last frame. The indices go into
  the clip's frame list in time order (data.frame_order="numeric") or, for "authors", into the
  list the authors' MAFW loader saw (`authors_frame_order`: names `0.jpg, 1.jpg, ...` sorted as
  strings, the last entry dropped).
- train augmentation, ONE draw per clip applied to all T frames: brightness U[0.5, 1.5],
  random resized crop (area 0.08-1, aspect 3/4-4/3) to S x S bilinear, horizontal flip p=0.5;
  test: bilinear resize to S x S. Frames stay uint8 (n, T, 3, S, S); the trainer scales to [0, 1].
- audio: the raw fbank cropped/zero-padded to 512 rows, then normalised with the audio encoder's
  statistics (`model.families.encoder_norm`; AudioMAE's by default) as (x - mean) / (2 * std),
  i.e. (x + 4.2677393) / (2 * 4.5689974); window "start" (from t=0, the authors') or "aligned"
  (centred on the sampled frames' time span). A clip without audio has 0 rows: its padded
  input is the authors' "silence" spectrogram.

Randomness comes from a numpy Generator seeded per (seed, epoch, clip) (`clip_rng`), so a
clip's augmentation does not depend on which worker or rank reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from model.families import FBANK_MEAN, FBANK_STD, encoder_norm
from pipeline.core.config import AUDIO_WINDOWS, FRAME_ORDERS, RunConfig, check_choice
from pipeline.core.errors import MMAError
from pipeline.prep.audio import FBANK_ROWS_PER_SECOND



# --------------------------------------------------------------------------- frame indices


def sample_frame_indices(
    num_frames: int,
    T: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> list[int]:
    """T frame indices into a clip of `num_frames` frames (see module docstring).

    Train: segments of length num_frames // T, a random frame in each (the authors' rule).
    Test: frame int(tick * (view + 0.5) / num_views + tick * k) of segment k, tick = num_frames / T
    (num_views=1 gives the segment centres). Short clips: 0..n-1, then the last frame repeated.
    """
    if num_frames <= 0:
        raise ValueError(f"clip has no frames (num_frames={num_frames})")
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} is outside 0..{num_views - 1}")
    if num_frames < T:
        return list(range(num_frames)) + [num_frames - 1] * (T - num_frames)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        seg = num_frames // T
        return [int(k * seg + rng.integers(seg)) for k in range(T)]
    tick = num_frames / float(T)
    offset = tick * (view + 0.5) / num_views
    return [min(int(offset + tick * k), num_frames - 1) for k in range(T)]


def authors_frame_order(num_frames: int) -> list[int]:
    """The frame list of the authors' MAFW loader for a clip of `num_frames` frames (time indices).

    Their face extraction writes frame i as `f"{i}.jpg"`, their loader sorts the paths as strings
    and their annotation counts `len - 1` frames, so the sampler's index k reads frame
    `sorted(str(i) + ".jpg")[k]` and the list's last entry is never sampled. A one-frame clip keeps
    its frame.
    """
    if num_frames <= 0:
        raise ValueError(f"clip has no frames (num_frames={num_frames})")
    order = sorted(range(num_frames), key=lambda i: f"{i}.jpg")
    return order[: max(1, num_frames - 1)]


def clip_frame_indices(
    num_frames: int,
    T: int,
    *,
    train: bool,
    frame_order: str = "numeric",
    rng: np.random.Generator | None = None,
    view: int = 0,
    num_views: int = 1,
) -> list[int]:
    """`sample_frame_indices` over the clip's frame list in `frame_order`; returns time indices."""
    check_choice("data.frame_order", frame_order, FRAME_ORDERS)
    if frame_order == "numeric":
        return sample_frame_indices(num_frames, T, train=train, rng=rng, view=view, num_views=num_views)
    order = authors_frame_order(num_frames)
    picks = sample_frame_indices(len(order), T, train=train, rng=rng, view=view, num_views=num_views)
    return [order[k] for k in picks]


# --------------------------------------------------------------------------- randomness


def clip_rng(seed: int, epoch: int, clip_id: str, salt: str = "") -> np.random.Generator:
    """A Generator determined by (seed, epoch, clip id, salt) only: the same draw on any worker/rank."""
    digest = hashlib.sha256(f"{seed}|{epoch}|{clip_id}|{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Augmentation:
    """One clip's augmentation draw, applied identically to all of its frames."""

    brightness: float
    top: int
    left: int
    height: int
    width: int
    flip: bool


def draw_augmentation(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    brightness: tuple[float, float] = (0.5, 1.5),
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0),
    hflip_p: float = 0.5,
) -> Augmentation:
    """Brightness factor, RandomResizedCrop box (torchvision's algorithm, 10 tries then centre) and flip."""
    factor = float(rng.uniform(brightness[0], brightness[1]))
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            box = (top, left, h, w)
            break
    if box is None:  # fall back to a centre crop within the ratio bounds
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            w, h = width, height
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(rng.random() < hflip_p)
    return Augmentation(factor, *box, flip)


# --------------------------------------------------------------------------- frames


def decode_jpegs(jpegs: Sequence[bytes], indices: Sequence[int]) -> torch.Tensor:
    """Decode the frames at `indices` (each distinct frame once) -> uint8 (len(indices), 3, H, W)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    unique = sorted(set(indices))
    data = [torch.frombuffer(bytearray(jpegs[i]), dtype=torch.uint8) for i in unique]
    decoded = decode_jpeg(data, mode=ImageReadMode.RGB)
    by_index = dict(zip(unique, decoded))
    return torch.stack([by_index[i] for i in indices])


def augment_frames(frames: torch.Tensor, aug: Augmentation, size: int) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> uint8 (T, 3, size, size): crop+resize (bilinear), flip, brightness."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    out = F.resized_crop(frames, aug.top, aug.left, aug.height, aug.width, [size, size],
                         interpolation=InterpolationMode.BILINEAR, antialias=True)
    if aug.flip:
        out = out.flip(-1)
    if aug.brightness != 1.0:
        out = out.float().mul_(aug.brightness).round_().clamp_(0, 255).to(torch.uint8)
    return out.contiguous()


def resize_test_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> uint8 (T, 3, size, size), bilinear (the test transform)."""
    if frames.shape[-2:] == (size, size):
        return frames.contiguous()
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    return F.resize(frames, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True).contiguous()


# --------------------------------------------------------------------------- audio


def audio_window_start(
    indices: Sequence[int], fps: float | None, n_rows: int, spec_frames: int = 512, mode: str = "start"
) -> int:
    """First fbank row of the model's window: 0 ("start"), or centred on the sampled frames ("aligned")."""
    check_choice("data.audio_window", mode, AUDIO_WINDOWS)
    if mode == "start" or not fps or n_rows <= spec_frames:
        return 0
    t0, t1 = min(indices) / fps, (max(indices) + 1) / fps
    centre = (t0 + t1) / 2.0 * FBANK_ROWS_PER_SECOND
    return int(min(max(round(centre - spec_frames / 2.0), 0), n_rows - spec_frames))


def normalise_fbank(
    fbank: np.ndarray | torch.Tensor, spec_frames: int = 512, *, start: int = 0, mean: float = FBANK_MEAN,
    std: float = FBANK_STD,
) -> torch.Tensor:
    """Raw fbank (n, 128) -> model input (1, spec_frames, 128) float32: crop/zero-pad, then (x - mean) / (2 std).

    Padding happens before normalisation (as the authors do), so a clip without audio (0 rows)
    becomes the constant "silence" spectrogram.
    """
    x = torch.as_tensor(np.asarray(fbank, dtype=np.float32) if not torch.is_tensor(fbank) else fbank)
    x = x.to(torch.float32)
    if x.dim() != 2:
        raise ValueError(f"fbank must be 2-D (frames, mel bins), got shape {tuple(x.shape)}")
    x = x[start:start + spec_frames]
    if x.shape[0] < spec_frames:
        x = torch.cat([x, x.new_zeros(spec_frames - x.shape[0], x.shape[1])])
    return ((x - mean) / (2.0 * std)).unsqueeze(0).contiguous()


# --------------------------------------------------------------------------- one clip -> model input


@dataclass(frozen=True)
class ClipSampler:
    """Turns a clip sample dict (`frames` JPEG bytes, `fbank`, `meta`) into (frames uint8, fbank).

    Built from a RunConfig (`from_config`): T and S from the model section, the rest from the
    resolved data section, whose defaults are the only ones (this class declares none).
    """

    num_frames: int
    image_size: int
    spec_frames: int
    audio_window: str
    frame_order: str
    brightness: tuple[float, float]
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip_p: float
    audio_mean: float = FBANK_MEAN
    audio_std: float = FBANK_STD

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "ClipSampler":
        """From a RunConfig: T and S from the model section, the rest from the (resolved) data section."""
        d = cfg.data.resolved(cfg.dataset)
        audio = encoder_norm(cfg.model, "audio")
        return cls(cfg.model.num_frames, cfg.model.image_size, d.spec_frames, d.audio_window, d.frame_order,
                   tuple(d.brightness), tuple(d.crop_scale), tuple(d.crop_ratio), float(d.hflip_p),
                   audio.mean[0], audio.std[0])

    def params(self) -> dict[str, Any]:
        """What determines the output (recorded as the cache's sampling provenance)."""
        return {"num_frames": self.num_frames, "image_size": self.image_size, "spec_frames": self.spec_frames,
                "audio_window": self.audio_window, "frame_order": self.frame_order,
                "brightness": list(self.brightness),
                "crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio), "hflip_p": self.hflip_p,
                "audio_mean": self.audio_mean, "audio_std": self.audio_std}

    def __call__(
        self,
        sample: dict[str, Any],
        *,
        train: bool,
        rng: np.random.Generator | None = None,
        view: int = 0,
        num_views: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        jpegs = sample["frames"]
        indices = clip_frame_indices(len(jpegs), self.num_frames, train=train, frame_order=self.frame_order,
                                     rng=rng, view=view, num_views=num_views)
        frames = decode_jpegs(jpegs, indices)
        if train:
            aug = draw_augmentation(int(frames.shape[-2]), int(frames.shape[-1]), rng if rng is not None
                                    else np.random.default_rng(), brightness=self.brightness,
                                    scale=self.crop_scale, ratio=self.crop_ratio, hflip_p=self.hflip_p)
            frames = augment_frames(frames, aug, self.image_size)
        else:
            frames = resize_test_frames(frames, self.image_size)
        fbank = sample["fbank"]
        start = audio_window_start(indices, sample["meta"].get("fps"), int(fbank.shape[0]), self.spec_frames,
                                   self.audio_window)
        return frames, normalise_fbank(fbank, self.spec_frames, start=start, mean=self.audio_mean, std=self.audio_std)


def load_clip_dir(path: str | Path) -> dict[str, Any]:
    """A prep clip directory -> sample dict {clip_id, label, meta, frames: [JPEG bytes], fbank}.

    Frames are ordered numerically by file stem (`10.jpg` after `9.jpg`). Raises MMAError
    naming the folder when meta.json, the frames or fbank.npy are missing or unreadable.
    """
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MMAError(f"{path}: not a prepped clip (meta.json unreadable: {exc})") from None
    frame_dir = path / "frames"
    files = [p for p in frame_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")] if frame_dir.is_dir() else []
    if not files:
        raise MMAError(f"{frame_dir}: no face frames")
    try:
        files.sort(key=lambda p: int(p.stem))
    except ValueError:
        raise MMAError(f"{frame_dir}: frame names must be numeric (000000.jpg, ...)") from None
    try:
        fbank = np.load(path / "fbank.npy")
    except (OSError, ValueError) as exc:
        raise MMAError(f"{path / 'fbank.npy'}: unreadable ({exc})") from None
    return {"clip_id": str(meta.get("clip_id", path.name)), "label": int(meta.get("label", -1)), "meta": meta,
            "frames": [p.read_bytes() for p in files], "fbank": fbank}


def decode_npy(data: bytes) -> np.ndarray:
    """np.load of .npy bytes (no pickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def make_test_input(sample: dict[str, Any], cfg: RunConfig, *, view: int = 0, num_views: int = 1) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """Deterministic model input of one clip: frames uint8 (T, 3, S, S), fbank float32 (1, 512, 128)."""
    return ClipSampler.from_config(cfg)(sample, train=False, view=view, num_views=num_views)
