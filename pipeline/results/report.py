"""The 5-fold table in the paper's layout (Table 1): per fold and mean UAR/WAR, 1-clip and 2-clip.

`make_report` reads `fold{1..5}/result.json` under a runs folder, writes `report.md` and
`report.csv` there, and returns the table. A fold that is missing or has not finished is
flagged and the mean is marked incomplete (left empty) rather than averaged over fewer folds.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import MMAError
from pipeline.core.folds import FOLDS, NUM_FOLDS
from pipeline.core.io import atomic_write_json, atomic_write_text, read_jsonl
from pipeline.core.paths import Workspace
from pipeline.core.results import StageResult
from pipeline.data.paper import PAPER_TABLE1
from pipeline.engine.provenance import provenance_conflicts

log = logging.getLogger(__name__)

METRICS = ("uar", "war", "uar_2clip", "war_2clip")
HEADERS = {"uar": "UAR", "war": "WAR", "uar_2clip": "UAR*", "war_2clip": "WAR*"}

def _find_runs_dir(dataset: str, ws: Workspace) -> Path:
    """The runs folder holding fold dirs: <workdir>/<ds>/runs itself or its only named run."""
    base = ws.runs_dir(dataset)
    if any((base / f"fold{k}").is_dir() for k in FOLDS):
        return base
    candidates = sorted(p for p in base.glob("*") if p.is_dir() and any((p / f"fold{k}").is_dir() for k in FOLDS))
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


def make_report(dataset: str, ws: Workspace, *, runs_dir: str | Path | None = None, allow_partial: bool = False,
                mixed: bool = False) -> ReportResult:
    """Gather the folds, write report.md / report.csv / report.json into the runs folder, return the table.

    The mean needs all 5 folds finished. A fold evaluated on part of its test clips (`partial`) is
    left out of it unless `allow_partial`; folds whose data or model provenance differ (or that
    were trained from different sources) are not averaged unless `mixed`. `refused` lists why a
    mean was withheld for those two reasons (the CLI exits 1 then).
    """
    runs = Path(runs_dir) if runs_dir is not None else _find_runs_dir(dataset, ws)
    if not runs.is_dir():
        raise MMAError(f"{runs}: runs folder does not exist")
    folds: list[dict[str, Any]] = []
    for k in FOLDS:
        st = fold_status(runs / f"fold{k}")
        row: dict[str, Any] = {"fold": k, "status": st["status"], "note": st["note"]}
        res = st["result"] or {}
        for m in METRICS:
            value = res.get(m)
            row[m] = float(value) if isinstance(value, (int, float)) else None
        row["epochs"] = res.get("epochs")
        row["source"] = res.get("source") or (res.get("provenance") or {}).get("source")
        row["clips_missing"] = len(res.get("clips_missing") or [])
        if st["status"] == "ok" and res.get("partial"):
            row["note"] = f"partial: {row['clips_missing']} of {res.get('clips_expected')} test clips missing"
            if not allow_partial:
                row["status"] = "partial"
        row["image_size"] = (res.get("config") or {}).get("model", {}).get("image_size", res.get("image_size"))
        folds.append(row)
    ok = [r for r in folds if r["status"] == "ok"]
    refused = [f"fold{r['fold']} is partial ({r['note']}); pass --allow-partial to average it"
               for r in folds if r["status"] == "partial"]
    results = {r["fold"]: fold_status(runs / f"fold{r['fold']}")["result"] for r in ok}
    conflicts = provenance_conflicts(results) if len(ok) > 1 else []
    if conflicts and not mixed:
        refused += [f"{c}; pass --mixed to average anyway" for c in conflicts]
    complete = len(ok) == NUM_FOLDS and not (conflicts and not mixed)
    mean: dict[str, float | None] = {}
    for m in METRICS:
        values = [r[m] for r in ok if r[m] is not None]
        mean[m] = sum(values) / len(values) if complete and len(values) == NUM_FOLDS else None
    flagged = [f"fold{r['fold']}: {r['status']}" + (f" ({r['note']})" if r["note"] else "") for r in folds
               if r["status"] != "ok"]
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
    }
    markdown = _markdown(report)
    atomic_write_text(runs / "report.md", markdown)
    atomic_write_text(runs / "report.csv", _csv(report))
    atomic_write_json(runs / "report.json", report)
    if not complete:
        log.warning("report for %s is incomplete (%d/%d folds): %s", dataset, len(ok), NUM_FOLDS, "; ".join(flagged))
    return ReportResult(report, markdown)


def _markdown(report: dict[str, Any]) -> str:
    cols = [HEADERS[m] for m in METRICS]
    lines = [
        f"# {report['dataset']}: 5-fold results" + (f" (S={report['image_size']})" if report["image_size"] else ""),
        "",
        f"Runs: `{report['runs_dir']}`. UAR/WAR in %; * = mean of two uniformly sampled clips (2-clip).",
        "",
        "| | " + " | ".join(cols) + " | source | status |",
        "|---|" + "---:|" * len(cols) + "---|---|",
    ]
    if report["complete"]:
        mixed = "; MIXED provenance" if report["provenance_conflicts"] else ""
        lines.append("| **mean** | " + " | ".join(f"**{_fmt(report['mean'][m])}**" for m in METRICS)
                     + f" | | 5/5 folds{mixed} |")
    else:
        lines.append("| **mean** | " + " | ".join("incomplete" for _ in METRICS)
                     + f" | | INCOMPLETE: {report['folds_ok']}/{NUM_FOLDS} folds |")
    for r in report["folds"]:
        status = r["status"] if not r["note"] else f"{r['status']}: {r['note']}"
        lines.append(f"| fold{r['fold']} | " + " | ".join(_fmt(r[m]) for m in METRICS)
                     + f" | {r.get('source') or '-'} | {status} |")
    if report["paper"]:
        lines.append("| paper (Table 1) | " + " | ".join(_fmt(report["paper"][m]) for m in METRICS)
                     + " | | published |")
    if report["flagged"]:
        lines += ["", "Not averaged (the mean needs all 5 folds):", ""]
        lines += [f"- {f}" for f in report["flagged"]]
    if report["refused"] or report["provenance_conflicts"]:
        lines += ["", "Provenance and completeness:", ""]
        lines += [f"- {f}" for f in (report["refused"] or [f"{c} (averaged: --mixed)" for c in
                                                          report["provenance_conflicts"]])]
    return "\n".join(lines) + "\n"


def _csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", *METRICS, "source", "status", "note"])
    writer.writerow(["mean", *["" if report["mean"][m] is None else f"{report['mean'][m]:.4f}" for m in METRICS],
                     "+".join(report["sources"]), "complete" if report["complete"] else "incomplete", f"{report['folds_ok']}/{NUM_FOLDS} folds"])
    for r in report["folds"]:
        writer.writerow([f"fold{r['fold']}", *["" if r[m] is None else f"{r[m]:.4f}" for m in METRICS],
                         r.get("source") or "", r["status"], r["note"]])
    if report["paper"]:
        writer.writerow(["paper", *[f"{report['paper'][m]:.2f}" for m in METRICS], "", "published", "Table 1"])
    return buf.getvalue()
