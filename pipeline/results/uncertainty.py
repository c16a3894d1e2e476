"""How sure a number is: bootstrap intervals of UAR/WAR over the test clips of saved predictions, the paired
bootstrap of two rows on the same resampled clips (and seeds), and the spread over folds and seeds.

The unit of a table is a run: one (seed, fold) with its `predictions.csv` (one line per test clip).
A replicate resamples each fold's test clips with replacement and recomputes every run's UAR and
WAR on them; a table's number (the mean over folds, then over seeds) is recomputed per replicate,
and its 95% interval is the 2.5th-97.5th percentile of the replicates.

Every fold's resamples come from a generator seeded with (`BOOTSTRAP_SEED`, fold, number of clips):
two runs tested on the same clips of a fold get the same resamples. That makes the comparison of
two rows paired (the difference is recomputed on the same resampled clips for both) and the
numbers of a report reproducible. A replicate's metrics come from one matrix product for all runs
of a fold at once: resample counts (B x n) @ per-class indicator columns (n x C per run) give each
replicate's per-class support and hits, so nothing loops over clips or resamples in Python.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import MMAError

BOOTSTRAP_SEED = 0  # fixed: the same predictions always give the same intervals
DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
# Metric name suffix -> predictions.csv column: "" = 1 clip ("uar", "war"), "_2clip" = mean of two clips.
VARIANTS = (("", "pred"), ("_2clip", "pred_2clip"))
_CHUNK = 1000  # replicates per resample-count matrix (bounds memory at CHUNK x clips floats)
_TOLERANCE = 1e-6  # predictions.csv and result.json must give the same metric (in %) to this precision

Unit = tuple[int, int]  # (seed, fold)


def unit_name(unit: Unit) -> str:
    """`fold3 (seed 2)`."""
    return f"fold{unit[1]} (seed {unit[0]})"


@dataclass(frozen=True)
class Predictions:
    """One run's predictions on its fold's test clips (predictions.csv), sorted by clip id as written."""

    path: Path
    clip_ids: tuple[str, ...]
    labels: np.ndarray
    preds: np.ndarray
    preds_2clip: np.ndarray | None
    num_classes: int

    @property
    def clips_digest(self) -> str:
        """sha256 of the clip ids and their labels: equal for two runs tested on the same clips."""
        h = hashlib.sha256("\n".join(self.clip_ids).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()

    def variants(self) -> list[tuple[str, np.ndarray]]:
        """(metric suffix, predicted class per clip) for the 1-clip and, when written, 2-clip predictions."""
        out = [("", self.preds)]
        if self.preds_2clip is not None:
            out.append(("_2clip", self.preds_2clip))
        return out


def read_predictions(path: str | Path) -> Predictions:
    """A run's predictions.csv (columns clip_id, label, pred, optionally pred_2clip and logit_<class>);
    MMAError naming the file and the line for anything else."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MMAError(f"{path}: unreadable ({exc})") from None
    if not header:
        raise MMAError(f"{path}: empty (no header line)")
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("clip_id", "label", "pred") if c not in col]
    if missing:
        raise MMAError(f"{path}: no column {', '.join(missing)} (header: {','.join(header)})")
    if not rows:
        raise MMAError(f"{path}: no clips")
    two = col.get("pred_2clip")
    has_two = two is not None and all(len(r) > two and r[two] != "" for r in rows)
    try:
        ids = tuple(r[col["clip_id"]] for r in rows)
        labels = np.array([int(r[col["label"]]) for r in rows], dtype=np.int64)
        preds = np.array([int(r[col["pred"]]) for r in rows], dtype=np.int64)
        preds2 = np.array([int(r[two]) for r in rows], dtype=np.int64) if has_two and two is not None else None
    except (ValueError, IndexError):
        line = next(i for i, r in enumerate(rows, start=2) if not _row_ok(r, col, two if has_two else None))
        raise MMAError(f"{path}: line {line}: clip_id, label and pred must be given, label and pred as "
                       "integers") from None
    logits = sum(name.startswith("logit_") for name in header)
    highest = int(max(labels.max(), preds.max(), preds2.max() if preds2 is not None else 0))
    num_classes = logits or highest + 1
    if min(labels.min(), preds.min(), preds2.min() if preds2 is not None else 0) < 0 or highest >= num_classes:
        raise MMAError(f"{path}: class ids must be in 0..{num_classes - 1} ({logits} logit columns)")
    if len(set(ids)) != len(ids):
        raise MMAError(f"{path}: a clip id appears more than once")
    return Predictions(path, ids, labels, preds, preds2, num_classes)


