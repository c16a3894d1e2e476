"""The encoder checkpoints a stage uses, checked before its work starts.

`resolve_encoder_checkpoints` is called at the entry of every stage that builds encoders
(train, cache, eval, predict): a `--vision-ckpt` / `--audio-ckpt` given is structure-checked
against the run's model geometry (a wrong or swapped file is one error line); one omitted is
taken from the weights folder by name (`mae-face`, `audiomae`) when a fitting file is there,
so its path — and through it its sha256 — lands in the run's provenance; otherwise that
encoder stays random, which is said loudly (fine for tests and the demo, meaningless on real
data). `check_trained_checkpoint` does the same for a `--checkpoint` (an mma run, or the
authors' layout with `--official`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from model.errors import ModelError
from model.inspect import Expected, check_file
from pipeline.core.config import RunConfig
from pipeline.core.paths import Workspace
from pipeline.weights.registry import ENCODERS, weight_spec
from pipeline.weights.store import find

log = logging.getLogger(__name__)

_USES = {"both": ("vision", "audio"), "vision": ("vision",), "audio": ("audio",)}


def resolve_encoder_checkpoints(cfg: RunConfig, ws: Workspace, *, fill: bool = True) -> RunConfig:
    """A copy of `cfg` whose vision_ckpt / audio_ckpt are checked files (or None: random encoder).

    `fill=False` checks the given flags only (eval: a run checkpoint names its own encoders).
    """
    cfg = copy.deepcopy(cfg)
    expected = Expected.from_model_config(cfg.model)
    for which in _USES.get(cfg.model.modality, ("vision", "audio")):
        attr = f"{which}_ckpt"
        name = ENCODERS[which]
        kind = weight_spec(name).kind
        given = getattr(cfg, attr)
        if given:
            check_file(given, kind, f"--{which}-ckpt", expected)
            continue
        if not fill:
            continue
        found = find(name, ws.weights)
        if found is None:
            log.warning("no %s encoder checkpoint (--%s-ckpt) and no %s in %s: the %s encoder stays RANDOM "
                        "(fine for tests and the demo, meaningless on real data; see `mma weights list`)",
                        which, which, name, ws.weights, which)
            continue
        try:
            check_file(found, kind, f"{name} in the weights folder", expected)
        except ModelError as exc:
            log.warning("%s; not used: the %s encoder stays RANDOM", exc, which)
            continue
        log.info("%s encoder: %s (%s from the weights folder)", which, found, name)
        setattr(cfg, attr, str(found))
    return cfg


def check_trained_checkpoint(path: str | Path, *, official: bool, expected: Expected | None = None) -> None:
    """ModelError unless `path` is an mma run checkpoint (or, `official`, the authors' layout)."""
    kind = "authors-trained" if official else "mma-run"
    check_file(path, kind, "--checkpoint" + (" --official" if official else ""), expected)
