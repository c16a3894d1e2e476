"""`mma demo`: the whole pipeline on a small synthetic dataset, with nothing to download.

synth -> prep -> shard -> cache -> train (tiny preset, from the cache) -> eval -> report, all
under the workdir (`<workdir>/data_manifests` for the manifests, `<workdir>/synth/...` for the
rest). Each step is the same stage function the matching `mma` command calls; each reuses what
a previous run finished (the stages are resumable), `force` redoes everything. Sized to take a
few minutes on 2 CPU cores and to score clearly above chance.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeline.core.config import RunConfig, tiny
from pipeline.core.errors import MMAError
from pipeline.core.folds import parse_folds
from pipeline.core.paths import Workspace
from pipeline.core.results import StageResult
from pipeline.data.synth import make_synth_dataset, read_synth_info
from pipeline.engine.evaluate import FoldResult, evaluate_checkpoint
from pipeline.engine.train import train_fold
from pipeline.prep.run import run_prep
from pipeline.results.report import make_report
from pipeline.store.cache import run_cache
from pipeline.store.shard import run_shard

log = logging.getLogger(__name__)

DATASET = "synth"
RUN_NAME = "demo"

# Default size: 4 classes x 16 clips of 2 s; fold 1 tests on 16 clips and trains on 48 (x2 views).
DEMO_CLASSES = 4
DEMO_CLIPS_PER_CLASS = 16
DEMO_SECONDS = 2.0
DEMO_CROP = 64


def demo_workspace(ws: Workspace) -> Workspace:
    """The demo's Workspace: the given workdir, with the manifests under it too."""
    return Workspace(Path(ws.workdir), Path(ws.workdir) / "data_manifests")


def demo_config(fold: int = 1, *, epochs: int | None = None) -> RunConfig:
    """The tiny preset on the synth data, trained from the patch-embedding cache (epochs: the preset's)."""
    cfg = tiny()
    cfg.dataset = DATASET
    cfg.name = RUN_NAME
    cfg.fold = fold
    cfg.data.crop_size = DEMO_CROP
    cfg.data.num_workers = 0
    cfg.train.source = "cache"
    if epochs is not None:
        cfg.train.epochs = epochs
    return cfg


def _synth_root(ws: Workspace) -> Path:
    return Path(ws.workdir) / DATASET / "raw"


def _step_synth(root: Path, *, classes: int, clips_per_class: int, seconds: float, force: bool) -> dict[str, Any]:
    info = read_synth_info(root) if root.exists() else None
    wanted = {"classes": classes, "clips_per_class": clips_per_class, "seconds": seconds}
    if info is not None and not force:
        have = {"classes": len(info["classes"]), "clips_per_class": info["clips_per_class"],
                "seconds": info["seconds"]}
        if have != wanted:
            raise MMAError(f"{root}: holds a demo dataset made with {have}, not {wanted}; pass --force to rebuild")
        return {"reused": True, "clips": info["clips"]}
    return make_synth_dataset(root, layout="mafw", clips_per_class=clips_per_class, seconds=seconds,
                              classes=classes, with_faults=True, seed=1, force=force).to_json()


@dataclass(frozen=True)
class DemoResult(StageResult):
    """`mma demo`: per fold the training run's and the separate evaluation's metrics, the plots, the
    report, and the seconds each step took."""

    folds: list[dict[str, Any]]  # {"fold", "train": result.json, "eval": eval.json, "run_dir"}
    plots: list[str]
    report: str
    steps: dict[str, float]
    chance: float
    workdir: str

    def text(self) -> str:
        return format_demo(self)