def _row_ok(row: Sequence[str], col: Mapping[str, int], two: int | None) -> bool:
    try:
        row[col["clip_id"]]
        int(row[col["label"]])
        int(row[col["pred"]])
        if two is not None:
            int(row[two])
    except (ValueError, IndexError):
        return False
    return True


# --------------------------------------------------------------------------- replicates of one fold


def _metrics(counts: np.ndarray, design: np.ndarray, classes: int, slots: int, clips: int) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """UAR and WAR in % (each slots x replicates) from resample counts (replicates x clips)."""
    totals = counts @ design
    support = totals[:, :classes]
    hits = totals[:, classes:].reshape(len(counts), slots, classes)
    present = support > 0
    recall = hits / np.where(present, support, 1.0)[:, None, :]
    uar = 100.0 * recall.sum(axis=2) / present.sum(axis=1, keepdims=True)
    war = 100.0 * hits.sum(axis=2) / clips
    return uar.T, war.T


def resample_counts(fold: int, clips: int, resamples: int, rng_seed: int = BOOTSTRAP_SEED) -> Iterable[np.ndarray]:
    """Chunks (at most 1000 replicates x `clips`) of how often each clip is drawn in each replicate (every
    row sums to `clips`); the same (rng_seed, fold, clips) always gives the same draws."""
    rng = np.random.default_rng([rng_seed, int(fold), int(clips)])
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        draws = rng.integers(0, clips, size=(size, clips)) + (np.arange(size) * clips)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * clips).reshape(size, clips).astype(np.float64)


def fold_replicates(runs: Sequence[Predictions], fold: int, resamples: int,
                    rng_seed: int = BOOTSTRAP_SEED) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]]]:
    """Per run of one fold (all tested on the same clips with the same labels): metric -> (resamples,) values
    on resampled clips, and metric -> the value on the clips as tested."""
    first = runs[0]
    if any(r.clips_digest != first.clips_digest for r in runs[1:]):
        raise ValueError("fold_replicates: the runs were tested on different clips")
    clips, classes = len(first.labels), max(r.num_classes for r in runs)
    indicator = np.zeros((clips, classes))
    indicator[np.arange(clips), first.labels] = 1.0
    blocks, slots = [indicator], []
    for i, run in enumerate(runs):
        for suffix, preds in run.variants():
            blocks.append(indicator * (preds == first.labels)[:, None])
            slots.append((i, suffix))
    design = np.concatenate(blocks, axis=1)
    uar = np.empty((len(slots), resamples))
    war = np.empty((len(slots), resamples))
    start = 0
    for counts in resample_counts(fold, clips, resamples, rng_seed):
        u, w = _metrics(counts, design, classes, len(slots), clips)
        uar[:, start:start + len(counts)], war[:, start:start + len(counts)] = u, w
        start += len(counts)
    obs_u, obs_w = _metrics(np.ones((1, clips)), design, classes, len(slots), clips)
    values: list[dict[str, np.ndarray]] = [{} for _ in runs]
    observed: list[dict[str, float]] = [{} for _ in runs]
    for j, (i, suffix) in enumerate(slots):
        values[i].update({f"uar{suffix}": uar[j], f"war{suffix}": war[j]})
        observed[i].update({f"uar{suffix}": float(obs_u[j, 0]), f"war{suffix}": float(obs_w[j, 0])})
    return values, observed


# --------------------------------------------------------------------------- replicates of a table row


