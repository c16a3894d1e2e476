"""Stage 2 training of one fold (docs/architecture.md, "Training recipe"), its run directory, resume and DDP.

Recipe: AdamW over the trainable parameters only (lr 1e-4, weight decay 1e-2 on every
trainable tensor), cosine schedule stepped per epoch down to 0, batch 8, seed 1,
cross-entropy; the last epoch's weights are the reported model. Batches stream from the
shards (`model.forward`) or from the patch-embedding cache (`model.forward_embedded`).

Run directory (`<runs>/<name>/seed<s>/fold<k>/`, `Workspace.run_dir`): config.json (resolved config), metrics.jsonl (one record per epoch),
last.pt (trainable tensors + optimizer + scheduler + every rank's RNG states + epoch, saved
after every epoch), curves.png, and at the end predictions.csv, confusion.csv/.png and
result.json. `resume=True` continues from last.pt and reaches the same final metrics as an
uninterrupted run; a finished run directory is never overwritten without `force`.

Under torchrun `train.batch_size` stays the global batch: each of the N ranks takes batch_size / N
clips of every step (consecutive batches of the epoch's permutation: `pipeline.store.stream`), DDP
averages the gradients, the learning rate is the config's, and the last partial global batch is
dropped so every rank takes the same steps (a skipped corrupt clip is absorbed by DDP's Join). One
process with the same global batch and `train.drop_last` computes the same losses. Evaluation
gathers every test clip once, and only rank 0 writes. The optimisation step and its loop live in
`pipeline.engine.step`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import model as mdl
from model.checkpoint import load_model_checkpoint, save_model_checkpoint
from pipeline.core.config import (
    RunConfig,
    load_run_config,
    resolve_precision,
    resolve_run,
    save_resolved_config,
    to_dict,
)
from pipeline.core.errors import MMAError
from pipeline.core.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from pipeline.core.paths import Workspace
from pipeline.core.plots import plot_curves
from pipeline.core.progress import progress_bar
from pipeline.core.seeded_model import build_seeded_model
from pipeline.data.datasets import apply_label_set
from pipeline.data.manifest import label_set
from pipeline.engine.batches import LoaderPool, autocast_dtype, configure_math
from pipeline.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    gather_objects,
    init_distributed,
    shutdown,
)
from pipeline.engine.evaluate import (
    FoldResult,
    evaluate_model,
    summary_fields,
    write_eval_outputs,
)
from pipeline.engine.provenance import run_provenance
from pipeline.engine.step import StepLoop, TrainModule, build_optimizer, training_module
from pipeline.store.cache import check_cache_matches
from pipeline.weights.resolve import resolve_encoder_checkpoints

log = logging.getLogger(__name__)

# Files a run writes; `force` removes exactly these (never the whole directory).
RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "curves.png", "predictions.csv", "confusion.csv",
             "confusion_2clip.csv", "confusion.png", "result.json")
# Config fields that may differ between an interrupted run and its resumption.
RUNTIME_ONLY = {"data.num_workers", "train.compile", "train.checkpointing", "train.log_every", "name"}

EpochHook = Callable[[int, dict[str, Any]], None]


# --------------------------------------------------------------------------- small helpers


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; in deterministic mode also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on `device` (since the last reset), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: RunConfig, current: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """`field: saved -> current` for every field that matters to the result and differs (dotted keys in
    `ignore` are not compared).

    Compared as resolved: data.compat's "auto" choices and the encoders' input statistics (None: the
    encoder's own) on both sides, and a train.precision of "auto" matches what it resolves to on a
    CPU or a GPU.
    """
    saved, current = copy.deepcopy(saved), copy.deepcopy(current)
    for cfg, other in ((saved, current), (current, saved)):
        cfg.data = cfg.data.resolved(cfg.dataset)
        cfg.model = cfg.model.resolved()
        if cfg.train.precision == "auto" and other.train.precision in {
                resolve_precision("auto", cfg.data.compat, d) for d in ("cpu", "cuda")}:
            cfg.train.precision = other.train.precision
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(current))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RUNTIME_ONLY and k not in ignore and a.get(k) != b.get(k)]


# --------------------------------------------------------------------------- run directory state


def _check_run_dir(run_dir: Path, cfg: RunConfig, resume: bool, force: bool) -> str:
    """'fresh', 'resume' or 'finished' (read-only; every rank calls it before rank 0 changes anything)."""
    finished = (run_dir / "result.json").exists()
    has_ckpt = (run_dir / "last.pt").exists()
    if force:
        return "fresh"
    if finished:
        if resume:
            return "finished"
        raise MMAError(f"{run_dir}: holds a finished run (result.json); pass --force to overwrite it")
    if has_ckpt and not resume:
        raise MMAError(f"{run_dir}: holds an unfinished run (last.pt); pass --resume to continue or --force to restart")
    if resume and not has_ckpt:
        log.warning("%s: no last.pt to resume from; starting from epoch 1", run_dir)
        return "fresh"
    if resume:
        saved_path = run_dir / "config.json"
        if saved_path.exists():
            diffs = config_differences(load_run_config(saved_path), cfg)
            if diffs:
                raise MMAError(f"{saved_path}: --resume with a different config ({'; '.join(diffs[:3])})")
        return "resume"
    return "fresh"


def _clear_run_dir(run_dir: Path) -> None:
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- training


def train_fold(cfg: RunConfig, ws: Workspace, *, run_dir: str | Path | None = None, resume: bool = False,
               force: bool = False, on_epoch_end: EpochHook | None = None,
               allow_partial: bool = False) -> FoldResult:
    """Train fold cfg.fold of cfg.dataset, evaluate it, and return its result (result.json's content).

    `on_epoch_end(epoch, record)` is called on every rank after each epoch's checkpoint is
    written (epoch is 1-based); an exception it raises stops the run as a kill would. The final
    evaluation must cover every test clip of the fold unless `allow_partial` (then result.json
    says `partial: true` and lists `clips_missing`).
    """
    cfg = copy.deepcopy(cfg)
    cfg = resolve_encoder_checkpoints(cfg, ws)  # encoder files checked (or found by name) before any work
    info = init_distributed()
    if info.distributed:  # every rank takes the same steps (DDP's collectives pair up step by step)
        cfg.train.drop_last = True
    if not info.is_main:  # rank 0 alone logs progress; the others speak up only for problems
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return _train(cfg, ws, info, Path(run_dir) if run_dir is not None else None, resume, force, on_epoch_end,
                      allow_partial)
    finally:
        shutdown(info)


def _train(cfg: RunConfig, ws: Workspace, info: DistInfo, run_dir: Path | None, resume: bool, force: bool,
           on_epoch_end: EpochHook | None, allow_partial: bool) -> FoldResult:
    classes = label_set(cfg.dataset, ws)
    apply_label_set(cfg, classes)
    resolve_run(cfg.validate(), info.device.type)  # config.json records the concrete data choices and precision
    batch = cfg.train.per_rank_batch(info.world_size)
    run_dir = run_dir or ws.run_dir(cfg.dataset, cfg.name, cfg.fold, cfg.train.seed)
    state = _prepare_run_dir(run_dir, cfg, info, resume, force)
    if state == "finished":
        log.info("%s: already finished; nothing to resume", run_dir)
        return FoldResult.from_record(json.loads((run_dir / "result.json").read_text()), run_dir)

    seed_everything(cfg.train.seed, cfg.train.deterministic)
    tf32 = configure_math(info.device, cfg.train.deterministic)
    net, encoders = _build_network(cfg, ws, info.device)
    opt, sched = build_optimizer(net, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    log.info("training %s fold %d: %d trainable tensors, %.2fM trainable parameters, %s (%s%s%s), "
             "batch %d%s, %d epoch(s) -> %s", cfg.dataset, cfg.fold, len(params),
             sum(p.numel() for p in params) / 1e6, info.device, cfg.train.precision, ", TF32" if tf32 else "",
             ", compiled" if cfg.train.compile else "", cfg.train.batch_size,
             f" ({batch} on each of {info.world_size} ranks)" if info.distributed else "", cfg.train.epochs, run_dir)
    start_epoch = _resume_state(run_dir, net, opt, sched, info, cfg.train.epochs) if state == "resume" else 0
    train_net = training_module(net, cfg, info)
    amp = autocast_dtype(cfg.train.precision, info.device, cfg.data.compat)
    loaders = LoaderPool(cfg, ws, rank=info.rank, world_size=info.world_size, batch_size=batch,
                         drop_last=cfg.train.drop_last)

    final: dict[str, Any] | None = None
    for epoch in range(start_epoch, cfg.train.epochs):
        last = epoch == cfg.train.epochs - 1
        record = _train_epoch(train_net, net, opt, cfg, ws, info, epoch, amp, loaders)
        sched.step()
        ev = evaluate_model(net, cfg, ws, info=info, two_clip=last and cfg.train.eval_two_clip,
                            allow_partial=allow_partial, loaders=loaders)
        record.update(test_uar=ev["uar"], test_war=ev["war"], test_clips=ev["clips"], eval_seconds=ev["seconds"])
        if last:
            final = ev
        rngs = gather_objects(rng_state(), info)
        if info.is_main:
            _save_epoch(run_dir, cfg, net, opt, sched, encoders, rngs, epoch, record, ev, classes)
        barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)

    if final is None:  # resumed after the last epoch's checkpoint: evaluate the final weights
        final = evaluate_model(net, cfg, ws, info=info, two_clip=cfg.train.eval_two_clip,
                               allow_partial=allow_partial, loaders=loaders)
    loaders.close()
    result = _finish(run_dir, cfg, final, classes, info, net, ws)
    barrier(info)
    return FoldResult.from_record(result, run_dir)


def _prepare_run_dir(run_dir: Path, cfg: RunConfig, info: DistInfo, resume: bool, force: bool) -> str:
    """Decide fresh / resume / finished on every rank; rank 0 clears leftovers and writes config.json."""
    state = _check_run_dir(run_dir, cfg, resume, force)
    if state == "finished":
        return state
    barrier(info)
    if info.is_main:
        if state == "fresh":  # force, or leftovers of a run killed before its first checkpoint
            _clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, run_dir / "config.json")
    barrier(info)
    return state


def _build_network(cfg: RunConfig, ws: Workspace, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The seeded model on `device` and its encoder sources (path + sha256); checks the cache when training from it."""
    net = build_seeded_model(cfg.model, cfg.train.seed, cfg.vision_ckpt, cfg.audio_ckpt)
    none = {"path": None, "sha256": None}
    encoders = {w: dict(net.encoder_sources.get(w) or none) for w in ("vision", "audio")}
    if cfg.train.source == "cache":
        check_cache_matches(cfg, ws)
    return net.to(device), encoders


def _resume_state(run_dir: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, info: DistInfo,
                  epochs: int) -> int:
    """Load last.pt (weights, optimizer, scheduler, RNG), trim metrics.jsonl to it; returns the epochs done."""
    ck = load_model_checkpoint(run_dir / "last.pt", map_location="cpu")
    mdl.load_trainable_state_dict(net, ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    rngs = ck.get("rng") or []
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    else:
        log.warning("last.pt holds RNG states of %d rank(s), this run has %d: resumed run will not be "
                    "bit-identical", len(rngs), info.world_size)
    start_epoch = int(ck["epoch"])
    if info.is_main:
        kept = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("epoch", 0) <= start_epoch]
        atomic_write_text(run_dir / "metrics.jsonl", "".join(_jsonl_line(r) for r in kept))
    log.info("resuming %s after epoch %d/%d", run_dir, start_epoch, epochs)
    return start_epoch


def _save_epoch(run_dir: Path, cfg: RunConfig, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                encoders: dict[str, Any], rngs: list[Any], epoch: int, record: dict[str, Any], ev: dict[str, Any],
                classes: list[str]) -> None:
    """Rank 0 after an epoch: metrics line, last.pt (trainable tensors + optimizer/scheduler/RNG), curves."""
    append_jsonl(run_dir / "metrics.jsonl", record)
    save_model_checkpoint(run_dir / "last.pt", net, to_dict(cfg), encoders, extra={
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs, "epoch": epoch + 1,
        "classes": classes, "dataset": cfg.dataset, "fold": cfg.fold})
    plot_curves(read_jsonl(run_dir / "metrics.jsonl"), run_dir / "curves.png",
                title=f"{cfg.dataset} fold {cfg.fold} ({cfg.name})")
    log.info("epoch %d/%d: loss %.4f, train acc %.1f%%, test UAR %.2f WAR %.2f, %.1f clips/s, lr %.2e",
             epoch + 1, cfg.train.epochs, record["loss"], record["train_acc"], ev["uar"], ev["war"],
             record["clips_per_s"], record["lr"])


def _finish(run_dir: Path, cfg: RunConfig, final: dict[str, Any], classes: list[str], info: DistInfo,
            net: torch.nn.Module, ws: Workspace) -> dict[str, Any]:
    """The result.json content; rank 0 writes it with predictions and confusion matrices."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    result = {**summary_fields(final, classes), "fold": cfg.fold, "epochs": cfg.train.epochs,
              "dataset": cfg.dataset, "name": cfg.name, "image_size": cfg.model.image_size,
              "run_dir": str(run_dir), "source": cfg.train.source,
              "cache_views": cfg.data.cache_views if cfg.train.source == "cache" else None,
              "train_samples_skipped": int(sum(r.get("train_samples_skipped", 0) for r in records)),
              "provenance": run_provenance(cfg, ws, net, info.device)}
    if info.is_main:
        write_eval_outputs(run_dir, final, classes, title=f"{cfg.dataset} fold {cfg.fold}")
        atomic_write_json(run_dir / "result.json", result)
        log.info("fold %d done: UAR %.2f WAR %.2f | 2-clip UAR %s WAR %s -> %s", cfg.fold, result["uar"],
                 result["war"], _pct(result["uar_2clip"]), _pct(result["war_2clip"]), run_dir / "result.json")
    return result


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _jsonl_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _train_epoch(train_net: TrainModule, net: torch.nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig,
                 ws: Workspace, info: DistInfo, epoch: int, amp: torch.dtype | None,
                 loaders: LoaderPool) -> dict[str, Any]:
    """One pass over this rank's share of the training split; returns the epoch's metrics record (all ranks summed)."""
    device = info.device
    loader = loaders.get("train", epoch=epoch)
    dataset: Any = loader.dataset
    total, planned = len(dataset), dataset.epoch_clips()  # clips in the split / read this epoch, all ranks
    lr = opt.param_groups[0]["lr"]
    net.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    join: Any = contextlib.nullcontext()
    if train_net.ddp is not None:
        from torch.distributed.algorithms.join import Join

        join = Join([train_net.ddp])
    title = f"epoch {epoch + 1}/{cfg.train.epochs}"
    progress = progress_bar(title, planned, unit="clips")
    if not info.is_main:
        progress.disable = True
    start = time.perf_counter()
    with progress, join:
        task = progress.add_task(title, total=planned // info.world_size)

        def show(step: int, loss: float, acc: float) -> None:
            progress.update(task, description=f"{title} loss {loss:.4f} acc {acc:.1f}%")
            log.debug("epoch %d step %d: running loss %.4f, accuracy %.1f%%", epoch + 1, step, loss, acc)

        loop = StepLoop(train_net.module, opt, device=device, amp=amp, source=cfg.train.source,
                        pad_to=loaders.batch_size if train_net.compiled else None, log_every=cfg.train.log_every,
                        on_log=show)
        totals = loop.run(loader, advance=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - start
    loss_sum, correct, count = all_reduce_sum([totals.loss_sum, float(totals.correct), float(totals.count)], info)
    if count == 0:
        raise MMAError(f"fold {cfg.fold} of {cfg.dataset}: the training split yielded no clips")
    skipped = max(0, int(planned) - int(count))
    if skipped:
        log.warning("epoch %d: %d training sample(s) skipped as unreadable (see %s)", epoch + 1, skipped,
                    ws.shards_dir(cfg.dataset) / "read_errors.jsonl")
    peak = max(gather_objects(peak_memory_mb(device), info))
    return {
        "epoch": epoch + 1,
        "loss": loss_sum / count,
        "lr": lr,
        "train_acc": 100.0 * correct / count,
        "train_clips": int(count),
        "train_clips_dropped": int(total - planned),
        "train_samples_skipped": skipped,
        "clips_per_s": count / seconds if seconds > 0 else None,
        "seconds": seconds,
        "peak_mem_mb": peak,
        "world_size": info.world_size,
    }
