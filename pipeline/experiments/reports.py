"""A sweep's table: the experiment's rows (paper order), mean over folds, the paper's numbers
alongside, missing folds flagged, rows never run for want of their weights marked skipped (with the
command that adds them); written as report.md, report.csv, report.json and report.png."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any, Mapping

from pipeline.core.folds import FOLDS
from pipeline.core.io import atomic_write_json, atomic_write_text
from pipeline.core.paths import Workspace
from pipeline.core.plots import plot_ours_vs_paper
from pipeline.engine.provenance import provenance_conflicts
from pipeline.experiments.presets import SkippedRow, get_experiment, missing_weights, run_name, sweep_id
from pipeline.experiments.state import job_status, read_state, sweep_dir
from pipeline.results.report import METRICS, fold_status

log = logging.getLogger(__name__)


def sweep_report(ws: Workspace, dataset: str, experiment_name: str, *, preset_name: str = "paper",
                 state: Mapping[str, Any] | None = None, allow_partial: bool = False,
                 mixed: bool = False) -> dict[str, Any]:
    """The experiment's table (paper row order): mean over folds, paper numbers alongside, missing folds
    flagged. Writes report.md, report.csv and report.png into the sweep folder.

    A fold evaluated on part of its test clips counts as missing unless `allow_partial`; a row whose
    folds differ in data or model provenance (the training source included) gets no mean unless
    `mixed`, and says which field differs."""
    experiment = get_experiment(experiment_name, dataset)
    sid = sweep_id(experiment.name, preset_name)
    directory = sweep_dir(ws, dataset, sid)
    state = dict(state) if state is not None else read_state(directory)
    recorded = state.get("jobs", {})
    rows = []
    for row in experiment.rows:
        name = run_name(experiment.name, row.key, preset_name)
        tried = {int(e["fold"]) for e in recorded.values() if e.get("run_name") == name}
        tried |= {k for k in FOLDS if ws.run_dir(dataset, name, k).is_dir()}
        folds = sorted(tried | set(experiment.default_folds))
        per_fold, missing = {}, []
        for k in folds:
            st = fold_status(ws.run_dir(dataset, name, k))
            if st["status"] == "ok" and st["result"].get("partial") and not allow_partial:
                missing.append(f"fold{k} partial ({len(st['result'].get('clips_missing') or [])} test clips missing)")
            elif st["status"] == "ok":
                per_fold[k] = st["result"]
            else:
                missing.append(f"fold{k} " + ("not run" if k not in tried else _job_word(recorded, name, k, st["status"])))
        conflicts = provenance_conflicts(per_fold) if len(per_fold) > 1 else []
        averaged = per_fold and not (conflicts and not mixed)
        mean = {m: (sum(float(r[m]) for r in per_fold.values()) / len(per_fold)
                    if averaged and all(isinstance(r.get(m), (int, float)) for r in per_fold.values()) else None)
                for m in METRICS}
        sources = sorted({str(r.get("source") or (r.get("provenance") or {}).get("source") or "-")
                          for r in per_fold.values()})
        absent = missing_weights(row, ws.weights) if not tried else ()
        skipped = SkippedRow(row.key, row.label, absent).text() if absent else None
        rows.append({"row": row.key, "label": row.label, "run_name": name, "folds": folds, "ran": bool(tried),
                     "skipped": skipped,
                     "folds_ok": sorted(per_fold), "missing": missing, "mean": mean, "paper": dict(row.paper),
                     "source": "+".join(sources) if per_fold else "-", "provenance_conflicts": conflicts,
                     "mixed_refused": bool(conflicts and not mixed),
                     "per_fold": {k: {m: r.get(m) for m in METRICS} for k, r in per_fold.items()}})
    report = {"experiment": experiment.name, "table": experiment.table, "title": experiment.title,
              "dataset": dataset, "preset": preset_name, "sweep": sid, "paper_source": experiment.paper_source,
              "extra_columns": [list(c) for c in experiment.extra_columns], "rows": rows,
              "complete": all(r["ran"] and not r["missing"] and not r["mixed_refused"] for r in rows),
              "refused": [f"{r['label']}: {c}; pass --mixed to average anyway" for r in rows if r["mixed_refused"]
                          for c in r["provenance_conflicts"]]}
    report["markdown"] = _report_markdown(report)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "report.md", report["markdown"])
    atomic_write_text(directory / "report.csv", _report_csv(report))
    atomic_write_json(directory / "report.json", {k: v for k, v in report.items() if k != "markdown"})
    plot_ours_vs_paper(report, directory / "report.png")
    report["files"] = [str(directory / n) for n in ("report.md", "report.csv", "report.png")]
    incomplete = [f"{r['label']}: {', '.join(r['missing'])}" for r in rows if r["ran"] and r["missing"]]
    if incomplete:
        log.warning("sweep %s: some folds are missing: %s", sid, "; ".join(incomplete))
    return report


def _job_word(recorded: Mapping[str, Any], name: str, fold: int, run_status: str) -> str:
    """What an unfinished fold's job is doing: "failed (job ID)", "queued", "running", else the run's status."""
    for entry in recorded.values():
        if entry.get("run_name") == name and int(entry.get("fold", 0)) == fold and entry.get("job_id"):
            state, _ = job_status(entry, entry.get("executor", "local"))
            if state == "failed":
                return f"failed (job {entry['job_id']}; `mma sweep status` has its log)"
            if state in ("queued", "running"):
                return state
    return run_status


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _report_markdown(report: Mapping[str, Any]) -> str:
    extra = report["extra_columns"]
    head = ["", "folds", "source", "UAR", "WAR", "UAR*", "WAR*", "paper UAR", "paper WAR", "ΔUAR", "ΔWAR"]
    head += [h for h, _ in extra] + ["status"]
    lines = [f"# {report['table']}: {report['title']} ({report['dataset']}, {report['preset']} preset)", "",
             f"Ours: mean over the folds that finished (UAR/WAR in %, * = 2-clip). Paper: {report['paper_source']}.",
             "Δ = ours - paper.", "",
             "| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 4) + "---|"]
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        delta = [m[k] - p[k] if m[k] is not None and k in p else None for k in ("uar", "war")]
        status = "not run" if not r["ran"] else ("ok" if not r["missing"] else "MISSING: " + ", ".join(r["missing"]))
        if r.get("skipped"):
            status = r["skipped"]
        if r["mixed_refused"]:
            status = "MIXED (not averaged): " + "; ".join(r["provenance_conflicts"])
        cells = [r["label"], f"{len(r['folds_ok'])}/{len(r['folds'])}", r["source"], *[_fmt(m[k]) for k in
                 ("uar", "war", "uar_2clip", "war_2clip")], _fmt(p.get("uar")), _fmt(p.get("war")),
                 *[("+" if d is not None and d >= 0 else "") + _fmt(d) for d in delta],
                 *[_fmt(p.get(key)) for _, key in extra], status]
        lines.append("| " + " | ".join(cells) + " |")
    if not report["complete"]:
        lines += ["", "Rows marked MISSING average only the folds that finished; `not run` rows were never submitted."]
    return "\n".join(lines) + "\n"


def _report_csv(report: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = [key for _, key in report["extra_columns"]]
    w.writerow(["row", "label", "folds", "folds_ok", "source", "uar", "war", "uar_2clip", "war_2clip", "paper_uar",
                "paper_war", *[f"paper_{k}" for k in extra], "missing"])
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        w.writerow([r["row"], r["label"], " ".join(map(str, r["folds"])), " ".join(map(str, r["folds_ok"])),
                    r["source"],
                    *["" if m[k] is None else f"{m[k]:.4f}" for k in ("uar", "war", "uar_2clip", "war_2clip")],
                    p.get("uar", ""), p.get("war", ""), *[p.get(k, "") for k in extra],
                    "; ".join(r["missing"] + [f"mixed: {c}" for c in r["provenance_conflicts"] if r["mixed_refused"]])])
    return buf.getvalue()
