"""`mma model summary`: the resolved config's network, counted — parameters per component (trainable and
frozen), the token layout and the prompt schedule (`model.summary`), and the FLOPs of one clip's forward
and training step (`pipeline.engine.flops`), sized for the dataset's label set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.summary import format_summary, summarize_config
from pipeline.core.config import RunConfig
from pipeline.core.paths import Workspace
from pipeline.core.project import ProjectFile, prepared_datasets
from pipeline.core.results import StageResult
from pipeline.core.stage_config import ConfigRequest, stage_dataset
from pipeline.data.datasets import apply_label_set
from pipeline.data.manifest import label_set
from pipeline.engine.flops import count_flops


@dataclass(frozen=True)
class ModelSummary(StageResult):
    """`summary` is `model.summary.summarize_config`'s dict plus `flops_forward_per_clip` and
    `flops_train_per_clip` (what `--json` prints)."""

    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.summary)

    def text(self) -> str:
        s = self.summary
        return "\n".join([format_summary(s),
                          f"FLOPs per clip: forward {s['flops_forward_per_clip'] / 1e9:.1f} GFLOP, "
                          f"training step (forward + backward) {s['flops_train_per_clip'] / 1e9:.1f} GFLOP"])


def summarize_run(cfg: RunConfig, dataset: str, ws: Workspace | None = None) -> ModelSummary:
    """The summary of `cfg`'s network with the classifier sized for `dataset`'s label set."""
    apply_label_set(cfg, label_set(dataset, ws))
    return ModelSummary({**summarize_config(cfg.model), **count_flops(cfg.model)})


def summary_dataset(request: ConfigRequest, project: ProjectFile, ws: Workspace) -> str:
    """The label set a summary is sized for: the dataset named or configured, else the only one
    prepared, else (nothing named, configured or prepared) DFEW's: a summary needs no data. A broken
    --config file or several prepared datasets are errors, as for every stage."""
    named = request.dataset or request.stage_file().dataset or project.dataset
    if not named and not prepared_datasets(ws):
        return "dfew"
    return stage_dataset(request, project, ws)
