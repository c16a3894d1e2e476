"""The paper's experiments (Tables 1-7) as named presets that expand into concrete training jobs.

An `Experiment` is a list of rows, each row a set of config overrides (the ablation knobs of
`model/config.py`) with the paper's published numbers for that row attached. `expand` puts the
rows on top of a base RunConfig (the `paper` or `tiny` preset plus the user's file/overrides)
for the requested folds and seeds and returns one `Job` per (row, fold, seed): the run name, the
resolved and validated config, and the run directory `mma train` would use. `mma sweep` submits
the jobs; `mma sweep report` lays the results out as the paper's table and compares every row with
the experiment's reference row (the paper's final model).

Tables 2-7 are the authors' ablations on fold 1 of DFEW at 160 px; their numbers are shown
for every dataset (labelled "paper (DFEW fold 1)"). Table 1 is the 5-fold mean per image size
of DFEW or MAFW (MAFW's numbers for `mafw`, DFEW's otherwise).

`encoders` is not a paper table: the same adaptation on other frozen encoder pairs (the paper's
number is for its own pair only). Its rows name their weights (`vision_ckpt` / `audio_ckpt` set
to names from `mma weights list`); `bind_weights` turns those into the files in the weights
folder and sets aside the rows whose files are not there, with the command that would add them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from model.config import TOKENS_PER_INTRODUCTION
from pipeline.core.config import RunConfig, apply_overrides
from pipeline.core.errors import MMAError
from pipeline.core.folds import FOLDS
from pipeline.core.paths import Workspace
from pipeline.core.seeds import DEFAULT_SEED
from pipeline.data.paper import PAPER_TABLE1
from pipeline.weights.registry import WEIGHTS, fetch_command
from pipeline.weights.store import find

# The full model (the last row of Tables 2-7 on DFEW fold 1, 160 px).
_FULL_DFEW_F1 = {"uar": 66.52, "war": 77.92}


@dataclass(frozen=True)
class Row:
    """One row of a paper table: its label there, a short key, the overrides, the paper's numbers."""

    key: str
    label: str
    overrides: dict[str, Any]
    paper: dict[str, float]


@dataclass(frozen=True)
class Experiment:
    """A paper table reproduced as a sweep: rows x folds (x seeds). `reference` is the key of the row the
    others are compared with (the paper's final model)."""

    name: str
    table: str
    title: str
    rows: tuple[Row, ...]
    default_folds: tuple[int, ...]
    paper_source: str
    # extra row columns shown in the report: (heading, Row.paper key)
    extra_columns: tuple[tuple[str, str], ...] = ()
    # the knobs the rows change (listed by `mma sweep --list`)
    knobs: tuple[str, ...] = field(default=())
    reference: str = ""


@dataclass
class Job:
    """One training run of a sweep: a row of an experiment on one fold with one seed."""

    experiment: str
    row: str
    label: str
    fold: int
    run_name: str
    config: RunConfig
    run_dir: Path
    overrides: dict[str, Any]
    seed: int = DEFAULT_SEED

    @property
    def key(self) -> str:
        """Stable identifier inside a sweep: `<run name>/seed<s>/fold<k>`."""
        return f"{self.run_name}/seed{self.seed}/fold{self.fold}"


# --------------------------------------------------------------------------- the paper's tables


def table1(dataset: str = "dfew") -> Experiment:
    """Table 1 (MMA rows): 5 folds at S = 112, 160, 224; paper numbers of MAFW for mafw, else DFEW."""
    source = "mafw" if dataset == "mafw" else "dfew"
    rows = []
    for size in (112, 160, 224):
        uar, war, uar2, war2 = PAPER_TABLE1[source][size]
        rows.append(Row(f"s{size}", f"MMA (ours).{size}", {"model.image_size": size},
                        {"uar": uar, "war": war, "uar_2clip": uar2, "war_2clip": war2}))
    return Experiment("table1", "Table 1", "Comparison to SOTA: MMA-DFER at three image sizes", tuple(rows),
                      FOLDS, f"{source.upper()}, 5-fold mean",
                      extra_columns=(("paper UAR*", "uar_2clip"), ("paper WAR*", "war_2clip")),
                      knobs=("model.image_size",), reference="s160")


