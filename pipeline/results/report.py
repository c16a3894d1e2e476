"""The 5-fold table in the paper's layout (Table 1): per fold and mean UAR/WAR, 1-clip and 2-clip, with how
sure each number is.

`make_report` reads `fold{1..5}/result.json` under a runs folder (every `seed<s>/` of it, and the
layout before seeds, `fold<k>/` directly in it), writes `report.md`, `report.csv` and
`report.json` there, and returns the table. A fold that is missing or has not finished is flagged
and the mean is marked incomplete (left empty) rather than averaged over fewer folds. Beside the
5-fold mean: the standard deviation over folds, the mean ± std over seeds of the 5-fold mean ("1
seed" when there is one), and a 95% bootstrap interval over the test clips of every fold's
`predictions.csv` (`pipeline.results.uncertainty`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.core.config import load_run_config
from pipeline.core.errors import ConfigError, MMAError
from pipeline.core.folds import FOLDS, NUM_FOLDS
from pipeline.core.io import atomic_write_json, atomic_write_text, read_jsonl
from pipeline.core.paths import Workspace
from pipeline.core.results import StageResult
from pipeline.core.seeds import DEFAULT_SEED, run_folders, seed_dir_name
from pipeline.data.paper import PAPER_TABLE1
from pipeline.engine.provenance import provenance_conflicts
from pipeline.engine.train import config_differences
from pipeline.results.uncertainty import (
    BOOTSTRAP_SEED,
    DEFAULT_RESAMPLES,
    LEVEL,
    Unit,
    row_intervals,
    table_spread,
)

log = logging.getLogger(__name__)

METRICS = ("uar", "war", "uar_2clip", "war_2clip")
HEADERS = {"uar": "UAR", "war": "WAR", "uar_2clip": "UAR*", "war_2clip": "WAR*"}

def _find_runs_dir(dataset: str, ws: Workspace) -> Path:
    """The runs folder holding fold dirs (or seed<s>/fold dirs): <workdir>/<ds>/runs itself or its only named run."""
    base = ws.runs_dir(dataset)
    if run_folders(base):
        return base
    candidates = sorted(p for p in base.glob("*") if p.is_dir() and run_folders(p))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MMAError(f"{base}: no run folders with fold1..fold{NUM_FOLDS} found; pass --runs DIR")
    names = ", ".join(p.name for p in candidates)
    raise MMAError(f"{base}: several runs ({names}); pass --runs {base}/<name>")


def fold_status(fold_dir: Path) -> dict[str, Any]:
    """{'status': ok|missing|unfinished|invalid, 'result': dict|None, 'note': str}."""
    if not fold_dir.is_dir():
        return {"status": "missing", "result": None, "note": "no run directory"}
    result_path = fold_dir / "result.json"
    if not result_path.exists():
        note = "no result.json"
        metrics = fold_dir / "metrics.jsonl"
        if metrics.exists():
            done = read_jsonl(metrics)
            if done:
                note = f"unfinished: {len(done)} epoch(s) logged"
        return {"status": "unfinished", "result": None, "note": note}
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"status": "invalid", "result": None, "note": f"{result_path}: unreadable ({exc})"}
    missing = [m for m in ("uar", "war") if not isinstance(result.get(m), (int, float))]
    if missing:
        return {"status": "invalid", "result": None, "note": f"{result_path}: lacks {', '.join(missing)}"}
    return {"status": "ok", "result": result, "note": ""}


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


@dataclass(frozen=True)
class ReportResult(StageResult):
    """The 5-fold table: `report` is report.json's content (mean, folds, flags, paper numbers), `markdown`
    report.md's. `errors` are the reasons a mean was withheld (partial folds, mixed provenance)."""

    report: dict[str, Any]
    markdown: str

    @property
    def complete(self) -> bool:
        return bool(self.report["complete"])

    @property
    def mean(self) -> dict[str, float | None]:
        return dict(self.report["mean"])

    def to_json(self) -> dict[str, Any]:
        return dict(self.report)

    def text(self) -> str:
        return self.markdown

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(self.report["refused"])


