"""The training step and its loop (pipeline.engine.step): no host sync per step, padding, activation
checkpointing, a compiled step equal to the eager one and compiled once, the batch split over ranks."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import model as mdl
import pipeline
from pipeline.core.config import tiny
from pipeline.engine.distributed import DistInfo
from pipeline.engine.step import IGNORE, StepLoop, build_optimizer, pad_batch, train_step, training_module
from pipeline.store.stream import epoch_clips, step_share

CPU = torch.device("cpu")
REPO = Path(pipeline.__file__).resolve().parents[1]
OURS = (str(REPO / "pipeline"), str(REPO / "model"))
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def _cfg(**train):
    """The tiny preset shrunk further (2 frames of one patch, 2 blocks): a compile takes seconds, not minutes."""
    cfg = tiny()
    m = cfg.model
    m.image_size, m.num_frames, m.audio_frames, m.audio_mel_bins = 16, 2, 32, 16
    m.audio_ckpt_grid_t, m.audio_ckpt_grid_f = 2, 1
    m.embed_dim, m.depth, m.num_heads, m.latent_dim = 32, 2, 2, 16
    m.temporal_dim, m.temporal_heads, m.temporal_head_dim, m.temporal_mlp_dim = 32, 2, 16, 64
    m.num_classes, m.drop_path = 3, 0.0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _batches(cfg, sizes, seed=1):
    """Loader-shaped batches: uint8 frames, fbank, int64 labels, clip ids."""
    m, g = cfg.model, torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (n, m.num_frames, 3, m.image_size, m.image_size), dtype=torch.uint8, generator=g),
             torch.randn(n, 1, m.audio_frames, m.audio_mel_bins, generator=g),
             torch.randint(0, m.num_classes, (n,), generator=g), [f"c{i}" for i in range(n)]) for n in sizes]


def _net(cfg):
    torch.manual_seed(0)
    return mdl.build_model(cfg.model)


def _count_syncs(monkeypatch) -> list[tuple[str, str, int]]:
    """Record every call of a host-reading Tensor method made from the project's own code."""
    calls: list[tuple[str, str, int]] = []
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(OURS):
                calls.append((_name, caller.f_code.co_filename, caller.f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize("log_every,steps", [(0, 6), (2, 6), (4, 9)])
def test_the_host_reads_the_device_only_every_log_every_steps(monkeypatch, log_every, steps):
    cfg = _cfg()
    net = _net(cfg)
    opt, _ = build_optimizer(net, cfg)
    logged = []
    loop = StepLoop(net, opt, device=CPU, amp=None, source="shards", log_every=log_every,
                    on_log=lambda step, loss, acc: logged.append(step))
    batches = _batches(cfg, [4] * (steps - 1) + [3])
    calls = _count_syncs(monkeypatch)
    for b in batches:
        loop.step(b)
    in_steps = list(calls)
    totals = loop.finish()
    expected = steps // log_every if log_every else 0
    assert len(in_steps) == expected, in_steps  # one read per log line, nothing per step
    assert logged == [log_every * (i + 1) for i in range(expected)]
    assert len(calls) == expected + 1  # finish: one more read
    assert totals.count == 4 * (steps - 1) + 3 and totals.steps == steps and totals.loss_sum > 0


def test_padding_rows_change_neither_loss_nor_gradients():
    cfg = _cfg()
    net = _net(cfg)
    (x1, x2, y, _), = _batches(cfg, [3])
    x1 = x1.float().div_(255)

    def loss_and_grads(a, b, labels):
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(a, b), labels, ignore_index=IGNORE)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.requires_grad]

    plain, g_plain = loss_and_grads(x1, x2, y)
    p1, p2, py = pad_batch(x1, x2, y, 5)
    assert p1.shape[0] == p2.shape[0] == 5 and py.tolist()[3:] == [IGNORE, IGNORE]
    padded, g_padded = loss_and_grads(p1, p2, py)
    torch.testing.assert_close(padded, plain)
    for a, b in zip(g_padded, g_plain):
        torch.testing.assert_close(a, b)


