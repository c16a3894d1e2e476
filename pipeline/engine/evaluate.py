"""Evaluation: the one test loop (1-clip and 2-clip) shared by the trainer and `mma eval`.

`evaluate_model` runs a model over a fold's test clips from shards or from the cache; under
DDP every rank reads its own shards and the predictions are gathered and de-duplicated by
clip id, so every test clip counts exactly once. `evaluate_checkpoint` loads one of our
checkpoints (or the authors', `official=True`) and writes predictions, confusion matrix and
metrics. `write_eval_outputs` is the writer both use.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

import model as mdl
from model.checkpoint import load_model_checkpoint
from pipeline.core.config import RunConfig, from_dict, saved_run_config, upgrade_saved_config
from pipeline.core.device import pick_device
from pipeline.core.errors import IncompleteResultError, MMAError
from pipeline.core.io import atomic_write_json, atomic_write_text, read_json_or, sha256_file
from pipeline.core.paths import Workspace
from pipeline.core.plots import plot_confusion
from pipeline.core.results import StageResult
from pipeline.core.seeded_model import build_seeded_model
from pipeline.data.datasets import apply_label_set
from pipeline.data.manifest import label_set
from pipeline.engine.batches import (
    LoaderPool,
    autocast,
    autocast_dtype,
    configure_math,
    forward_fn,
    prepare_batch,
)
from pipeline.engine.distributed import (
    DistInfo,
    gather_objects,
    init_distributed,
    shutdown,
)
from pipeline.engine.metrics import classification_metrics
from pipeline.engine.provenance import run_provenance
from pipeline.store.cache import check_cache_matches
from pipeline.store.shard import read_index
from pipeline.store.stream import split_clip_ids
from pipeline.weights.resolve import check_trained_checkpoint, resolve_encoder_checkpoints

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FoldResult(StageResult):
    """The metrics of one fold, as `mma train` (result.json) or `mma eval` (eval.json) wrote them.

    `record` is the whole file (per-class recall, confusion matrices, clip counts, provenance);
    the fields are what callers read most. UAR/WAR in %; the 2-clip values are None when 2-clip
    evaluation was off.
    """

    dataset: str
    fold: int
    uar: float
    war: float
    uar_2clip: float | None
    war_2clip: float | None
    partial: bool
    out_dir: Path
    record: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any], out_dir: str | Path) -> "FoldResult":
        return cls(dataset=record["dataset"], fold=int(record["fold"]), uar=record["uar"], war=record["war"],
                   uar_2clip=record.get("uar_2clip"), war_2clip=record.get("war_2clip"),
                   partial=bool(record.get("partial")), out_dir=Path(out_dir), record=record)

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)

    def text(self) -> str:
        """The headline numbers (the files hold the rest)."""
        return json.dumps({"uar": self.uar, "war": self.war, "uar_2clip": self.uar_2clip,
                           "war_2clip": self.war_2clip, "fold": self.fold}, indent=2)


# --------------------------------------------------------------------------- the evaluation loop


def _predict(model: torch.nn.Module, loader: Iterable[Any], source: str, device: torch.device,
             amp: torch.dtype | None) -> list[tuple[str, int, list[float]]]:
    fn = forward_fn(model, source)
    rows: list[tuple[str, int, list[float]]] = []
    with torch.inference_mode():
        for batch in loader:
            x1, x2, labels, clip_ids = prepare_batch(batch, source, device)
            with autocast(device, amp):
                logits = fn(x1, x2)
            logits = logits.float().cpu()
            for cid, y, row in zip(clip_ids, labels.cpu().tolist(), logits.tolist()):
                rows.append((str(cid), int(y), row))
    return rows


def _gather_unique(rows: list[tuple[str, int, list[float]]], info: DistInfo) -> dict[str, tuple[int, np.ndarray]]:
    """All ranks' predictions keyed by clip id (a clip seen twice is counted once, and logged)."""
    out: dict[str, tuple[int, np.ndarray]] = {}
    duplicates = 0
    for part in gather_objects(rows, info):
        for cid, y, logits in part:
            if cid in out:
                duplicates += 1
                continue
            out[cid] = (y, np.asarray(logits, dtype=np.float32))
    if duplicates:
        log.warning("evaluation: %d duplicate test clip(s) across ranks ignored", duplicates)
    return out