def check_bootstrap(resamples: int) -> int:
    """`--bootstrap N` as an int: 0 turns the intervals off; ConfigError for a negative N."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise ConfigError(f"--bootstrap {resamples!r}: the number of resamples must be an integer, 0 or more")
    return resamples


def unit_label(unit: Unit, several_seeds: bool) -> str:
    """`fold3` for a table of one seed, `fold3 (seed 2)` for one of several."""
    return f"fold{unit[1]}" + (f" (seed {unit[0]})" if several_seeds else "")


def run_conflicts(results: Mapping[Unit, Mapping[str, Any]], run_dirs: Mapping[Unit, Path]) -> list[str]:
    """Why a set of finished runs may not be averaged: within a seed, folds whose data or model provenance
    differ; across seeds, provenance other than the config hash, or saved configs that differ in more than
    the seed (and the fold). Empty when they agree."""
    seeds = sorted({s for s, _ in results})
    several = len(seeds) > 1
    lines: list[str] = []
    for s in seeds:
        folds = {k: r for (s2, k), r in results.items() if s2 == s}
        if len(folds) > 1:
            lines += [f"seed {s}: {c}" if several else c for c in provenance_conflicts(folds)]
    if several:
        first = {s: min(u for u in results if u[0] == s) for s in seeds}
        lines += provenance_conflicts({s: results[u] for s, u in first.items()}, label="seed",
                                      ignore=("config_sha256",))
        configs = {s: run_dirs[u] / "config.json" for s, u in first.items() if (run_dirs[u] / "config.json").is_file()}
        if len(configs) > 1:
            (s0, base), *others = sorted(configs.items())
            saved = load_run_config(base)
            for s, path in others:
                diffs = config_differences(saved, load_run_config(path), ignore=("train.seed", "fold"))
                if diffs:
                    lines.append(f"config of seed {s} differs from seed {s0} ({'; '.join(diffs[:3])})")
    return lines


def _fold_row(fold_dir: Path, unit: Unit, allow_partial: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A fold's row of the table and its result.json (None unless it finished)."""
    st = fold_status(fold_dir)
    seed, k = unit
    row: dict[str, Any] = {"fold": k, "seed": seed, "status": st["status"], "note": st["note"]}
    res = st["result"] or {}
    for m in METRICS:
        value = res.get(m)
        row[m] = float(value) if isinstance(value, (int, float)) else None
    row["epochs"] = res.get("epochs")
    row["source"] = res.get("source") or (res.get("provenance") or {}).get("source")
    row["clips_missing"] = len(res.get("clips_missing") or [])
    row["clips"] = res.get("clips_evaluated", res.get("clips"))
    if st["status"] == "ok" and res.get("partial"):
        row["note"] = f"partial: {row['clips_missing']} of {res.get('clips_expected')} test clips missing"
        if not allow_partial:
            row["status"] = "partial"
    row["image_size"] = (res.get("config") or {}).get("model", {}).get("image_size", res.get("image_size"))
    return row, st["result"] if row["status"] == "ok" else None


