"""The authors' trained checkpoints in the pipeline: which dataset's labels and which config they get.

`model.official` maps tensors and knows nothing of datasets; this module supplies the class
names and the run config (the preset's encoder geometry at the checkpoint's image size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.official import import_official_to_file
from pipeline.core.config import preset as preset_config
from pipeline.core.config import to_dict
from pipeline.core.errors import MMAError
from pipeline.data.datasets import DATASETS
from pipeline.weights.resolve import check_trained_checkpoint


def import_official(ckpt: str | Path, *, dataset: str, image_size: int, out: str | Path, preset: str = "paper",
                    force: bool = False) -> dict[str, Any]:
    """Convert an authors' checkpoint of `dataset` (dfew | mafw) trained at `image_size` into an mma checkpoint."""
    if dataset not in DATASETS:
        raise MMAError(f"--dataset {dataset!r}: the authors' checkpoints are for {' or '.join(DATASETS)}")
    check_trained_checkpoint(ckpt, official=True)
    spec = DATASETS[dataset]
    cfg = preset_config(preset)
    cfg.dataset = dataset
    cfg.name = "official"
    cfg.model.image_size = image_size
    cfg.model.num_classes = spec.num_classes
    report = import_official_to_file(ckpt, model_config=cfg.model, classes=spec.classes, out=out,
                                     run_config=to_dict(cfg), extra={"dataset": dataset}, force=force)
    report["dataset"] = dataset
    return report
