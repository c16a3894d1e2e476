"""The paper's experiment presets expand into the right (row x fold) jobs with the right configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import paper, tiny
from pipeline.core.errors import MMAError
from pipeline.core.folds import parse_folds
from pipeline.core.paths import Workspace
from pipeline.experiments.presets import (
    EXPERIMENTS,
    expand,
    get_experiment,
    list_experiments,
)

WS = Workspace(Path("/w"), Path("/m"))

# experiment -> (rows, default folds)
EXPECTED = {
    "table1": (3, 5),
    "temporal": (5, 1),
    "fusion": (5, 1),
    "components": (7, 1),
    "modality": (3, 1),
    "latent": (4, 1),
    "prompts": (5, 1),
    "encoders": (4, 1),
}


def _jobs(name, base=None, **kw):
    base = base or paper()
    base.dataset = "dfew"
    return expand(get_experiment(name, "dfew"), base, WS, **kw)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_preset_expands_to_rows_times_folds(name):
    rows, folds = EXPECTED[name]
    jobs = _jobs(name)
    assert len(jobs) == rows * folds
    assert len({j.key for j in jobs}) == len(jobs)
    for j in jobs:
        assert j.config.name == j.run_name and j.config.fold == j.fold
        assert j.run_dir == WS.run_dir("dfew", j.run_name, j.fold)
        j.config.model.validate()
    # each row differs from the others in the knobs it sets
    distinct = {tuple(sorted(j.overrides.items())) for j in jobs}
    assert len(distinct) == rows


def test_table1_runs_five_folds_at_three_sizes_with_paper_numbers():
    jobs = _jobs("table1")
    assert sorted({j.config.model.image_size for j in jobs}) == [112, 160, 224]
    assert sorted({j.fold for j in jobs}) == [1, 2, 3, 4, 5]
    exp = get_experiment("table1", "mafw")
    assert exp.rows[1].paper == {"uar": 44.19, "war": 57.90, "uar_2clip": 44.07, "war_2clip": 57.85}
    assert get_experiment("table1", "dfew").rows[2].paper["uar"] == 67.01


def test_fusion_temporal_latent_modality_knobs():
    fusion = {j.row: j.config.model.fusion for j in _jobs("fusion")}
    assert fusion == {"none": "none", "mult": "mult", "mult-concat": "mult-concat", "add": "add",
                      "bottleneck": "bottleneck"}
    temporal = {j.row: (j.config.model.temporal, j.config.model.ita_dim) for j in _jobs("temporal")}
    assert temporal["ita64"] == ("ita", 64) and temporal["ita256"] == ("ita", 256)
    assert temporal["mtt-ita128"] == ("both", 128) and temporal["mtt"][0] == "mtt"
    assert [j.config.model.latent_dim for j in _jobs("latent")] == [64, 128, 256, 512]
    modality = [(j.config.model.modality, j.config.model.prompts, j.config.model.fusion, j.config.model.temporal)
                for j in _jobs("modality")]
    assert modality == [("audio", "none", "none", "none"), ("vision", "none", "none", "none"),
                        ("both", "progressive", "bottleneck", "mtt")]
    # ablations keep the base preset's image size (the paper's 160)
    assert {j.config.model.image_size for j in _jobs("fusion")} == {160}


def test_components_rows_match_table4():
    got = [(j.config.model.prompts, j.config.model.temporal, j.config.model.fusion) for j in _jobs("components")]
    assert got == [
        ("none", "none", "none"),
        ("static", "none", "none"),
        ("progressive", "none", "none"),
        ("progressive", "mtt", "none"),
        ("progressive", "none", "bottleneck"),
        ("none", "mtt", "bottleneck"),
        ("progressive", "mtt", "bottleneck"),
    ]
    assert [r.paper["uar"] for r in get_experiment("components").rows][-1] == 66.52


def test_prompts_rows_and_tiny_preset_limit():
    got = [(j.config.model.prompts, j.config.model.prompt_introductions, j.config.model.num_prompts)
           for j in _jobs("prompts")]
    # the authors' sizing: 3 prompt tokens per introduction
    assert got[:4] == [("progressive", 12, 36), ("progressive", 6, 18), ("progressive", 4, 12), ("progressive", 2, 6)]
    assert got[4][0] == "none"
    base = tiny()
    base.dataset = "dfew"
    with pytest.raises(MMAError, match="row '12' on the tiny preset.*prompt_introductions=12"):
        expand(get_experiment("prompts"), base, WS, preset_name="tiny")


def test_folds_override_and_tiny_run_names():
    base = tiny()
    base.dataset = "synth"
    jobs = expand(get_experiment("fusion"), base, WS, folds=[2, 3], preset_name="tiny")
    assert len(jobs) == 10 and {j.fold for j in jobs} == {2, 3}
    assert jobs[0].run_name == "fusion-none-tiny" and jobs[0].config.model.embed_dim == 64
    assert str(jobs[0].run_dir).endswith("synth/runs/fusion-none-tiny/seed1/fold2")


def test_parse_folds_and_unknown_preset():
    assert parse_folds("1, 3,3") == [1, 3] and parse_folds(None) is None
    with pytest.raises(MMAError, match="1..5"):
        parse_folds("0,6")
    with pytest.raises(MMAError, match="known: table1"):
        get_experiment("table9")
    listing = {e["name"]: e for e in list_experiments()}
    assert listing["table1"]["jobs"] == 15 and listing["components"]["jobs"] == 7


def test_prompts_rows_enter_after_block_l_times_12_over_l():
    from model.families import encoder_geometry
    from model.prompts import prompt_layout

    for job in _jobs("prompts")[:4]:
        m = job.config.model
        n = m.prompt_introductions
        layout = prompt_layout(m.num_prompts, n, encoder_geometry(m, "vision").depth)
        want = [{"after_block": l * 12 // n, "tokens": [3 * l, 3 * l + 3]} for l in range(n) if l * 12 // n < 11]
        assert layout == {"tokens": 3 * n, "sets": want}