def test_checkpointing_gives_the_same_step():
    cfg, ckpt_cfg = _cfg(), _cfg(checkpointing=True)
    info = DistInfo(0, 1, 0, CPU)
    results = []
    for c in (cfg, ckpt_cfg):
        net = _net(c)
        module = training_module(net, c, info)
        calls = []
        block = net.vision.blocks[0]
        block.forward = lambda x, _forward=block.forward: calls.append(1) or _forward(x)  # counts the recompute too
        opt, _ = build_optimizer(net, c)
        (x1, x2, y, _), = _batches(c, [4])
        loss, _ = train_step(module.module, opt, x1.float() / 255, x2, y, CPU, None)
        assert len(calls) == (2 if c.train.checkpointing else 1)  # checkpointed: recomputed in backward
        results.append((loss, [p.detach().clone() for p in net.parameters() if p.requires_grad]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_compiled_step_matches_eager_and_compiles_once(monkeypatch):
    """torch.compile (inductor, CPU) of the whole model, prompts inside the encoders included: the same
    losses as eager over 4 steps, one graph, no recompilation (the partial last batch is padded)."""
    from torch._dynamo.utils import counters

    cfg, compiled_cfg = _cfg(), _cfg(compile=True)
    info = DistInfo(0, 1, 0, CPU)
    eager_net = _net(cfg)
    compiled_net = copy.deepcopy(eager_net)
    batches = _batches(cfg, [4, 4, 4, 3])
    torch._dynamo.reset()
    counters.clear()
    losses = {}
    for name, c, net in (("eager", cfg, eager_net), ("compiled", compiled_cfg, compiled_net)):
        module = training_module(net, c, info)
        assert module.compiled is c.train.compile
        opt, _ = build_optimizer(net, c)
        losses[name] = []
        for i, b in enumerate(batches):
            loop = StepLoop(module.module, opt, device=CPU, amp=None, source="shards",
                            pad_to=4 if module.compiled else None)
            if module.compiled and i == 1:
                monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
            loop.step(b)
            t = loop.finish()
            losses[name].append(t.loss_sum / t.count)
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1


def test_steps_take_consecutive_batches_whatever_the_ranks_and_workers():
    count, global_batch = 23, 4
    one = [step_share(count, batch_size=global_batch, rank=0, world_size=1, worker=0, workers=1, drop_last=False)]
    assert one == [list(range(23))]
    for world, workers in ((2, 1), (2, 3), (4, 2)):
        b = global_batch // world
        shares = {(r, w): step_share(count, batch_size=b, rank=r, world_size=world, worker=w, workers=workers,
                                     drop_last=False) for r in range(world) for w in range(workers)}
        # the DataLoader of rank r takes its workers' batches in turn: step i comes from worker i % workers
        for step in range(-(-count // global_batch)):
            got = []
            for r in range(world):
                share = shares[(r, step % workers)]
                got += share[(step // workers) * b:(step // workers + 1) * b]
            assert got == list(range(step * global_batch, min(count, (step + 1) * global_batch)))
        assert sorted(i for s in shares.values() for i in s) == list(range(count))
    dropped = [step_share(count, batch_size=2, rank=r, world_size=2, worker=0, workers=1, drop_last=True)
               for r in range(2)]
    assert len(dropped[0]) == len(dropped[1]) == 10 and epoch_clips(count, 2, 2, True) == 20


def test_tf32_follows_the_device_and_determinism_and_is_never_left_on(monkeypatch):
    """Ampere+ (a mocked GPU) gets TF32 unless the run is deterministic; each call sets both switches."""
    from pipeline.engine.batches import configure_math

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    try:
        assert configure_math(torch.device("cuda")) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert configure_math(torch.device("cuda"), deterministic=True) is False
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # Volta: no TF32
        assert configure_math(torch.device("cuda")) is False
        assert configure_math(torch.device("cpu")) is False and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