@dataclass(frozen=True)
class Replicates:
    """The bootstrap of one row (or one 5-fold report): per (seed, fold) unit, metric -> (resamples,) values,
    the value on the clips as tested, and (count, digest) of the clips the unit was tested on."""

    resamples: int
    values: dict[Unit, dict[str, np.ndarray]]
    observed: dict[Unit, dict[str, float]]
    clips: dict[Unit, tuple[int, str]]

    @property
    def units(self) -> list[Unit]:
        return sorted(self.values)

    @property
    def metrics(self) -> list[str]:
        """The metrics every unit has (the 2-clip ones only when every run wrote 2-clip predictions)."""
        names = [f"{m}{suffix}" for suffix, _ in VARIANTS for m in ("uar", "war")]
        return [m for m in names if all(m in v for v in self.values.values())]

    def _folds_by_seed(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for seed, fold in self.units:
            out.setdefault(seed, []).append(fold)
        return out

    def per_seed(self, metric: str, source: str = "values") -> np.ndarray:
        """(resamples, seeds) of the mean over each seed's folds (`source="observed"`: (1, seeds))."""
        table = self.values if source == "values" else {u: {m: np.array([v]) for m, v in o.items()}
                                                         for u, o in self.observed.items()}
        return np.stack([np.mean([table[(s, k)][metric] for k in folds], axis=0)
                         for s, folds in self._folds_by_seed().items()], axis=1)

    def estimate(self, metric: str) -> np.ndarray:
        """(resamples,): the table's number per replicate (mean over folds, then over seeds)."""
        return self.per_seed(metric).mean(axis=1)


def bootstrap_runs(predictions: Mapping[Unit, Predictions], resamples: int = DEFAULT_RESAMPLES,
                   rng_seed: int = BOOTSTRAP_SEED) -> Replicates:
    """Replicates of every (seed, fold) run; runs of a fold tested on the same clips share their resamples."""
    groups: dict[tuple[int, str], list[Unit]] = {}
    for unit, pred in predictions.items():
        groups.setdefault((unit[1], pred.clips_digest), []).append(unit)
    values: dict[Unit, dict[str, np.ndarray]] = {}
    observed: dict[Unit, dict[str, float]] = {}
    for (fold, _), units in groups.items():
        vals, obs = fold_replicates([predictions[u] for u in units], fold, resamples, rng_seed)
        for unit, v, o in zip(units, vals, obs):
            values[unit], observed[unit] = v, o
    clips = {u: (len(p.labels), p.clips_digest) for u, p in predictions.items()}
    return Replicates(resamples, values, observed, clips)


def load_replicates(run_dirs: Mapping[Unit, Path], resamples: int = DEFAULT_RESAMPLES,
                    rng_seed: int = BOOTSTRAP_SEED) -> Replicates | str:
    """`bootstrap_runs` of the predictions.csv in each unit's run folder, or why it cannot be done (the runs
    without predictions.csv). A malformed predictions.csv is an MMAError naming it."""
    absent = [unit_name(u) for u, d in sorted(run_dirs.items()) if not (d / "predictions.csv").is_file()]
    if absent:
        return f"no predictions.csv for {', '.join(absent)}"
    return bootstrap_runs({u: read_predictions(d / "predictions.csv") for u, d in run_dirs.items()}, resamples,
                          rng_seed)


def observed_mismatch(replicates: Replicates, results: Mapping[Unit, Mapping[str, object]]) -> str | None:
    """Why the predictions do not back the reported numbers: a unit whose predictions.csv gives another
    UAR/WAR than its result.json (None when every metric both give agrees)."""
    for unit in replicates.units:
        for metric, value in replicates.observed[unit].items():
            reported = results[unit].get(metric)
            if isinstance(reported, (int, float)) and abs(float(reported) - value) > _TOLERANCE:
                return (f"{unit_name(unit)}: predictions.csv gives {metric} {value:.2f}, result.json "
                        f"{float(reported):.2f}")
    return None


# --------------------------------------------------------------------------- intervals, comparisons, spread


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap replicates (percentile method)."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def confidence_intervals(replicates: Replicates, level: float = LEVEL) -> dict[str, list[float]]:
    """metric -> [low, high]: the interval of the table's number over resampled test clips."""
    return {m: list(percentile_interval(replicates.estimate(m), level)) for m in replicates.metrics}


def _fmt_units(units: Iterable[Unit]) -> str:
    by_seed: dict[int, list[int]] = {}
    for seed, fold in sorted(units):
        by_seed.setdefault(seed, []).append(fold)
    if not by_seed:
        return "none"
    return "; ".join(f"seed {s}: folds {','.join(map(str, ks))}" for s, ks in by_seed.items())


def unit_mismatch(row_units: Iterable[Unit], ref_units: Iterable[Unit]) -> str | None:
    """Why a row cannot be compared with the reference on the same runs: different seeds, or different folds
    within a seed (None when both have the same (seed, fold) runs)."""
    row, ref = set(row_units), set(ref_units)
    if row == ref:
        return None
    if not ref:
        return "the reference row has no finished runs"
    if not row:
        return "no finished runs"
    row_seeds, ref_seeds = sorted({s for s, _ in row}), sorted({s for s, _ in ref})
    if row_seeds != ref_seeds:
        return (f"seeds differ (this row: {','.join(map(str, row_seeds))}; reference: "
                f"{','.join(map(str, ref_seeds))})")
    return f"folds differ (this row: {_fmt_units(row)}; reference: {_fmt_units(ref)})"


def clip_mismatch(row: Replicates, ref: Replicates) -> str | None:
    """Why two rows' runs were not tested on the same clips (None when every unit's clips and labels agree)."""
    for unit in row.units:
        (n_row, d_row), (n_ref, d_ref) = row.clips[unit], ref.clips[unit]
        if d_row != d_ref:
            detail = f"{n_row} vs {n_ref} clips" if n_row != n_ref else "same count, other clips or labels"
            return f"test clips differ on {unit_name(unit)} ({detail})"
    return None


def paired_difference(row: Replicates, ref: Replicates, level: float = LEVEL,
                      rng_seed: int = BOOTSTRAP_SEED) -> dict[str, dict[str, float | bool]]:
    """metric -> {diff, low, high, excludes_zero}: row minus reference (mean over folds, then seeds), its
    interval from replicates that resample the same clips for both rows and, with several seeds, the seeds
    (the same seed numbers for both). Both must have the same units on the same clips (`unit_mismatch`,
    `clip_mismatch`); ValueError otherwise."""
    reason = unit_mismatch(row.units, ref.units) or clip_mismatch(row, ref)
    if reason:
        raise ValueError(f"paired_difference: {reason}")
    seeds = len({s for s, _ in row.units})
    rng = np.random.default_rng([rng_seed, 0, seeds])
    pick = rng.integers(0, seeds, size=(row.resamples, seeds))
    out: dict[str, dict[str, float | bool]] = {}
    for metric in (m for m in row.metrics if m in ref.metrics):
        per_seed = row.per_seed(metric) - ref.per_seed(metric)
        boot = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
        diff = float((row.per_seed(metric, "observed") - ref.per_seed(metric, "observed")).mean())
        low, high = percentile_interval(boot, level)
        out[metric] = {"diff": diff, "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0)}
    return out


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std None for fewer than two values, both None for none."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _value(result: Mapping[str, object], metric: str) -> float | None:
    value = result.get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def table_spread(results: Mapping[Unit, Mapping[str, object]], metrics: Sequence[str]) -> dict[str, object]:
    """How a row of finished runs spreads, per metric (None where a run lacks it):

    `mean`: the mean over each seed's folds, then over the seeds; `std_folds`: the sample standard deviation
    over folds of each fold's mean over the seeds (None for one fold); `seed_means`: {seed: mean over its
    folds}; `seed_spread`: {mean, std, n} over the seeds' means (None with one seed); `seeds`: how many."""
    seeds = sorted({s for s, _ in results})
    folds = sorted({k for _, k in results})
    mean: dict[str, float | None] = {}
    std_folds: dict[str, float | None] = {}
    seed_means: dict[int, dict[str, float | None]] = {s: {} for s in seeds}
    seed_spread: dict[str, dict[str, float | int | None]] | None = {} if len(seeds) > 1 else None
    for m in metrics:
        values = {u: _value(r, m) for u, r in results.items()}
        if not values or any(v is None for v in values.values()):
            mean[m] = std_folds[m] = None
            for s in seeds:
                seed_means[s][m] = None
            if seed_spread is not None:
                seed_spread[m] = {"mean": None, "std": None, "n": len(seeds)}
            continue
        per_seed = {s: mean_std([v for (s2, _), v in values.items() if s2 == s])[0] for s in seeds}
        for s in seeds:
            seed_means[s][m] = per_seed[s]
        mean[m], spread_seeds = mean_std([v for v in per_seed.values() if v is not None])
        per_fold = [mean_std([v for (_, k2), v in values.items() if k2 == k])[0] for k in folds]
        std_folds[m] = mean_std([v for v in per_fold if v is not None])[1]
        if seed_spread is not None:
            seed_spread[m] = {"mean": mean[m], "std": spread_seeds, "n": len(seeds)}
    return {"mean": mean, "std_folds": std_folds, "seed_means": seed_means, "seed_spread": seed_spread,
            "seeds": len(seeds)}


def row_intervals(results: Mapping[Unit, Mapping[str, object]], run_dirs: Mapping[Unit, Path],
                  resamples: int = DEFAULT_RESAMPLES, level: float = LEVEL,
                  rng_seed: int = BOOTSTRAP_SEED) -> tuple[Replicates | None, dict[str, list[float]] | None, str]:
    """(replicates, metric -> [low, high], note) of a row of finished runs; the replicates and intervals are
    None, and the note says why, when a run has no predictions.csv, when its predictions do not give the
    numbers its result.json reports, or when `resamples` is 0."""
    if resamples <= 0:
        return None, None, "no bootstrap (--bootstrap 0)"
    if not run_dirs:
        return None, None, "no finished runs"
    replicates = load_replicates(run_dirs, resamples, rng_seed)
    if isinstance(replicates, str):
        return None, None, replicates
    mismatch = observed_mismatch(replicates, results)
    if mismatch:
        return None, None, mismatch
    return replicates, confidence_intervals(replicates, level), ""