def make_report(dataset: str, ws: Workspace, *, runs_dir: str | Path | None = None, allow_partial: bool = False,
                mixed: bool = False, bootstrap: int = DEFAULT_RESAMPLES) -> ReportResult:
    """Gather the folds of every seed, write report.md / report.csv / report.json into the runs folder,
    return the table.

    The mean needs all 5 folds of every seed finished. A fold evaluated on part of its test clips
    (`partial`) is left out of it unless `allow_partial`; folds whose data or model provenance
    differ (or that were trained from different sources), and seeds whose runs differ in more than
    the seed, are not averaged unless `mixed`. `refused` lists why a mean was withheld for those two
    reasons (the CLI exits 1 then). `bootstrap` resamples of the test clips (0: none) give the 95%
    interval of each mean.
    """
    bootstrap = check_bootstrap(bootstrap)
    runs = Path(runs_dir) if runs_dir is not None else _find_runs_dir(dataset, ws)
    if not runs.is_dir():
        raise MMAError(f"{runs}: runs folder does not exist")
    layout = run_folders(runs)
    seeds = sorted(layout) or [DEFAULT_SEED]
    several = len(seeds) > 1
    folds: list[dict[str, Any]] = []
    results: dict[Unit, dict[str, Any]] = {}
    dirs: dict[Unit, Path] = {}
    for s in seeds:
        for k in FOLDS:
            fold_dir = layout.get(s, {}).get(k) or runs / seed_dir_name(s) / f"fold{k}"
            row, result = _fold_row(fold_dir, (s, k), allow_partial)
            folds.append(row)
            if result is not None:
                results[(s, k)], dirs[(s, k)] = result, fold_dir
    ok = [r for r in folds if r["status"] == "ok"]
    refused = [f"{unit_label((r['seed'], r['fold']), several)} is partial ({r['note']}); pass --allow-partial "
               "to average it" for r in folds if r["status"] == "partial"]
    conflicts = run_conflicts(results, dirs) if len(ok) > 1 else []
    if conflicts and not mixed:
        refused += [f"{c}; pass --mixed to average anyway" for c in conflicts]
    complete = len(ok) == NUM_FOLDS * len(seeds) and not (conflicts and not mixed)
    spread = table_spread(results, METRICS) if complete else None
    mean: dict[str, float | None] = {m: spread["mean"][m] if spread else None for m in METRICS}
    per_seed = []
    for s in seeds:
        mine = {u: r for u, r in results.items() if u[0] == s}
        own = table_spread(mine, METRICS) if len(mine) == NUM_FOLDS else None
        per_seed.append({"seed": s, "folds_ok": len(mine), "complete": own is not None,
                         "mean": own["mean"] if own else {m: None for m in METRICS},
                         "std_folds": own["std_folds"] if own else {m: None for m in METRICS}})
    ci, ci_note = None, "the mean is incomplete"
    if complete:
        _, ci, ci_note = row_intervals(results, dirs, bootstrap)
    flagged = [f"{unit_label((r['seed'], r['fold']), several)}: {r['status']}" + (f" ({r['note']})" if r["note"] else "")
               for r in folds if r["status"] != "ok"]
    sizes = {r["image_size"] for r in ok if r["image_size"]}
    image_size = sizes.pop() if len(sizes) == 1 else None
    paper = PAPER_TABLE1.get(dataset, {}).get(image_size) if image_size else None

    report = {
        "dataset": dataset,
        "runs_dir": str(runs),
        "complete": complete,
        "folds_ok": len(ok),
        "mean": mean,
        "folds": folds,
        "flagged": flagged,
        "image_size": image_size,
        "paper": dict(zip(METRICS, paper)) if paper else None,
        "refused": refused,
        "provenance_conflicts": conflicts,
        "sources": sorted({r["source"] for r in ok if r["source"]}),
        "seeds": seeds,
        "seed_note": f"{len(seeds)} seed" + ("s" if several else ""),
        "per_seed": per_seed,
        "std_folds": spread["std_folds"] if spread else {m: None for m in METRICS},
        "seed_spread": spread["seed_spread"] if spread else None,
        "ci": ci,
        "ci_note": ci_note,
        "bootstrap": {"resamples": bootstrap, "rng_seed": BOOTSTRAP_SEED, "level": LEVEL,
                      "over": "test clips, resampled within each fold"},
    }
    markdown = _markdown(report)
    atomic_write_text(runs / "report.md", markdown)
    atomic_write_text(runs / "report.csv", _csv(report))
    atomic_write_json(runs / "report.json", report)
    if not complete:
        log.warning("report for %s is incomplete (%d/%d folds): %s", dataset, len(ok), NUM_FOLDS * len(seeds),
                    "; ".join(flagged))
    return ReportResult(report, markdown)


def fmt_interval(interval: Sequence[float] | None) -> str:
    """`[43.10, 46.90]`, or `-` when there is none."""
    return "-" if not interval else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def fmt_seed_spread(spread: Mapping[str, Any] | None, metric: str, seeds: int) -> str:
    """`66.52 ± 0.31` (mean ± std over seeds), `1 seed` for a single seed, `-` when not available."""
    if spread is None:
        return "1 seed" if seeds == 1 else "-"
    cell = spread.get(metric) or {}
    if cell.get("mean") is None or cell.get("std") is None:
        return "-"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}"


