"""The encoder checkpoints a stage uses, checked before its work starts, and what they make an encoder's identity.

`resolve_encoder_checkpoints` is called at the entry of every stage that builds encoders
(train, cache, eval, predict). Per encoder of the model (`model.vision_encoder` /
`model.audio_encoder`, timm names):

- a `--vision-ckpt` / `--audio-ckpt` given (a file, or a name from `mma weights list`, which is
  its file in the weights folder) is structure-checked against the geometry the named
  architecture has under the run's config: a wrong, swapped or other-architecture file is one
  error line naming both (`pipeline.weights.check.check_encoder_file`);
- one omitted is taken from the weights folder: the entry holding that encoder's weights
  (`registry.weights_for_encoder`: MAE-Face and AudioMAE for the default pair), when its file is
  there and fits, so its path — and through it its sha256 — lands in the run's provenance;
  otherwise that encoder stays random, which is said loudly, with the command that would
  fetch its weights (fine for tests and the demo, meaningless on real data).

`encoder_identities` is what the cache and every run's provenance record of the encoders: the
timm name and the weights file's sha256, or "random init". `check_trained_checkpoint` checks a
`--checkpoint` (an mma run, or the authors' layout with `--official`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.config import ModelConfig
from model.errors import ModelError
from model.inspect import Expected, check_file
from pipeline.core.config import RunConfig
from pipeline.core.errors import MMAError
from pipeline.core.paths import Workspace
from pipeline.weights.check import check_encoder_file
from pipeline.weights.registry import WEIGHTS, fetch_command, weights_for_encoder
from pipeline.weights.store import find

log = logging.getLogger(__name__)

RANDOM_INIT = "random init"


def named_weights_file(given: str, flag: str, folder: Path) -> Path:
    """`given` as a path; a name from `mma weights list` is its file in `folder` (MMAError when it is not there)."""
    path = Path(given)
    if path.is_file() or given not in WEIGHTS:
        return path
    found = find(given, folder)
    if found is None:
        raise MMAError(f"{flag} {given}: not in the weights folder {folder} (`{fetch_command(given)}` adds it)")
    return found


def _fetch_hint(encoder: str, which: str) -> str:
    spec = weights_for_encoder(encoder, which)
    if spec is None:
        return f"no known weights for {encoder}: pass --{which}-ckpt FILE"
    return f"`{fetch_command(spec.name)}`"


def resolve_encoder_checkpoints(cfg: RunConfig, ws: Workspace, *, fill: bool = True) -> RunConfig:
    """A copy of `cfg` whose vision_ckpt / audio_ckpt are checked files (or None: random encoder).

    `fill=False` checks the given flags only (eval: a run checkpoint names its own encoders).
    """
    cfg = copy.deepcopy(cfg)
    for which in cfg.model.encoders():
        attr = f"{which}_ckpt"
        encoder = getattr(cfg.model, f"{which}_encoder")
        given = getattr(cfg, attr)
        if given:
            path = named_weights_file(str(given), f"--{which}-ckpt", ws.weights)
            check_encoder_file(path, which, cfg.model, f"--{which}-ckpt")
            setattr(cfg, attr, str(path))
            continue
        if not fill:
            continue
        spec = weights_for_encoder(encoder, which)
        found = find(spec.name, ws.weights) if spec is not None else None
        if found is None:
            where = f"no {spec.name} in {ws.weights}" if spec is not None else "no weights known for it"
            log.warning("no %s encoder checkpoint (--%s-ckpt) for %s and %s: the %s encoder stays RANDOM "
                        "(fine for tests and the demo, meaningless on real data; %s)",
                        which, which, encoder, where, which, _fetch_hint(encoder, which))
            continue
        try:
            check_encoder_file(found, which, cfg.model, f"{spec.name} in the weights folder")
        except (ModelError, MMAError) as exc:
            log.warning("%s; not used: the %s encoder stays RANDOM", exc, which)
            continue
        log.info("%s encoder %s: %s (%s from the weights folder)", which, encoder, found, spec.name)
        setattr(cfg, attr, str(found))
    return cfg


def encoder_identities(model_cfg: ModelConfig, sources: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Per encoder of the model: {"name": its timm name, "sha256": the weights file's, or "random init"}.

    `sources` is `MMADFER.encoder_sources` (or a run checkpoint's `encoders`): {role: {"path", "sha256"}}.
    """
    out = {}
    for which in model_cfg.encoders():
        digest = (sources.get(which) or {}).get("sha256")
        out[which] = {"name": getattr(model_cfg, f"{which}_encoder"), "sha256": digest or RANDOM_INIT}
    return out


def describe_identity(identity: Mapping[str, Any] | None) -> str:
    """`vit_base_patch16_224.mae_face (sha256 0123456789ab)` / `... (random init)` / `no encoder`."""
    if not identity:
        return "no encoder"
    digest = str(identity.get("sha256") or RANDOM_INIT)
    return f"{identity.get('name')} ({digest if digest == RANDOM_INIT else 'sha256 ' + digest[:12]})"


def check_trained_checkpoint(path: str | Path, *, official: bool, expected: Expected | None = None) -> None:
    """ModelError unless `path` is an mma run checkpoint (or, `official`, the authors' layout)."""
    kind = "authors-trained" if official else "mma-run"
    check_file(path, kind, "--checkpoint" + (" --official" if official else ""), expected)