def temporal(dataset: str = "dfew") -> Experiment:
    """Table 2: intermediate temporal adaptors (ITA, d = 64/128/256) vs the MTT vs both."""
    rows = (
        Row("ita64", "ITA, d=64", {"model.temporal": "ita", "model.ita_dim": 64},
            {"uar": 63.27, "war": 76.59, "params_m": 1.3}),
        Row("ita128", "ITA, d=128", {"model.temporal": "ita", "model.ita_dim": 128},
            {"uar": 64.44, "war": 76.80, "params_m": 0.8}),
        Row("ita256", "ITA, d=256", {"model.temporal": "ita", "model.ita_dim": 256},
            {"uar": 63.35, "war": 76.59, "params_m": 4.3}),
        Row("mtt-ita128", "MTM + ITA-128", {"model.temporal": "both", "model.ita_dim": 128},
            {"uar": 64.66, "war": 77.36, "params_m": 2.9}),
        Row("mtt", "MTM (ours)", {"model.temporal": "mtt"}, {**_FULL_DFEW_F1, "params_m": 2.2}),
    )
    return Experiment("temporal", "Table 2", "Multimodal Temporal Transformer vs intermediate temporal blocks",
                      rows, (1,), "DFEW fold 1", extra_columns=(("paper params (M)", "params_m"),),
                      knobs=("model.temporal", "model.ita_dim"), reference="mtt")


def fusion(dataset: str = "dfew") -> Experiment:
    """Table 3: modality fusion approaches."""
    rows = (
        Row("none", "None", {"model.fusion": "none"}, {"uar": 59.27, "war": 70.56}),
        Row("mult", "MULT", {"model.fusion": "mult"}, {"uar": 59.89, "war": 71.12}),
        Row("mult-concat", "MULT-concat", {"model.fusion": "mult-concat"}, {"uar": 54.96, "war": 65.66}),
        Row("add", "ADD", {"model.fusion": "add"}, {"uar": 59.97, "war": 71.20}),
        Row("bottleneck", "Fusion Bottleneck (ours)", {"model.fusion": "bottleneck"}, dict(_FULL_DFEW_F1)),
    )
    return Experiment("fusion", "Table 3", "Comparison of modality fusion approaches", rows, (1,), "DFEW fold 1",
                      knobs=("model.fusion",), reference="bottleneck")


def _components_row(pr: bool, prpr: bool, mtt: bool, fb: bool, uar: float, war: float) -> Row:
    prompts = "progressive" if prpr else ("static" if pr else "none")
    mark = "".join("+" if on else "-" for on in (pr, prpr, mtt, fb))
    label = " ".join(f"{name}{'+' if on else '-'}" for name, on in
                     (("Pr", pr), ("Pr.Pr.", prpr), ("MTT", mtt), ("FB", fb)))
    key = "pr{}-prpr{}-mtt{}-fb{}".format(*("1" if c == "+" else "0" for c in mark))
    return Row(key, label, {"model.prompts": prompts, "model.temporal": "mtt" if mtt else "none",
                            "model.fusion": "bottleneck" if fb else "none"}, {"uar": uar, "war": war})


def components(dataset: str = "dfew") -> Experiment:
    """Table 4: prompts (Pr), progressive prompts (Pr.Pr.), MTT and Fusion Bottleneck (FB) on/off."""
    rows = (
        _components_row(False, False, False, False, 56.59, 68.43),
        _components_row(True, False, False, False, 57.45, 69.33),
        _components_row(True, True, False, False, 58.21, 69.34),
        _components_row(True, True, True, False, 59.27, 70.56),
        _components_row(True, True, False, True, 61.96, 74.58),
        _components_row(False, False, True, True, 64.62, 77.40),
        _components_row(True, True, True, True, 66.52, 77.92),
    )
    return Experiment("components", "Table 4", "Ablation of each component", rows, (1,), "DFEW fold 1",
                      knobs=("model.prompts", "model.temporal", "model.fusion"), reference="pr1-prpr1-mtt1-fb1")


def modality(dataset: str = "dfew") -> Experiment:
    """Table 5: each modality alone (frozen branch + classifier) vs both."""
    alone = {"model.prompts": "none", "model.fusion": "none", "model.temporal": "none"}
    rows = (
        Row("audio", "Audio only", {"model.modality": "audio", **alone}, {"uar": 26.43, "war": 33.53}),
        Row("vision", "Vision only", {"model.modality": "vision", **alone}, {"uar": 54.34, "war": 67.15}),
        Row("both", "MMA-DFER", {"model.modality": "both"}, dict(_FULL_DFEW_F1)),
    )
    return Experiment("modality", "Table 5", "Each modality encoder vs the multimodal MMA-DFER", rows, (1,),
                      "DFEW fold 1", knobs=("model.modality", "model.prompts", "model.fusion", "model.temporal"),
                      reference="both")


