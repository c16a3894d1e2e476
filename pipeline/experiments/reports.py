"""A sweep's table: the experiment's rows (paper order), mean over folds and seeds with its spread and 95%
bootstrap interval, the paper's numbers alongside, each row's paired difference from the reference row,
missing folds flagged, rows never run for want of their weights marked skipped (with the command that
adds them); written as report.md, report.csv, report.json and report.png.

A row is compared with the reference (the paper's final model, or `against`) only on the same
(seed, fold) runs tested on the same clips: the difference of the means, and its interval from
replicates that resample the same clips for both rows and, with several seeds, the seeds
(`pipeline.results.uncertainty.paired_difference`). Otherwise the table says why it is not compared.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping

from pipeline.core.errors import MMAError
from pipeline.core.io import atomic_write_json, atomic_write_text
from pipeline.core.paths import Workspace
from pipeline.core.plots import plot_ours_vs_paper
from pipeline.core.seeds import DEFAULT_SEED, run_folders
from pipeline.experiments.presets import SkippedRow, get_experiment, missing_weights, run_name, sweep_id
from pipeline.experiments.state import entry_seed, job_status, read_state, sweep_dir
from pipeline.results.report import (
    METRICS,
    check_bootstrap,
    fmt_interval,
    fmt_seed_spread,
    fold_status,
    run_conflicts,
)
from pipeline.results.uncertainty import (
    BOOTSTRAP_SEED,
    DEFAULT_RESAMPLES,
    LEVEL,
    Replicates,
    Unit,
    clip_mismatch,
    paired_difference,
    row_intervals,
    table_spread,
    unit_mismatch,
)

log = logging.getLogger(__name__)

MARK = "†"  # the 95% interval of a difference excludes 0


def sweep_report(ws: Workspace, dataset: str, experiment_name: str, *, preset_name: str = "paper",
                 state: Mapping[str, Any] | None = None, allow_partial: bool = False,
                 mixed: bool = False, bootstrap: int = DEFAULT_RESAMPLES, against: str | None = None) -> dict[str, Any]:
    """The experiment's table (paper row order): mean over folds and seeds, its spread and bootstrap interval,
    paper numbers alongside, each row's difference from the reference row (`against`, default the paper's
    final model), missing folds flagged. Writes report.md, report.csv, report.json and report.png into the
    sweep folder.

    A fold evaluated on part of its test clips counts as missing unless `allow_partial`; a row whose
    runs differ in data or model provenance (the training source included) gets no mean unless
    `mixed`, and says which field differs."""
    bootstrap = check_bootstrap(bootstrap)
    experiment = get_experiment(experiment_name, dataset)
    keys = [r.key for r in experiment.rows]
    reference = against or experiment.reference
    if reference not in keys:
        raise MMAError(f"--against {reference}: not a row of {experiment.name}; rows: {', '.join(keys)}")
    sid = sweep_id(experiment.name, preset_name)
    directory = sweep_dir(ws, dataset, sid)
    state = dict(state) if state is not None else read_state(directory)
    recorded = state.get("jobs", {})

    tried: dict[str, set[Unit]] = {}
    for row in experiment.rows:
        name = run_name(experiment.name, row.key, preset_name)
        units = {(entry_seed(e), int(e["fold"])) for e in recorded.values() if e.get("run_name") == name}
        units |= {(s, k) for s, folds in run_folders(ws.runs_dir(dataset) / name).items() for k in folds}
        tried[row.key] = units
    seeds = sorted(set(state.get("seeds") or []) | {s for units in tried.values() for s, _ in units}) or [DEFAULT_SEED]
    several = len(seeds) > 1

    rows, replicates = [], {}
    for row in experiment.rows:
        name = run_name(experiment.name, row.key, preset_name)
        units = sorted(tried[row.key] | {(s, k) for s in seeds for k in experiment.default_folds})
        per_unit: dict[Unit, dict[str, Any]] = {}
        dirs: dict[Unit, Path] = {}
        missing = []
        for unit in units:
            s, k = unit
            run_dir = ws.run_dir(dataset, name, k, s)
            where = f"seed{s} fold{k}" if several else f"fold{k}"
            st = fold_status(run_dir)
            if st["status"] == "ok" and st["result"].get("partial") and not allow_partial:
                missing.append(f"{where} partial ({len(st['result'].get('clips_missing') or [])} test clips missing)")
            elif st["status"] == "ok":
                per_unit[unit], dirs[unit] = st["result"], run_dir
            else:
                missing.append(f"{where} " + ("not run" if unit not in tried[row.key] else
                                              _job_word(recorded, name, unit, st["status"])))
        conflicts = run_conflicts(per_unit, dirs) if len(per_unit) > 1 else []
        averaged = bool(per_unit) and not (conflicts and not mixed)
        spread = table_spread(per_unit, METRICS) if averaged else None
        rep, ci, ci_note = row_intervals(per_unit, dirs, bootstrap) if averaged else (None, None, "no mean")
        replicates[row.key] = rep
        sources = sorted({str(r.get("source") or (r.get("provenance") or {}).get("source") or "-")
                          for r in per_unit.values()})
        folds_of = sorted({k for _, k in units})
        absent = missing_weights(row, ws.weights) if not tried[row.key] else ()
        rows.append({
            "row": row.key, "label": row.label, "run_name": name, "folds": folds_of, "ran": bool(tried[row.key]),
            "skipped": SkippedRow(row.key, row.label, absent).text() if absent else None,
            "folds_ok": sorted({k for _, k in per_unit}), "missing": missing,
            "mean": spread["mean"] if spread else {m: None for m in METRICS}, "paper": dict(row.paper),
            "source": "+".join(sources) if per_unit else "-", "provenance_conflicts": conflicts,
            "mixed_refused": bool(conflicts and not mixed),
            "per_fold": {k: (table_spread({u: r for u, r in per_unit.items() if u[1] == k}, METRICS)["mean"])
                         for k in sorted({k for _, k in per_unit})},
            "seeds": sorted({s for s, _ in units}), "seeds_ok": sorted({s for s, _ in per_unit}),
            "units_ok": [list(u) for u in sorted(per_unit)],
            "per_seed": {s: {k: {m: r.get(m) for m in METRICS} for (s2, k), r in sorted(per_unit.items()) if s2 == s}
                         for s in sorted({s for s, _ in per_unit})},
            "std_folds": spread["std_folds"] if spread else {m: None for m in METRICS},
            "seed_spread": spread["seed_spread"] if spread else None,
            "ci": ci, "ci_note": ci_note,
        })
    by_key = {r["row"]: r for r in rows}
    for r in rows:
        r["comparison"] = _compare(r, by_key[reference], replicates[r["row"]], replicates[reference])
    ref_row = by_key[reference]
    report = {"experiment": experiment.name, "table": experiment.table, "title": experiment.title,
              "dataset": dataset, "preset": preset_name, "sweep": sid, "paper_source": experiment.paper_source,
              "extra_columns": [list(c) for c in experiment.extra_columns], "rows": rows,
              "complete": all(r["ran"] and not r["missing"] and not r["mixed_refused"] for r in rows),
              "refused": [f"{r['label']}: {c}; pass --mixed to average anyway" for r in rows if r["mixed_refused"]
                          for c in r["provenance_conflicts"]],
              "seeds": seeds, "reference": reference, "reference_label": ref_row["label"],
              "bootstrap": {"resamples": bootstrap, "rng_seed": BOOTSTRAP_SEED, "level": LEVEL,
                            "over": "test clips, resampled within each fold; seeds, for differences"}}
    report["markdown"] = _report_markdown(report)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "report.md", report["markdown"])
    atomic_write_text(directory / "report.csv", _report_csv(report))
    atomic_write_json(directory / "report.json", {k: v for k, v in report.items() if k != "markdown"})
    plot_ours_vs_paper(report, directory / "report.png")
    report["files"] = [str(directory / n) for n in ("report.md", "report.csv", "report.json", "report.png")]
    incomplete = [f"{r['label']}: {', '.join(r['missing'])}" for r in rows if r["ran"] and r["missing"]]
    if incomplete:
        log.warning("sweep %s: some folds are missing: %s", sid, "; ".join(incomplete))
    return report


def _compare(row: Mapping[str, Any], ref: Mapping[str, Any], rep: Replicates | None,
             ref_rep: Replicates | None) -> dict[str, Any]:
    """The row's comparison with the reference row: {against, reference: true} for the reference itself,
    {against, <metric>: {diff, low, high, excludes_zero}} when it can be compared, else {against, not_compared}."""
    out: dict[str, Any] = {"against": ref["row"]}
    if row["row"] == ref["row"]:
        return {**out, "reference": True}
    units = [tuple(u) for u in row["units_ok"]] if not row["mixed_refused"] else []
    ref_units = [tuple(u) for u in ref["units_ok"]] if not ref["mixed_refused"] else []
    reason = unit_mismatch(units, ref_units)
    if reason is None and rep is None:
        reason = f"no interval for this row ({row['ci_note']})"
    elif reason is None and ref_rep is None:
        reason = f"no interval for the reference row ({ref['ci_note']})"
    elif reason is None and rep is not None and ref_rep is not None:
        reason = clip_mismatch(rep, ref_rep) or ""
        if not reason:
            return {**out, **paired_difference(rep, ref_rep)}
    return {**out, "not_compared": reason}


def _job_word(recorded: Mapping[str, Any], name: str, unit: Unit, run_status: str) -> str:
    """What an unfinished run's job is doing: "failed (job ID)", "queued", "running", else the run's status."""
    seed, fold = unit
    for entry in recorded.values():
        if (entry.get("run_name") == name and int(entry.get("fold", 0)) == fold and entry_seed(entry) == seed
                and entry.get("job_id")):
            state, _ = job_status(entry, entry.get("executor", "local"))
            if state == "failed":
                return f"failed (job {entry['job_id']}; `mma sweep status` has its log)"
            if state in ("queued", "running"):
                return state
    return run_status


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def fmt_difference(comparison: Mapping[str, Any], metric: str) -> str:
    """`+1.00 [+0.40, +1.60] †`, `reference`, or `not compared`."""
    if comparison.get("reference"):
        return "reference"
    cell = comparison.get(metric)
    if not cell:
        return "not compared"
    mark = f" {MARK}" if cell["excludes_zero"] else ""
    return f"{_signed(cell['diff'])} [{_signed(cell['low'])}, {_signed(cell['high'])}]{mark}"


def _status(r: Mapping[str, Any], reference_label: str) -> str:
    if r.get("skipped"):
        return r["skipped"]
    status = "not run" if not r["ran"] else ("ok" if not r["missing"] else "MISSING: " + ", ".join(r["missing"]))
    if r["mixed_refused"]:
        status = "MIXED (not averaged): " + "; ".join(r["provenance_conflicts"])
    if r["folds_ok"] and not r["ci"] and not r["mixed_refused"]:
        status += f"; no interval: {r['ci_note']}"
    if r["ran"] and r["comparison"].get("not_compared"):
        status += f"; not compared with {reference_label}: {r['comparison']['not_compared']}"
    return status


def _report_markdown(report: Mapping[str, Any]) -> str:
    extra = report["extra_columns"]
    seeds = report["seeds"]
    head = ["", "folds", "seeds", "source", "UAR", "WAR", "UAR*", "WAR*", "sd UAR", "sd WAR", "seeds UAR",
            "seeds WAR", "95% CI UAR", "95% CI WAR", "paper UAR", "paper WAR", "ΔUAR", "ΔWAR", "vs ref UAR",
            "vs ref WAR"]
    head += [h for h, _ in extra] + ["status"]
    boot = report["bootstrap"]
    lines = [f"# {report['table']}: {report['title']} ({report['dataset']}, {report['preset']} preset)", "",
             f"Ours: mean over the folds that finished, then over seeds ({len(seeds)} seed"
             f"{'s' if len(seeds) > 1 else ''}: {', '.join(map(str, seeds))}); UAR/WAR in %, * = 2-clip. "
             f"Paper: {report['paper_source']}. Δ = ours - paper.",
             "sd = standard deviation over folds; seeds = mean ± sd over seeds; 95% CI = bootstrap over the test "
             f"clips ({boot['resamples']} resamples within each fold, RNG seed {boot['rng_seed']}).",
             f"vs ref = this row - {report['reference_label']} on the same folds, seeds and test clips: mean "
             f"difference [95% paired bootstrap interval over clips and seeds]; {MARK} = the interval excludes 0.",
             "",
             "| " + " | ".join(head) + " |", "|---|---|---|---|" + "---:|" * (len(head) - 5) + "---|"]
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        delta = [m[k] - p[k] if m[k] is not None and k in p else None for k in ("uar", "war")]
        ci = r["ci"] or {}
        seeds_cell = f"{len(r['seeds_ok'])}/{len(r['seeds'])}"
        cells = [r["label"], f"{len(r['folds_ok'])}/{len(r['folds'])}", seeds_cell, r["source"],
                 *[_fmt(m[k]) for k in ("uar", "war", "uar_2clip", "war_2clip")],
                 _fmt(r["std_folds"]["uar"]), _fmt(r["std_folds"]["war"]),
                 *[fmt_seed_spread(r["seed_spread"], k, len(r["seeds_ok"])) if r["folds_ok"] else "-"
                   for k in ("uar", "war")],
                 fmt_interval(ci.get("uar")), fmt_interval(ci.get("war")),
                 _fmt(p.get("uar")), _fmt(p.get("war")),
                 *[("+" if d is not None and d >= 0 else "") + _fmt(d) for d in delta],
                 *[fmt_difference(r["comparison"], k) if r["ran"] else "-" for k in ("uar", "war")],
                 *[_fmt(p.get(key)) for _, key in extra], _status(r, report["reference_label"])]
        lines.append("| " + " | ".join(cells) + " |")
    if not report["complete"]:
        lines += ["", "Rows marked MISSING average only the folds that finished; `not run` rows were never submitted."]
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.4f}"


def _report_csv(report: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = [key for _, key in report["extra_columns"]]
    spread_cols = [f"{kind}_{m}" for m in ("uar", "war") for kind in ("std_folds", "seeds_mean", "seeds_std")]
    ci_cols = [f"ci_{m}_{end}" for m in ("uar", "war") for end in ("low", "high")]
    diff_cols = [f"diff_{m}{part}" for m in ("uar", "war") for part in ("", "_low", "_high", "_excludes_zero")]
    w.writerow(["row", "label", "folds", "folds_ok", "source", "uar", "war", "uar_2clip", "war_2clip", "paper_uar",
                "paper_war", *[f"paper_{k}" for k in extra], "missing", "seeds", "seeds_ok", *spread_cols, *ci_cols,
                "against", *diff_cols, "not_compared"])
    for r in report["rows"]:
        m, p = r["mean"], r["paper"]
        spread = r["seed_spread"] or {}
        spread_vals = [_num(r["std_folds"][k]) if kind == "std_folds" else
                       _num((spread.get(k) or {}).get("mean" if kind == "seeds_mean" else "std"))
                       for k in ("uar", "war") for kind in ("std_folds", "seeds_mean", "seeds_std")]
        ci = r["ci"] or {}
        ci_vals = [_num((ci.get(k) or [None, None])[i]) for k in ("uar", "war") for i in (0, 1)]
        comp = r["comparison"]
        diff_vals = []
        for k in ("uar", "war"):
            cell = comp.get(k) or {}
            diff_vals += [_num(cell.get("diff")), _num(cell.get("low")), _num(cell.get("high")),
                          "" if not cell else str(cell["excludes_zero"]).lower()]
        w.writerow([r["row"], r["label"], " ".join(map(str, r["folds"])), " ".join(map(str, r["folds_ok"])),
                    r["source"],
                    *[_num(m[k]) for k in ("uar", "war", "uar_2clip", "war_2clip")],
                    p.get("uar", ""), p.get("war", ""), *[p.get(k, "") for k in extra],
                    "; ".join(r["missing"] + [f"mixed: {c}" for c in r["provenance_conflicts"] if r["mixed_refused"]]),
                    " ".join(map(str, r["seeds"])), " ".join(map(str, r["seeds_ok"])), *spread_vals, *ci_vals,
                    "reference" if comp.get("reference") else comp["against"], *diff_vals,
                    comp.get("not_compared", "")])
    return buf.getvalue()