def expected_test_clips(cfg: RunConfig, ws: Workspace) -> list[str]:
    """The fold's test clip ids as the shard index lists them (the cache is built from the same index)."""
    return split_clip_ids(read_index(ws, cfg.dataset), cfg.fold, "test")


def check_complete(evaluated: set[str], expected: list[str], cfg: RunConfig, ws: Workspace,
                   allow_partial: bool) -> list[str]:
    """The expected test clips that were not evaluated; IncompleteResultError names them unless allow_partial."""
    missing = sorted(set(expected) - evaluated)
    if missing and not allow_partial:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise IncompleteResultError(
            f"fold {cfg.fold} of {cfg.dataset}: {len(missing)} of {len(expected)} test clip(s) could not be "
            f"evaluated ({shown}); see {ws.shards_dir(cfg.dataset) / 'read_errors.jsonl'}, or pass "
            "--allow-partial to write a result marked partial")
    if missing:
        log.warning("fold %d: PARTIAL evaluation: %d of %d test clips missing (--allow-partial)", cfg.fold,
                    len(missing), len(expected))
    return missing


def evaluate_model(model: torch.nn.Module, cfg: RunConfig, ws: Workspace, *, info: DistInfo | None = None,
                   device: torch.device | None = None, two_clip: bool = True,
                   allow_partial: bool = False, loaders: LoaderPool | None = None) -> dict[str, Any]:
    """1-clip (and 2-clip) metrics of `model` on fold cfg.fold's test clips.

    Returns uar, war, per_class_recall, confusion, the same with a `_2clip` suffix (None when
    two_clip is off), clips (count), clips_expected / clips_evaluated / clips_missing / partial,
    and predictions (list of per-clip dicts, sorted by clip id). A test clip that could not be
    read is an IncompleteResultError naming it, unless `allow_partial`. `loaders` (the trainer's pool)
    reuses the test loaders across calls.
    """
    info = info or DistInfo(0, 1, 0, device or pick_device())
    if loaders is None:
        loaders = LoaderPool(cfg, ws, rank=info.rank, world_size=info.world_size,
                             batch_size=max(1, cfg.train.batch_size // info.world_size))
    device = device or info.device
    source = cfg.train.source
    amp = autocast_dtype(cfg.train.precision, device, cfg.data.compat)
    configure_math(device, cfg.train.deterministic)  # the trainer's math: its evaluation and `mma eval` agree
    num_classes = cfg.model.num_classes
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        def run(view: int, num_views: int) -> dict[str, tuple[int, np.ndarray]]:
            loader = loaders.get("test", view=view, num_views=num_views)
            return _gather_unique(_predict(model, loader, source, device, amp), info)

        one = run(0, 1)
        two: dict[str, np.ndarray] | None = None
        if two_clip:
            a, b = run(0, 2), run(1, 2)
            if set(a) != set(b) or set(a) != set(one):
                raise MMAError(f"fold {cfg.fold} test views disagree on the clip set ({len(one)}/{len(a)}/{len(b)} clips)")
            two = {cid: (a[cid][1] + b[cid][1]) / 2.0 for cid in a}
    finally:
        model.train(was_training)
    if not one:
        raise MMAError(f"fold {cfg.fold} of {cfg.dataset}: the test split yielded no clips")
    expected = expected_test_clips(cfg, ws)
    missing = check_complete(set(one), expected, cfg, ws, allow_partial)
    ids = sorted(one)
    labels = [one[c][0] for c in ids]
    preds = [int(np.argmax(one[c][1])) for c in ids]
    m1 = classification_metrics(labels, preds, num_classes)
    result: dict[str, Any] = {
        "uar": m1["uar"], "war": m1["war"], "per_class_recall": m1["per_class_recall"], "confusion": m1["confusion"],
        "uar_2clip": None, "war_2clip": None, "per_class_recall_2clip": None, "confusion_2clip": None,
        "clips": len(ids), "seconds": time.perf_counter() - start,
        "clips_expected": len(expected), "clips_evaluated": len(ids), "clips_missing": missing,
        "partial": bool(missing),
    }
    preds2: list[int | None] = [None] * len(ids)
    if two is not None:
        preds2 = [int(np.argmax(two[c])) for c in ids]
        m2 = classification_metrics(labels, preds2, num_classes)
        result.update(uar_2clip=m2["uar"], war_2clip=m2["war"], per_class_recall_2clip=m2["per_class_recall"],
                      confusion_2clip=m2["confusion"])
    result["predictions"] = [
        {"clip_id": c, "label": y, "pred": p, "pred_2clip": p2, "logits": one[c][1].tolist(),
         "logits_2clip": two[c].tolist() if two is not None else None}
        for c, y, p, p2 in zip(ids, labels, preds, preds2)
    ]
    return result


# --------------------------------------------------------------------------- outputs


def _predictions_csv(predictions: list[dict[str, Any]], classes: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    n = len(classes)
    w.writerow(["clip_id", "label", "label_name", "pred", "pred_name", "pred_2clip", "pred_2clip_name",
                *[f"logit_{c}" for c in classes]])
    for p in predictions:
        p2 = p["pred_2clip"]
        w.writerow([p["clip_id"], p["label"], classes[p["label"]] if 0 <= p["label"] < n else "",
                    p["pred"], classes[p["pred"]], "" if p2 is None else p2, "" if p2 is None else classes[p2],
                    *[f"{v:.6g}" for v in p["logits"]]])
    return buf.getvalue()


def _confusion_csv(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true\\pred", *classes])
    for name, row in zip(classes, cm):
        w.writerow([name, *row])
    return buf.getvalue()


def named_recall(recall: Sequence[float | None] | None, classes: Sequence[str]) -> dict[str, float | None] | None:
    """{class name: recall %} from a per-class list."""
    return None if recall is None else dict(zip(classes, recall))


def write_eval_outputs(out_dir: str | Path, result: dict[str, Any], classes: Sequence[str], title: str = "") -> None:
    """predictions.csv, confusion.csv (+ confusion_2clip.csv) and confusion.png into out_dir."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "predictions.csv", _predictions_csv(result["predictions"], classes))
    atomic_write_text(out_dir / "confusion.csv", _confusion_csv(result["confusion"], classes))
    if result.get("confusion_2clip") is not None:
        atomic_write_text(out_dir / "confusion_2clip.csv", _confusion_csv(result["confusion_2clip"], classes))
    label = f"{title}  " if title else ""
    plot_confusion(result["confusion"], classes, out_dir / "confusion.png",
                   title=f"{label}UAR {result['uar']:.1f}  WAR {result['war']:.1f}")


def summary_fields(result: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """The result.json / eval.json view of an evaluation: metrics with per-class recall by name."""
    return {
        "uar": result["uar"],
        "war": result["war"],
        "uar_2clip": result["uar_2clip"],
        "war_2clip": result["war_2clip"],
        "per_class_recall": named_recall(result["per_class_recall"], classes),
        "per_class_recall_2clip": named_recall(result["per_class_recall_2clip"], classes),
        "num_classes": len(classes),
        "classes": list(classes),
        "clips": result["clips"],
        "confusion": result["confusion"],
        "confusion_2clip": result["confusion_2clip"],
        "clips_expected": result["clips_expected"],
        "clips_evaluated": result["clips_evaluated"],
        "clips_missing": list(result["clips_missing"]),
        "partial": result["partial"],
    }


# --------------------------------------------------------------------------- checkpoints


def use_authors_inputs(cfg: RunConfig) -> RunConfig:
    """Set data.compat="authors" (what the authors' checkpoints were trained on) and say so; in place.

    Choices the user set explicitly (e.g. data.frame_order) are kept.
    """
    cfg.data.compat = "authors"
    d = cfg.data.resolved(cfg.dataset)
    log.info("authors' checkpoint: using the authors' inputs (data.compat=authors: frame_order=%s, faces=%s, "
             "face_select=%s, audio_rate=%s, precision %s)", d.frame_order, d.faces, d.face_select, d.audio_rate,
             "fp32" if cfg.train.precision == "auto" else cfg.train.precision)
    return cfg


def warn_if_prep_differs(cfg: RunConfig, ws: Workspace) -> list[str]:
    """Prep choices of cfg.dataset's prep_config.json that differ from cfg's resolved data choices (logged)."""
    path = ws.prep_dir(cfg.dataset) / "prep_config.json"
    saved = (read_json_or(path, None) or {}).get("settings") or {}
    want = cfg.data.resolved(cfg.dataset)
    diffs = [f"{k}={saved[k]!r} (wanted {getattr(want, k)!r})" for k in ("faces", "face_select", "audio_rate")
             if k in saved and saved[k] != getattr(want, k)]
    if diffs:
        log.warning("%s: the clips were prepped with %s; data.compat=%s expects otherwise (rerun mma prep to match)",
                    path, ", ".join(diffs), cfg.data.compat)
    return diffs


def load_model_for_eval(cfg: RunConfig, checkpoint: str | Path, *, official: bool = False) -> tuple[torch.nn.Module,
                                                                                                    RunConfig,
                                                                                                    dict[str, Any]]:
    """Build the network a checkpoint describes and load it; returns (model, run config, info).

    Our checkpoints carry their config: its model and data sections replace the caller's
    (dataset, fold, source, precision and workers stay the caller's). Authors' checkpoints
    are read with `model.load_official_checkpoint` using the caller's model config, and the
    returned config uses the authors' inputs (`use_authors_inputs`).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise MMAError(f"{path}: checkpoint file not found")
    if official:
        net = mdl.load_official_checkpoint(path, cfg.model)
        cfg = use_authors_inputs(copy.deepcopy(cfg))
        return net, cfg, {"checkpoint": str(path), "official": True, "sha256": sha256_file(path),
                          "compat": "authors"}

    ck = load_model_checkpoint(path, map_location="cpu")  # MMAError unless an mma checkpoint
    stored = upgrade_saved_config(ck["config"])
    saved = saved_run_config(stored)
    run_cfg = from_dict({"model": stored["model"], "data": stored["data"]}, base=copy.deepcopy(cfg))
    run_cfg.data.num_workers = cfg.data.num_workers
    if cfg.model.num_classes != run_cfg.model.num_classes:
        raise MMAError(f"{path}: checkpoint has {run_cfg.model.num_classes} classes, {cfg.dataset} has "
                       f"{cfg.model.num_classes}")
    # Frozen encoders without a checkpoint are random: rebuild them exactly as the trainer did,
    # so a demo/test checkpoint evaluates as trained.
    net = build_seeded_model(run_cfg.model, saved.train.seed)
    if ck.get("full_state"):
        missing, unexpected = net.load_state_dict(ck["model"], strict=False)
        if missing or unexpected:
            raise MMAError(f"{path}: full state does not match the model ({len(missing)} missing, "
                           f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[0]})")
    else:
        vision = cfg.vision_ckpt or _encoder_path(ck, "vision")
        audio = cfg.audio_ckpt or _encoder_path(ck, "audio")
        _check_encoder_hash(ck, "vision", vision)
        _check_encoder_hash(ck, "audio", audio)
        if vision or audio:
            mdl.load_encoder_checkpoints(net, vision, audio)
        mdl.load_trainable_state_dict(net, ck["model"])
    info = {"checkpoint": str(path), "official": False, "trained_fold": saved.fold, "trained_dataset": saved.dataset,
            "epoch": ck.get("epoch")}
    return net, run_cfg, info


def _encoder_path(ck: dict[str, Any], which: str) -> str | None:
    entry = (ck.get("encoders") or {}).get(which) or {}
    return entry.get("path")


def _check_encoder_hash(ck: dict[str, Any], which: str, path: str | None) -> None:
    entry = (ck.get("encoders") or {}).get(which) or {}
    if path is None:
        return
    if not Path(path).is_file():
        raise MMAError(f"{path}: {which} encoder checkpoint not found (pass --{which}-ckpt)")
    want = entry.get("sha256")
    if want and sha256_file(path) != want:
        log.warning("%s: sha256 differs from the %s encoder the checkpoint was trained with", path, which)


def default_eval_dir(ws: Workspace, cfg: RunConfig, checkpoint: str | Path) -> Path:
    """<workdir>/<ds>/runs/eval/<label>/fold<k>; label = file stem, or <run>_<fold dir> (<run>_seed<s>_<fold dir>
    for a run of the seeded layout) for a run's last.pt."""
    path = Path(checkpoint).resolve()
    label = path.stem
    if path.stem == "last":
        seeded = re.fullmatch(r"seed\d+", path.parent.parent.name) is not None
        parts = (path.parents[2].name, path.parent.parent.name) if seeded else (path.parent.parent.name,)
        label = "_".join((*parts, path.parent.name))
    return ws.runs_dir(cfg.dataset) / "eval" / label / f"fold{cfg.fold}"


def fold_checkpoint(cfg: RunConfig, ws: Workspace) -> Path:
    """The fold's own trained checkpoint (last.pt of cfg.name's run of cfg.fold with seed train.seed); one-line
    error if absent."""
    checkpoint = ws.run_dir(cfg.dataset, cfg.name, cfg.fold, cfg.train.seed) / "last.pt"
    if not checkpoint.is_file():
        raise MMAError(f"{checkpoint}: no checkpoint for fold {cfg.fold}; train it with "
                       f"`mma train {cfg.dataset} --fold {cfg.fold}` or pass --checkpoint")
    return checkpoint


def evaluate_checkpoint(cfg: RunConfig, ws: Workspace, checkpoint: str | Path | None = None, *,
                        official: bool = False, out_dir: str | Path | None = None,
                        allow_partial: bool = False) -> FoldResult:
    """Evaluate a checkpoint (default: the fold's own run, `fold_checkpoint`) on fold cfg.fold; writes
    eval.json, predictions, confusion into out_dir (default `default_eval_dir`).
    """
    if checkpoint is None:
        checkpoint = fold_checkpoint(cfg, ws)
    check_trained_checkpoint(checkpoint, official=official)
    cfg = resolve_encoder_checkpoints(cfg, ws, fill=False)  # the checkpoint names its own encoders
    classes = label_set(cfg.dataset, ws)
    apply_label_set(cfg, classes)
    info = init_distributed()
    try:
        net, run_cfg, ck_info = load_model_for_eval(cfg, checkpoint, official=official)
        if official:
            warn_if_prep_differs(run_cfg, ws)
        if run_cfg.train.source == "cache":
            check_cache_matches(run_cfg, ws)
        net.to(info.device)
        result = evaluate_model(net, run_cfg, ws, info=info, two_clip=True, allow_partial=allow_partial)
        out = Path(out_dir) if out_dir is not None else default_eval_dir(ws, cfg, checkpoint)
        summary = {**summary_fields(result, classes), "fold": cfg.fold, "dataset": cfg.dataset, **ck_info,
                   "out_dir": str(out), "source": run_cfg.train.source,
                   "cache_views": run_cfg.data.cache_views if run_cfg.train.source == "cache" else None,
                   "provenance": run_provenance(run_cfg, ws, net, info.device)}
        if info.is_main:
            write_eval_outputs(out, result, classes, title=f"{cfg.dataset} fold {cfg.fold}")
            atomic_write_json(out / "eval.json", summary)
            log.info("eval %s fold %d: UAR %.2f WAR %.2f | 2-clip UAR %.2f WAR %.2f (%d clips) -> %s", cfg.dataset,
                     cfg.fold, result["uar"], result["war"], result["uar_2clip"], result["war_2clip"],
                     result["clips"], out)
        return FoldResult.from_record(summary, out)
    finally:
        shutdown(info)
