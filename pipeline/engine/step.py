"""The optimisation step and the loop over a rank's batches: what `mma train` runs per batch and
`bench/train_step.py` times (docs/architecture.md, "Training recipe" and "Speed").

One step: batch to the device (pinned memory, `non_blocking`), forward under the config's autocast,
fp32 cross-entropy, backward, AdamW (fused on CUDA). The module the step calls is the model (or its
cached-input forward), wrapped by DDP under torchrun and by `torch.compile` when `train.compile`,
with the encoder blocks checkpointed when `train.checkpointing`. A compiled step sees one batch
shape: a partial batch is padded with rows the loss ignores (`IGNORE`), unless `train.drop_last`
left it out.

The loop never waits for the device between steps: the running loss and accuracy are sums kept on
the device, and the host reads them every `train.log_every` steps and once at the end (`StepLoop`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from pipeline.core.config import RunConfig
from pipeline.engine.batches import autocast, prepare_batch
from pipeline.engine.distributed import DistInfo

log = logging.getLogger(__name__)

IGNORE = -100  # label of a padding row: cross-entropy and the accuracy count skip it


class EmbeddedForward(torch.nn.Module):
    """Makes `forward_embedded` the forward of a module, so DDP / torch.compile can wrap it."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, vision_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        return self.net.forward_embedded(vision_tokens, audio_tokens)


def build_optimizer(net: torch.nn.Module, cfg: RunConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters only (weight decay on all of them; the fused kernel when they
    live on a GPU) + the per-epoch cosine schedule to 0."""
    params = [p for p in net.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                            weight_decay=cfg.train.weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs, eta_min=0.0)
    return opt, sched


@dataclass
class TrainModule:
    """What a step calls (`module`: compiled and/or DDP-wrapped) and the DDP wrapper itself (for Join)."""

    module: torch.nn.Module
    ddp: torch.nn.Module | None
    compiled: bool


def training_module(net: torch.nn.Module, cfg: RunConfig, info: DistInfo) -> TrainModule:
    """The cached-input forward when training from the cache, activation checkpointing when asked, DDP
    under torchrun, `torch.compile` (of the DDP wrapper, so its buckets line up with the graph) when asked."""
    if hasattr(net, "set_grad_checkpointing"):
        net.set_grad_checkpointing(cfg.train.checkpointing)
    module: torch.nn.Module = EmbeddedForward(net) if cfg.train.source == "cache" else net
    ddp = None
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = info.device
        module = ddp = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        module = torch.compile(module)
    return TrainModule(module, ddp, bool(cfg.train.compile))


def pad_batch(x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Pad a partial batch to `size` rows: zero inputs labelled `IGNORE` (every row of the model is
    computed on its own, so the real rows' outputs and gradients do not change)."""
    n = labels.shape[0]
    if n >= size:
        return x1, x2, labels

    def pad(x: torch.Tensor, value: float | int) -> torch.Tensor:
        return torch.cat([x, x.new_full((size - n, *x.shape[1:]), value)])

    return pad(x1, 0), pad(x2, 0), pad(labels, IGNORE)


def train_step(train_net: torch.nn.Module, opt: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor,
               labels: torch.Tensor, device: torch.device, amp: torch.dtype | None) -> tuple[torch.Tensor,
                                                                                          torch.Tensor]:
    """One optimisation step (autocast forward, fp32 cross-entropy over the rows not labelled `IGNORE`,
    backward, AdamW); returns (loss, logits), detached, still on the device."""
    with autocast(device, amp):
        logits = train_net(x1, x2)
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


@dataclass
class StepTotals:
    """A loop's sums, read from the device once: loss summed over clips, correct predictions, clips, steps."""

    loss_sum: float
    correct: int
    count: int
    steps: int


LogHook = Callable[[int, float, float], None]  # (step, running mean loss, running accuracy %)


class StepLoop:
    """Runs `train_step` over a rank's loader batches without a host-device synchronisation per step.

    The clips of a batch are counted on the host (the batch's length); loss and correct counts are
    summed on the device. Every `log_every` steps (0: never) the host reads the running sums and calls
    `on_log`; `finish` reads them once more. `pad_to` pads a partial batch (a compiled step).
    """

    def __init__(self, module: torch.nn.Module, opt: torch.optim.Optimizer, *, device: torch.device,
                 amp: torch.dtype | None, source: str, pad_to: int | None = None, log_every: int = 0,
                 on_log: LogHook | None = None) -> None:
        self.module, self.opt = module, opt
        self.device, self.amp, self.source = device, amp, source
        self.pad_to, self.log_every, self.on_log = pad_to, int(log_every), on_log
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self.steps = 0

    def step(self, batch: Sequence[Any]) -> int:
        """One optimisation step on a loader batch; returns its clips (host-side, no sync)."""
        x1, x2, labels, _ = prepare_batch(batch, self.source, self.device)
        n = int(labels.shape[0])
        if self.pad_to is not None:
            x1, x2, labels = pad_batch(x1, x2, labels, self.pad_to)
        loss, logits = train_step(self.module, self.opt, x1, x2, labels, self.device, self.amp)
        self.loss_sum += loss.double() * n
        self.correct += (logits.argmax(dim=1) == labels).sum()  # padding rows (IGNORE) never match
        self.count += n
        self.steps += 1
        if self.log_every and self.steps % self.log_every == 0 and self.on_log is not None:
            loss_sum, correct = self._read()
            self.on_log(self.steps, loss_sum / self.count, 100.0 * correct / self.count)
        return n

    def run(self, batches: Iterable[Sequence[Any]], advance: Callable[[int], None] | None = None) -> StepTotals:
        """`step` over every batch (calling `advance(clips)` after each), then `finish`."""
        for batch in batches:
            n = self.step(batch)
            if advance is not None:
                advance(n)
        return self.finish()

    def finish(self) -> StepTotals:
        """The sums so far (one host read)."""
        loss_sum, correct = self._read()
        return StepTotals(loss_sum, correct, self.count, self.steps)

    def _read(self) -> tuple[float, int]:
        both = torch.stack([self.loss_sum, self.correct.double()]).tolist()  # the one transfer
        return float(both[0]), int(both[1])