def latent(dataset: str = "dfew") -> Experiment:
    """Table 6: Fusion Bottleneck latent width d = 64/128/256/512."""
    paper = {64: (64.57, 77.44, 5.9), 128: (66.52, 77.92, 7.5), 256: (66.72, 78.17, 12.3),
             512: (66.77, 78.13, 21.7)}
    rows = tuple(Row(f"d{d}", f"{d}", {"model.latent_dim": d}, {"uar": u, "war": w, "params_m": p})
                 for d, (u, w, p) in paper.items())
    return Experiment("latent", "Table 6", "Dimensionality of the latent space", rows, (1,), "DFEW fold 1",
                      extra_columns=(("paper params (M)", "params_m"),), knobs=("model.latent_dim",),
                      reference="d128")




def prompts(dataset: str = "dfew") -> Experiment:
    """Table 7: how many times progressive prompts are introduced (12/6/4/2; 0 = no prompts).

    As in the authors' code, each introduction brings 3 tokens (36/18/12/6 prompt tokens); set l
    of L enters after block floor(l * depth / L).
    """
    paper = {12: (65.14, 77.87), 6: (65.44, 77.83), 4: (64.41, 77.62), 2: (66.52, 77.92), 0: (64.62, 77.40)}
    rows = []
    for n, (u, w) in paper.items():
        over: dict[str, Any] = ({"model.prompts": "none"} if n == 0 else
                                {"model.prompts": "progressive", "model.prompt_introductions": n,
                                 "model.num_prompts": TOKENS_PER_INTRODUCTION * n})
        rows.append(Row(f"n{n}", f"{n}", over, {"uar": u, "war": w}))
    return Experiment("prompts", "Table 7", "Frequency of progressive prompts", tuple(rows), (1,), "DFEW fold 1",
                      knobs=("model.prompts", "model.prompt_introductions", "model.num_prompts"), reference="n2")


def encoders(dataset: str = "dfew") -> Experiment:
    """Encoder pairs under the paper's adaptation: MAE-Face + AudioMAE against other pre-trained face encoders.

    Each row names its weights. DINOv2's 14 px patches run at 140 px: 10 x 10 patches, the token
    count (and compute) of the paper's 160 px at 16 px.
    """
    audio = {"audio_ckpt": "audiomae"}
    rows = (
        Row("paper", "MAE-Face + AudioMAE (paper)", {"vision_ckpt": "mae-face", **audio}, dict(_FULL_DFEW_F1)),
        Row("clip-b16", "CLIP B/16 + AudioMAE",
            {"model.vision_encoder": "vit_base_patch16_clip_quickgelu_224.openai",
             "vision_ckpt": "vit_base_patch16_clip_224.openai", **audio}, {}),
        Row("dinov2-s14", "DINOv2 S/14 (140 px) + AudioMAE",
            {"model.vision_encoder": "vit_small_patch14_dinov2.lvd142m", "model.image_size": 140,
             "vision_ckpt": "vit_small_patch14_dinov2.lvd142m", **audio}, {}),
        Row("mae-b16", "MAE B/16 (ImageNet) + AudioMAE",
            {"model.vision_encoder": "vit_base_patch16_224.mae", "vision_ckpt": "vit_base_patch16_224.mae", **audio},
            {}),
    )
    return Experiment("encoders", "Encoders", "Frozen encoder pairs under the same adaptation", rows, (1,),
                      "DFEW fold 1, the paper's pair only",
                      knobs=("model.vision_encoder", "model.audio_encoder", "model.image_size"), reference="paper")


EXPERIMENTS: dict[str, Callable[[str], Experiment]] = {
    "table1": table1,
    "temporal": temporal,
    "fusion": fusion,
    "components": components,
    "modality": modality,
    "latent": latent,
    "prompts": prompts,
    "encoders": encoders,
}

WEIGHT_FIELDS = ("vision_ckpt", "audio_ckpt")  # row overrides that name a checkpoint of `mma weights list`


