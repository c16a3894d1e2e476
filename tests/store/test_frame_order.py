"""data.frame_order="authors": the authors' MAFW frame list (names `0.jpg, 1.jpg, ...` sorted as strings,
`len - 1` frames) against a reference written here from their description, and the sampler reading it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.config import paper, tiny
from pipeline.store.sampling import ClipSampler, authors_frame_order, clip_frame_indices

T = 16


def reference_test_frames(n: int) -> list[int]:
    """The authors' loader, from its description: frame i saved as f"{i}.jpg", paths sorted as strings,
    the annotation's count is len - 1, the test frames are int(tick / 2 + tick * x), tick = count / 16."""
    paths = sorted(f"{i}.jpg" for i in range(n))
    count = n - 1
    if count > T:
        tick = count / float(T)
        picks = [int(tick / 2.0 + tick * x) for x in range(T)]
    else:
        picks = list(range(count)) + [count - 1] * (T - count)
    return [int(paths[p].split(".")[0]) for p in picks]


def reference_train_frames(n: int, draws: list[int]) -> list[int]:
    """Their train rule on the same list: segment length count // 16, frame k * seg + draw_k."""
    paths = sorted(f"{i}.jpg" for i in range(n))
    seg = (n - 1) // T
    return [int(paths[k * seg + d].split(".")[0]) for k, d in enumerate(draws)]


def test_103_frame_clip_matches_the_issue_numbers():
    got = clip_frame_indices(103, T, train=False, frame_order="authors")
    assert got == [100, 14, 2, 26, 31, 38, 43, 49, 55, 60, 66, 72, 78, 84, 9, 95]
    assert got[:5] == [100, 14, 2, 26, 31] and got[-3:] == [84, 9, 95]
    assert clip_frame_indices(103, T, train=False, frame_order="numeric") == [
        3, 9, 16, 22, 28, 35, 41, 48, 54, 61, 67, 74, 80, 86, 93, 99]


@pytest.mark.parametrize("n", [2, 10, 16, 17, 18, 33, 99, 100, 101, 103, 250, 1001])
def test_authors_order_matches_the_reference(n):
    assert clip_frame_indices(n, T, train=False, frame_order="authors") == reference_test_frames(n)
    order = authors_frame_order(n)
    assert len(order) == n - 1 and sorted(order + [max(set(range(n)) - set(order))]) == list(range(n))
    if n > T + 1:
        rng = np.random.default_rng(n)
        got = clip_frame_indices(n, T, train=True, frame_order="authors", rng=rng)
        ref_rng = np.random.default_rng(n)
        draws = [int(ref_rng.integers((n - 1) // T)) for _ in range(T)]
        assert got == reference_train_frames(n, draws)


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def test_sampler_reads_the_authors_frames_and_config_picks_the_order():
    n = 40
    sample = {"frames": [_jpeg(5 * i) for i in range(n)], "fbank": np.zeros((0, 128), np.float32),
              "meta": {"fps": 25.0}}
    cfg = paper()
    cfg.dataset = "mafw"
    sampler = ClipSampler.from_config(cfg)
    assert sampler.frame_order == "authors"
    frames, _ = sampler(sample, train=False)
    shown = [round(v / 5) for v in frames[:, 0, 0, 0].tolist()]
    assert shown == reference_test_frames(n)
    for dataset, preset, want in (("dfew", paper, "numeric"), ("mafw", tiny, "numeric")):
        cfg = preset()
        cfg.dataset = dataset
        assert ClipSampler.from_config(cfg).frame_order == want
    cfg = paper()
    cfg.dataset = "mafw"
    cfg.data.frame_order = "numeric"  # each choice settable on its own
    frames, _ = ClipSampler.from_config(cfg)(sample, train=False)
    assert [round(v / 5) for v in frames[:, 0, 0, 0].tolist()] == clip_frame_indices(n, T, train=False)
    assert isinstance(frames, torch.Tensor)