def _markdown(report: dict[str, Any]) -> str:
    cols = [HEADERS[m] for m in METRICS]
    seeds = report["seeds"]
    several = len(seeds) > 1
    boot = report["bootstrap"]
    lines = [
        f"# {report['dataset']}: 5-fold results" + (f" (S={report['image_size']})" if report["image_size"] else ""),
        "",
        f"Runs: `{report['runs_dir']}`. UAR/WAR in %; * = mean of two uniformly sampled clips (2-clip). "
        f"{report['seed_note']}: {', '.join(map(str, seeds))}.",
        "sd = standard deviation over the 5 folds; seeds = mean ± sd over seeds of the 5-fold mean; "
        f"95% CI = bootstrap over the test clips ({boot['resamples']} resamples within each fold, "
        f"RNG seed {boot['rng_seed']}).",
        "",
        "| | " + " | ".join(cols) + " | source | status |",
        "|---|" + "---:|" * len(cols) + "---|---|",
    ]
    if report["complete"]:
        mixed = "; MIXED provenance" if report["provenance_conflicts"] else ""
        runs = f"{NUM_FOLDS}/{NUM_FOLDS} folds" + (f" x {len(seeds)} seeds" if several else "")
        lines.append("| **mean** | " + " | ".join(f"**{_fmt(report['mean'][m])}**" for m in METRICS)
                     + f" | | {runs}{mixed} |")
        lines.append("| sd over folds | " + " | ".join(_fmt(report["std_folds"][m]) for m in METRICS) + " | | |")
        lines.append("| seeds | " + " | ".join(fmt_seed_spread(report["seed_spread"], m, len(seeds)) for m in METRICS)
                     + " | | |")
        ci = report["ci"] or {}
        lines.append("| 95% CI | " + " | ".join(fmt_interval(ci.get(m)) for m in METRICS)
                     + f" | | {report['ci_note'] or 'test clips'} |")
    else:
        lines.append("| **mean** | " + " | ".join("incomplete" for _ in METRICS)
                     + f" | | INCOMPLETE: {report['folds_ok']}/{NUM_FOLDS * len(seeds)} folds |")
    if several:
        for entry in report["per_seed"]:
            status = "5/5 folds" if entry["complete"] else f"{entry['folds_ok']}/{NUM_FOLDS} folds"
            lines.append(f"| seed {entry['seed']} mean | " + " | ".join(_fmt(entry["mean"][m]) for m in METRICS)
                         + f" | | {status} |")
    for r in report["folds"]:
        status = r["status"] if not r["note"] else f"{r['status']}: {r['note']}"
        label = f"seed{r['seed']} fold{r['fold']}" if several else f"fold{r['fold']}"
        lines.append(f"| {label} | " + " | ".join(_fmt(r[m]) for m in METRICS)
                     + f" | {r.get('source') or '-'} | {status} |")
    if report["paper"]:
        lines.append("| paper (Table 1) | " + " | ".join(_fmt(report["paper"][m]) for m in METRICS)
                     + " | | published |")
    if report["flagged"]:
        lines += ["", f"Not averaged (the mean needs all {NUM_FOLDS} folds of every seed):", ""]
        lines += [f"- {f}" for f in report["flagged"]]
    if report["refused"] or report["provenance_conflicts"]:
        lines += ["", "Provenance and completeness:", ""]
        lines += [f"- {f}" for f in (report["refused"] or [f"{c} (averaged: --mixed)" for c in
                                                          report["provenance_conflicts"]])]
    return "\n".join(lines) + "\n"


def _num(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", *METRICS, "source", "status", "note", "seed"])
    seeds = " ".join(map(str, report["seeds"]))
    writer.writerow(["mean", *[_num(report["mean"][m]) for m in METRICS],
                     "+".join(report["sources"]), "complete" if report["complete"] else "incomplete",
                     f"{report['folds_ok']}/{NUM_FOLDS * len(report['seeds'])} folds", seeds])
    for r in report["folds"]:
        writer.writerow([f"fold{r['fold']}", *[_num(r[m]) for m in METRICS],
                         r.get("source") or "", r["status"], r["note"], r["seed"]])
    spread = report["seed_spread"] or {}
    ci = report["ci"] or {}
    writer.writerow(["sd_folds", *[_num(report["std_folds"][m]) for m in METRICS], "", "", "", seeds])
    writer.writerow(["seeds_mean", *[_num((spread.get(m) or {}).get("mean")) for m in METRICS], "", "",
                     report["seed_note"], seeds])
    writer.writerow(["seeds_std", *[_num((spread.get(m) or {}).get("std")) for m in METRICS], "", "",
                     report["seed_note"], seeds])
    boot = f"{report['bootstrap']['resamples']} resamples" + (f"; {report['ci_note']}" if report["ci_note"] else "")
    for i, name in enumerate(("ci_low", "ci_high")):
        writer.writerow([name, *[_num((ci.get(m) or [None, None])[i]) for m in METRICS], "", "", boot, seeds])
    for entry in report["per_seed"] if len(report["seeds"]) > 1 else []:
        writer.writerow([f"seed{entry['seed']}_mean", *[_num(entry["mean"][m]) for m in METRICS], "",
                         "complete" if entry["complete"] else "incomplete", f"{entry['folds_ok']}/{NUM_FOLDS} folds",
                         entry["seed"]])
    if report["paper"]:
        writer.writerow(["paper", *[f"{report['paper'][m]:.2f}" for m in METRICS], "", "published", "Table 1", ""])
    return buf.getvalue()