@dataclass(frozen=True)
class SkippedRow:
    """A row left out because its weights are not in the weights folder, and the commands that add them."""

    key: str
    label: str
    missing: tuple[str, ...]

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(fetch_command(name) for name in self.missing)

    def text(self) -> str:
        return f"skipped {self.key} ({self.label}): no {', '.join(self.missing)} in the weights folder; " + \
            "; ".join(f"`{c}`" for c in self.commands)


def missing_weights(row: Row, folder: Path) -> tuple[str, ...]:
    """The checkpoint names `row` uses that are not in the weights folder `folder`."""
    names = [row.overrides[f] for f in WEIGHT_FIELDS if row.overrides.get(f) in WEIGHTS]
    return tuple(n for n in names if find(n, folder) is None)


def bind_weights(experiment: Experiment, folder: Path) -> tuple[Experiment, list[SkippedRow]]:
    """`experiment` with its rows' checkpoint names replaced by their files in `folder`, without the rows
    whose files are missing (returned as SkippedRow)."""
    rows, skipped = [], []
    for row in experiment.rows:
        missing = missing_weights(row, folder)
        if missing:
            skipped.append(SkippedRow(row.key, row.label, missing))
            continue
        bound = {k: str(find(v, folder)) if k in WEIGHT_FIELDS and v in WEIGHTS else v for k, v in row.overrides.items()}
        rows.append(Row(row.key, row.label, bound, row.paper))
    return dataclasses.replace(experiment, rows=tuple(rows)), skipped


def get_experiment(name: str, dataset: str = "dfew") -> Experiment:
    """The named experiment (paper numbers chosen for `dataset`); MMAError lists the known names."""
    try:
        return EXPERIMENTS[name](dataset)
    except KeyError:
        raise MMAError(f"unknown sweep preset {name!r}; known: {', '.join(EXPERIMENTS)}") from None


def list_experiments(dataset: str = "dfew") -> list[dict[str, Any]]:
    """One summary per experiment: name, table, title, rows, default folds, knobs (for `--list`)."""
    out = []
    for name in EXPERIMENTS:
        exp = get_experiment(name, dataset)
        out.append({"name": exp.name, "table": exp.table, "title": exp.title,
                    "rows": [r.label for r in exp.rows], "folds": list(exp.default_folds),
                    "jobs": len(exp.rows) * len(exp.default_folds), "knobs": list(exp.knobs),
                    "paper": exp.paper_source, "reference": exp.reference})
    return out


# --------------------------------------------------------------------------- expansion


def sweep_id(experiment: str, preset_name: str = "paper") -> str:
    """Name of a sweep (its state folder and run-name prefix): the experiment, suffixed by a non-paper preset."""
    return experiment if preset_name == "paper" else f"{experiment}-{preset_name}"


def run_name(experiment: str, row: str, preset_name: str = "paper") -> str:
    """Run name of one row: `<experiment>-<row>` (plus `-<preset>` for a non-paper base preset)."""
    return f"{experiment}-{row}" if preset_name == "paper" else f"{experiment}-{row}-{preset_name}"


def expand(experiment: Experiment, base: RunConfig, ws: Workspace, *, folds: list[int] | None = None,
           preset_name: str = "paper", seeds: list[int] | None = None) -> list[Job]:
    """One Job per (row, fold, seed): base config + the row's overrides + `train.seed`, validated, with
    `mma train`'s run dir. `seeds` default to the base config's seed.

    A row whose overrides do not fit the base preset (e.g. 12 prompt introductions on a 4-block
    tiny model) raises MMAError naming the row.
    """
    jobs = []
    for row in experiment.rows:
        name = run_name(experiment.name, row.key, preset_name)
        for fold in folds or list(experiment.default_folds):
            for seed in seeds or [base.train.seed]:
                cfg = copy.deepcopy(base)
                try:
                    apply_overrides(cfg, row.overrides)
                    cfg.model.validate()
                except ValueError as exc:
                    raise MMAError(f"sweep {experiment.name}, row {row.label!r} on the {preset_name} preset: "
                                   f"{exc}") from None
                cfg.name = name
                cfg.fold = fold
                cfg.train.seed = seed
                jobs.append(Job(experiment.name, row.key, row.label, fold, name, cfg,
                                ws.run_dir(cfg.dataset, name, fold, seed), dict(row.overrides), seed))
    return jobs