def run_demo(ws: Workspace, *, folds: str | Sequence[int] = (1,), force: bool = False,
             clips_per_class: int = DEMO_CLIPS_PER_CLASS, seconds: float = DEMO_SECONDS,
             classes: int = DEMO_CLASSES, epochs: int | None = None, workers: int = 2) -> DemoResult:
    """Run every stage on a synth dataset under ws.workdir (`folds`: "1,3" or [1, 3])."""
    fold_list = sorted(parse_folds(folds) or [])
    if not fold_list:
        raise MMAError(f"--folds {folds!r}: name at least one fold")
    dws = demo_workspace(ws)
    root = _synth_root(dws)
    base = demo_config(fold_list[0], epochs=epochs)
    steps: dict[str, float] = {}
    total = 7

    def step(i: int, name: str, what: str, fn: Callable[[], Any]) -> Any:
        log.info("demo [%d/%d] %s: %s", i, total, name, what)
        start = time.perf_counter()
        out = fn()
        steps[name] = round(time.perf_counter() - start, 1)
        return out

    step(1, "synth", f"{classes} classes x {clips_per_class} clips of {seconds:g} s -> {root}",
         lambda: _step_synth(root, classes=classes, clips_per_class=clips_per_class, seconds=seconds, force=force))
    prep = step(2, "prep", "face crops (MTCNN) + log-mel fbank per clip (Dask LocalCluster)",
                lambda: run_prep(DATASET, root, dws, base.data, workers=workers, cluster="local", force=force))
    if not prep.clips_ok:
        raise MMAError(f"{dws.prep_dir(DATASET)}: prep produced no usable clip (see failures.jsonl)")
    step(3, "shard", "WebDataset tar shards by test fold", lambda: run_shard(DATASET, dws, base.data, force=force))
    step(4, "cache", "frozen patch embeddings -> zarr",
         lambda: run_cache(base, dws, workers=workers, device=None, force=force))

    results = []
    for fold in fold_list:
        cfg = copy.deepcopy(base)
        cfg.fold = fold
        run_dir = dws.run_dir(DATASET, RUN_NAME, fold, cfg.train.seed)
        resume = not force and ((run_dir / "last.pt").exists() or (run_dir / "result.json").exists())
        result = step(5, f"train fold {fold}", f"tiny preset, {cfg.train.epochs} epochs from the cache -> {run_dir}",
                      lambda: train_fold(cfg, dws, run_dir=run_dir, resume=resume, force=force).record)
        eval_dir = run_dir / "eval"
        ev = step(6, f"eval fold {fold}", f"reload {run_dir / 'last.pt'} and evaluate (1- and 2-clip)",
                  lambda: _eval(evaluate_checkpoint, cfg, dws, run_dir / "last.pt", eval_dir, force))
        results.append({"fold": fold, "train": result, "eval": ev, "run_dir": str(run_dir)})
    runs_dir = dws.runs_dir(DATASET) / RUN_NAME
    step(7, "report", f"fold table -> {runs_dir / 'report.md'}", lambda: make_report(DATASET, dws, runs_dir=runs_dir))

    plots = []
    for r in results:
        run_dir = Path(r["run_dir"])
        plots += [str(p) for p in (run_dir / "curves.png", run_dir / "confusion.png") if p.exists()]
    return DemoResult(results, plots, str(runs_dir / "report.md"), steps, 100.0 / classes, str(dws.workdir))


def _eval(evaluate: Callable[..., FoldResult], cfg: RunConfig, ws: Workspace, checkpoint: Path, out_dir: Path,
          force: bool) -> dict[str, Any]:
    """`mma eval` of the run's checkpoint (eval.json's content), reused when eval.json is newer than it."""
    done = out_dir / "eval.json"
    if not force and done.exists() and done.stat().st_mtime >= checkpoint.stat().st_mtime:
        return json.loads(done.read_text())
    return evaluate(copy.deepcopy(cfg), ws, checkpoint, out_dir=out_dir).record


def _fmt(v: Any) -> str:
    return f"{v:6.2f}" if isinstance(v, (int, float)) else "     -"


def format_demo(out: DemoResult) -> str:
    """The closing table: UAR/WAR per fold (training run and the separate eval), chance, plots, timings."""
    lines = ["", "mma demo: tiny MMA-DFER on the synth dataset (UAR/WAR in %, * = 2-clip)", "",
             "fold  source |    UAR |    WAR |   UAR* |   WAR* | clips",
             "------------+--------+--------+--------+--------+------"]
    for r in out.folds:
        for source, res in (("train", r["train"]), ("eval", r["eval"])):
            lines.append(f"{r['fold']:>4}  {source:<6}| " + " | ".join(
                _fmt(res.get(k)) for k in ("uar", "war", "uar_2clip", "war_2clip")) + f" | {res.get('clips', '-')}")
    lines += [f"chance level: UAR {out.chance:.2f}", "", "plots:"]
    lines += [f"  {p}" for p in out.plots]
    trained = ",".join(str(r["fold"]) for r in out.folds)
    lines += [f"report: {out.report} (the 5-fold table; the demo trained fold(s) {trained}: "
              "`mma demo --folds 1,2,3,4,5` for all)", f"workdir: {out.workdir}", "",
              "seconds per step: " + ", ".join(f"{k} {v:g}" for k, v in out.steps.items())]
    return "\n".join(lines)
