"""The authors' trained checkpoints in the pipeline: which dataset's labels and which config they get.

`model.official` maps tensors and knows nothing of datasets; this module supplies the class
names and the run config (the preset's encoder geometry at the checkpoint's image size).
`official_run_config` is the one builder of that config (`mma model import-official`,
`mma predict --official`); `mma eval --official` evaluates with the stage's own config instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.official import import_official_to_file
from pipeline.core.config import RunConfig
from pipeline.core.config import preset as preset_config
from pipeline.core.config import to_dict
from pipeline.core.errors import MMAError
from pipeline.core.results import StageResult
from pipeline.data.datasets import DATASETS, apply_label_set
from pipeline.weights.resolve import check_trained_checkpoint


def official_run_config(dataset: str, *, image_size: int | None = None,
                        preset: str = "paper") -> tuple[RunConfig, list[str]]:
    """(run config, class names) of an authors' checkpoint trained on `dataset` (dfew | mafw) at S=image_size.

    The preset's model (the paper's: ViT-B/16 encoders, the authors' inputs) at `image_size` (None
    keeps the preset's S), sized for the dataset's published label set.
    """
    if dataset not in DATASETS:
        raise MMAError(f"--dataset {dataset!r}: the authors' checkpoints are for {' or '.join(DATASETS)}")
    classes = list(DATASETS[dataset].classes)
    cfg = preset_config(preset)
    cfg.dataset = dataset
    cfg.name = "official"
    if image_size:
        cfg.model.image_size = image_size
    apply_label_set(cfg, classes)
    return cfg, classes


@dataclass(frozen=True)
class ImportResult(StageResult):
    """What `mma model import-official` wrote: the report of the conversion (tensors mapped, files, sha256)."""

    report: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.report)


def import_official(ckpt: str | Path, *, dataset: str, image_size: int, out: str | Path, preset: str = "paper",
                    force: bool = False) -> ImportResult:
    """Convert an authors' checkpoint of `dataset` (dfew | mafw) trained at `image_size` into an mma checkpoint."""
    cfg, classes = official_run_config(dataset, image_size=image_size, preset=preset)
    check_trained_checkpoint(ckpt, official=True)
    report = import_official_to_file(ckpt, model_config=cfg.model, classes=classes, out=out,
                                     run_config=to_dict(cfg), extra={"dataset": dataset}, force=force)
    report["dataset"] = dataset
    return ImportResult(report)
