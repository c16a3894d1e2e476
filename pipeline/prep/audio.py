"""Audio features: waveform -> kaldi log-mel filterbank exactly as docs/architecture.md, "Data".

Prep stores the raw fbank of the whole clip (float16, not normalised, not padded); the loader
normalises and pads/crops it (`pipeline.store.sampling.normalise_fbank`). Both the authors' mode
(the file's native rate, first channel) and the default (mono mix resampled to 16 kHz, what
AudioMAE was trained on) go through `prepare_waveform`. A clip without audio gets
`silence_fbank()`: zero rows, which the loader's zero padding turns into the authors'
"silence" input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.core.config import AUDIO_RATE_MODES, check_choice

TARGET_RATE = 16000
NUM_MEL_BINS = 128

FRAME_SHIFT_MS = 10.0
FBANK_ROWS_PER_SECOND = int(1000 / FRAME_SHIFT_MS)  # one fbank row every 10 ms

# torchaudio.compliance.kaldi.fbank arguments (sample_frequency is the waveform's rate).
FBANK_KWARGS: dict[str, Any] = dict(
    htk_compat=True,
    use_energy=False,
    window_type="hanning",
    num_mel_bins=NUM_MEL_BINS,
    dither=0.0,
    frame_shift=FRAME_SHIFT_MS,
    frame_length=25.0,
)


def prepare_waveform(samples: np.ndarray | torch.Tensor, sample_rate: int, mode: str = "16k") -> tuple[torch.Tensor, int]:
    """(channels, n) float samples -> (1-D float32 waveform, its rate).

    mode "16k": mean over channels, resampled to 16 kHz (default); "native": first channel at the
    file's own rate (the authors' `torchaudio.load(...)[0]`).
    """
    check_choice("data.audio_rate", mode, AUDIO_RATE_MODES)
    wav = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not torch.is_tensor(samples) else samples)
    wav = wav.to(torch.float32)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if mode == "native":
        return wav[0].contiguous(), int(sample_rate)
    mono = wav.mean(dim=0)
    if int(sample_rate) != TARGET_RATE and mono.numel() > 0:
        import torchaudio.functional as AF

        mono = AF.resample(mono, int(sample_rate), TARGET_RATE)
    return mono.contiguous(), TARGET_RATE


def min_samples(sample_rate: int) -> int:
    """Samples needed for one 25 ms fbank frame."""
    return int(sample_rate * FBANK_KWARGS["frame_length"] / 1000.0)


def waveform_to_fbank(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Kaldi fbank (n_frames, 128) float32 of a mono waveform (mean removed first, as the authors do).

    A waveform shorter than one 25 ms frame gives a (0, 128) tensor.
    """
    from torchaudio.compliance import kaldi

    wav = torch.as_tensor(waveform, dtype=torch.float32)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.shape[0] != 1:
        raise ValueError(f"waveform_to_fbank wants a mono waveform, got shape {tuple(wav.shape)}")
    if wav.shape[1] < min_samples(sample_rate):
        return torch.zeros((0, NUM_MEL_BINS), dtype=torch.float32)
    wav = wav - wav.mean()
    return kaldi.fbank(wav, sample_frequency=float(sample_rate), **FBANK_KWARGS)


def silence_fbank(num_frames: int = 0) -> np.ndarray:
    """The fbank of a clip without audio: `num_frames` zero rows (zero padding = the authors' silence)."""
    return np.zeros((num_frames, NUM_MEL_BINS), dtype=np.float16)


def clip_fbank(samples: np.ndarray | None, sample_rate: int | None, mode: str = "16k") -> tuple[np.ndarray, dict]:
    """Whole-clip fbank as float16 (n, 128) plus facts for meta.json (rate used, seconds, has_audio)."""
    if samples is None or sample_rate is None:
        return silence_fbank(), {"has_audio": False, "sample_rate": None, "audio_seconds": 0.0,
                                 "source_sample_rate": None, "audio_channels": 0}
    wav, rate = prepare_waveform(samples, sample_rate, mode)
    fbank = waveform_to_fbank(wav, rate)
    info = {
        "has_audio": True,
        "sample_rate": rate,
        "audio_seconds": round(float(wav.numel()) / rate, 4),
        "source_sample_rate": int(sample_rate),
        "audio_channels": int(np.asarray(samples).shape[0]) if np.asarray(samples).ndim == 2 else 1,
    }
    return fbank.numpy().astype(np.float16), info
