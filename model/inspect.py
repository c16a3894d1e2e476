"""What a checkpoint file is, read from its tensors alone: the structure check before any work starts.

`inspect_checkpoint` loads a file with `safe_torch_load` (no pickled code runs) and tells
apart the four kinds of file `mma` takes:

- `vision-encoder`: a ViT in timm names (`{'model': state_dict}` or a bare state dict), 3 input
  channels: MAE-Face, or any supported family (model.families);
- `audio-encoder`: the same with 1 input channel (a spectrogram): AudioMAE;
- `mma-run`: a checkpoint `mma train` wrote (`format: "mma-v1"`);
- `authors-trained`: a model trained with the authors' MMA-DFER code (`{'state_dict':
  {'module.image_encoder...', 'module.audio_model...'}}`);

anything else is `unknown`. For encoders it reads the geometry off the tensor shapes: width
and input channels from the patch-embedding conv, patch size from its kernel, depth from the
block indices, the prefix tokens from `cls_token` / `reg_token`, the positional-embedding grid
from `pos_embed` (with or without rows for the prefix tokens), the family from its telltale
tensors (CLIP's `norm_pre`, DINOv2's layer scale, EVA-02's q/v biases), and the MAE
pre-training leftovers (decoder, mask token, heads) that loading ignores. Heads are not stored
in a state dict; they are reported assuming 64-wide heads (ViT-B: 12 heads of 64).

`expected_for_encoder(name, which, cfg)` is the geometry a checkpoint of a timm name must have
(read from the timm model, `model.families.encoder_geometry`); `compare_geometry` refuses a
file that does not have it in one line naming the file, both geometries and the name.
`require(kind, info, flag, expected)` turns a wrong kind into one `ModelError` line naming the
file and what it is instead ("this is an AudioMAE encoder (1 input channel), given as
--vision-ckpt"). `expected` is the run's encoder geometry per encoder
(`Expected.from_model_config`): ViT-B/16 for the paper preset, the shrunken ViT of the tiny
preset in tests and the demo, the named timm architectures otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import FORMAT, IGNORED_ENCODER_KEYS, safe_torch_load
from model.config import ModelConfig
from model.errors import ModelError
from model.families import ViTGeometry, encoder_geometry

KINDS = ("vision-encoder", "audio-encoder", "mma-run", "authors-trained", "unknown")
# `mma weights check --as` names -> kinds.
AS_KINDS = {"vision": "vision-encoder", "audio": "audio-encoder", "mma": "mma-run", "authors": "authors-trained"}
HEAD_WIDTH = 64  # ViT-B/16: 768 wide, 12 heads of 64
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class EncoderGeometry:
    """A ViT encoder's shape as its tensors give it (or, from `expected_for_encoder`, as a timm name needs it)."""

    width: int
    depth: int
    heads: int | None  # read from tensors: assuming 64-wide heads
    patch_size: int
    in_chans: int
    pos_rows: int | None  # positional-embedding rows of the patch grid (prefix rows excluded)
    pos_grid: tuple[int, int] | None  # (rows, cols) of that grid when it can be told
    prefix_tokens: int = 1  # class token + register tokens
    family: str = "ViT"  # ViT | CLIP-style | DINOv2-style | EVA-02 (from telltale tensors)
    name: str = ""  # the timm name, for an expected geometry

    def describe(self) -> str:
        grid = f", {self.pos_grid[0]}x{self.pos_grid[1]} position grid" if self.pos_grid else ""
        heads = f", {self.heads} heads of {HEAD_WIDTH} (assumed)" if self.heads and self.heads > 1 else ""
        prefix = f", {self.prefix_tokens} prefix tokens" if self.prefix_tokens != 1 else ""
        family = f", {self.family} layout" if self.family != "ViT" else ""
        return f"width {self.width}, depth {self.depth}{heads}, {self.patch_size} px patches{prefix}{grid}{family}"

    def shape(self, *, prefix: bool = False) -> str:
        """Width, depth, patch size (and the prefix tokens when asked): what `compare_geometry` compares, but the family."""
        tail = f", {self.prefix_tokens} prefix token{'s' if self.prefix_tokens != 1 else ''}" if prefix else ""
        return f"width {self.width}, depth {self.depth}, {self.patch_size} px patches{tail}"

    def key(self) -> tuple[int, int, int, int]:
        """(width, depth, patch size, prefix tokens): with `family`, what `compare_geometry` compares."""
        return self.width, self.depth, self.patch_size, self.prefix_tokens


def _layout_family(geo: ViTGeometry) -> str:
    """The family name `_family` gives a state dict of this geometry (the same telltales, the same order)."""
    if geo.rope:
        return "EVA-02"
    if geo.layer_scale:
        return "DINOv2-style"
    if geo.pre_norm:
        return "CLIP-style"
    return "ViT"


def expected_for_encoder(name: str, which: str = "vision", cfg: ModelConfig | None = None) -> EncoderGeometry:
    """The geometry a `which` checkpoint for the timm name `name` must have (with `cfg`'s geometry overrides).

    Read from the timm model (`model.families.encoder_geometry`; no timm for the paper's
    architecture). The positional grid is not part of it: checkpoints are resized on load.
    """
    base = cfg if cfg is not None else ModelConfig()
    geo = encoder_geometry(dataclasses.replace(base, **{f"{which}_encoder": name}), which)
    return EncoderGeometry(width=geo.width, depth=geo.depth, heads=geo.heads, patch_size=geo.patch_size[0],
                           in_chans=geo.in_chans, pos_rows=None, pos_grid=None,
                           prefix_tokens=geo.num_prefix_tokens, family=_layout_family(geo), name=name)


def compare_geometry(found: EncoderGeometry, expected: EncoderGeometry, path: str | Path, *, what: str = "this file",
                     flag: str = "", needs: str = "") -> None:
    """ModelError in one line unless `found` has `expected`'s width, depth, patch size, prefix tokens and family.

    The line names the file and what it has, then who needs what: `needs` (e.g. "--preset paper")
    with the architecture in brackets, or else the architecture's name.
    """
    if found.key() == expected.key() and found.family == expected.family:
        return
    prefix = found.prefix_tokens != expected.prefix_tokens or expected.prefix_tokens != 1
    family = found.family != expected.family
    given = f", given as {flag}" if flag else ""
    label = _label(expected)
    who = needs or label or "the run's model"
    has = found.shape(prefix=prefix) + (f", {found.family} layout" if family else "")
    wants = (expected.shape(prefix=prefix) + (f" ({label})" if needs and label else "")
             + (f", {expected.family} layout" if family else ""))
    raise ModelError(f"{path}: {what} has {has}{given}; {who} needs {wants}")


def _label(expected: EncoderGeometry) -> str:
    """ "ViT-B/16" for the paper's geometry, else the timm name."""
    if expected.key() == (768, 12, 16, 1) and expected.family == "ViT":
        return "ViT-B/16"
    return expected.name


@dataclass(frozen=True)
class Expected:
    """The encoder geometry a run needs, per encoder (`vision`, `audio`), and the spectrogram's mel bins."""

    vision: EncoderGeometry
    audio: EncoderGeometry
    audio_mel_bins: int = 128

    @classmethod
    def from_model_config(cls, cfg: ModelConfig) -> Expected:
        return cls(expected_for_encoder(cfg.vision_encoder, "vision", cfg),
                   expected_for_encoder(cfg.audio_encoder, "audio", cfg), cfg.audio_mel_bins)

    def for_kind(self, kind: str) -> EncoderGeometry:
        """The geometry a file of `kind` ("vision-encoder" | "audio-encoder") must have."""
        return self.audio if kind == "audio-encoder" else self.vision


VIT_B = Expected.from_model_config(ModelConfig())


@dataclass
class CheckpointInfo:
    """What `inspect_checkpoint` found in one file."""

    path: str
    kind: str
    encoder: EncoderGeometry | None = None  # the encoder (vision for authors' / mma files)
    audio_encoder: EncoderGeometry | None = None  # authors' files: the audio encoder too
    mae_leftovers: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)  # mma-run: dataset, fold, model geometry, encoders
    notes: list[str] = field(default_factory=list)

    def short(self) -> str:
        """What the file is, in a few words ("an AudioMAE encoder (1 input channel)")."""
        family = self.encoder.family if self.encoder is not None else "ViT"
        if self.kind == "vision-encoder":
            return "a MAE-Face encoder (3 input channels)" if family == "ViT" else \
                f"a {family} vision encoder (3 input channels)"
        if self.kind == "audio-encoder":
            return "an AudioMAE encoder (1 input channel)" if family == "ViT" else \
                f"a {family} audio encoder (1 input channel)"
        if self.kind == "mma-run":
            ds, fold = self.run.get("dataset"), self.run.get("fold")
            return f"an mma run checkpoint{f' ({ds} fold {fold})' if ds is not None and fold is not None else ''}"
        if self.kind == "authors-trained":
            return "a model trained with the authors' MMA-DFER code"
        if self.encoder is not None:
            return f"a ViT encoder with {self.encoder.in_chans} input channels (neither faces nor spectrograms)"
        return f"not a checkpoint mma knows ({'; '.join(self.notes[:1]) or 'no known keys'})"

    def describe(self) -> str:
        """A few lines for `mma weights check`: kind, geometry, leftovers, notes."""
        lines = [f"{self.path}: {self.short()}"]
        if self.encoder is not None:
            which = "vision encoder" if self.kind == "authors-trained" else "encoder"
            lines.append(f"  {which}: {self.encoder.describe()}")
        if self.audio_encoder is not None:
            lines.append(f"  audio encoder: {self.audio_encoder.describe()}")
        if self.run:
            shown = ", ".join(f"{k} {v}" for k, v in self.run.items() if k != "encoders" and v is not None)
            lines.append(f"  run: {shown}")
        if self.mae_leftovers:
            lines.append(f"  MAE pre-training leftovers (ignored when loading): {len(self.mae_leftovers)} tensor(s), "
                         f"e.g. {', '.join(self.mae_leftovers[:4])}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["description"] = self.short()
        return out


# --------------------------------------------------------------------------- reading shapes


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    if sd and all(str(k).startswith("module.") for k in sd):
        return {str(k)[len("module."):]: v for k, v in sd.items()}
    return {str(k): v for k, v in sd.items()}


def _encoder_geometry(sd: Mapping[str, Any], prefix: str, audio_mel_bins: int, extra_rows: int = 0
                      ) -> EncoderGeometry | None:
    """Geometry of the ViT whose tensors start with `prefix`, or None without a 4-D patch conv."""
    conv = sd.get(f"{prefix}patch_embed.proj.weight")
    if not isinstance(conv, torch.Tensor) or conv.dim() != 4:
        return None
    width, in_chans, ph, _ = (int(s) for s in conv.shape)
    depth = len({int(m.group(1)) for k in sd if k.startswith(prefix) and (m := _BLOCK.match(k[len(prefix):]))})
    reg = sd.get(f"{prefix}reg_token")
    prefix_tokens = int(f"{prefix}cls_token" in sd) + (int(reg.shape[1]) if isinstance(reg, torch.Tensor)
                                                        and reg.dim() == 3 else 0)
    pos = sd.get(f"{prefix}pos_embed")
    total = int(pos.shape[1]) - extra_rows if isinstance(pos, torch.Tensor) and pos.dim() == 3 else None
    rows: int | None = None
    grid: tuple[int, int] | None = None
    if total is not None:
        # rows for the prefix tokens, then the grid; some families (DINOv2 with registers) give the prefix none
        for rows in dict.fromkeys((total - prefix_tokens, total)):
            grid = _grid(rows, in_chans, ph, audio_mel_bins)
            if grid is not None:
                break
        else:
            rows = total - prefix_tokens
    heads = width // HEAD_WIDTH if width % HEAD_WIDTH == 0 else None
    return EncoderGeometry(width, depth, heads, ph, in_chans, rows, grid, prefix_tokens, _family(sd, prefix))


def _grid(rows: int, in_chans: int, patch: int, audio_mel_bins: int) -> tuple[int, int] | None:
    """The position grid of `rows` patch rows: square for images, (time x mel bins / patch) for spectrograms."""
    if rows <= 0:
        return None
    if in_chans == 1:
        cols = audio_mel_bins // patch if patch else 0
        return (rows // cols, cols) if cols and rows % cols == 0 else None
    side = math.isqrt(rows)
    return (side, side) if side * side == rows else None


def _family(sd: Mapping[str, Any], prefix: str) -> str:
    """Which family the tensors are from, by its telltale tensors (the plain MAE/timm layout: "ViT")."""
    # EVA-02: tiny/small fuse qkv with separate q/v biases; base/large keep q/k/v projections; all SwiGLU
    eva = ("attn.q_bias", "attn.q_proj.weight", "mlp.fc1_g.weight")
    if any(f"{prefix}blocks.0.{key}" in sd for key in eva):
        return "EVA-02"
    if f"{prefix}blocks.0.ls1.gamma" in sd:
        return "DINOv2-style"
    if f"{prefix}norm_pre.weight" in sd:
        return "CLIP-style"
    return "ViT"


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        sd = _strip_module(obj)
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        return tensors or None
    return None


def _inspect_mma(obj: Mapping[str, Any], info: CheckpointInfo) -> CheckpointInfo:
    info.kind = "mma-run"
    cfg = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    info.run = {"dataset": cfg.get("dataset"), "fold": cfg.get("fold"), "name": cfg.get("name"),
                "epoch": obj.get("epoch"), "image_size": model.get("image_size"),
                "vision_encoder": model.get("vision_encoder"), "audio_encoder": model.get("audio_encoder"),
                "width": model.get("embed_dim"), "depth": model.get("depth"),
                "full_state": bool(obj.get("full_state")),
                "encoders": {w: (e or {}).get("sha256") for w, e in (obj.get("encoders") or {}).items()}}
    if isinstance(obj.get("official"), Mapping):
        info.notes.append(f"imported from the authors' checkpoint {obj['official'].get('path')}")
    return info


def _inspect_authors(sd: Mapping[str, torch.Tensor], info: CheckpointInfo, mel: int) -> CheckpointInfo:
    info.kind = "authors-trained"
    prompts = sd.get("image_encoder.learnable_prompts_init")
    aprompts = sd.get("audio_model.learnable_prompts_init")
    n_v = int(prompts.shape[0]) if isinstance(prompts, torch.Tensor) and prompts.dim() == 2 else 0
    n_a = int(aprompts.shape[0]) if isinstance(aprompts, torch.Tensor) and aprompts.dim() == 2 else 0
    info.encoder = _encoder_geometry(sd, "image_encoder.", mel, n_v)
    info.audio_encoder = _encoder_geometry(sd, "audio_model.", mel, n_a)
    head = sd.get("our_classifier.weight")
    if isinstance(head, torch.Tensor):
        info.run["classes"] = int(head.shape[0])
    if info.encoder is not None and info.encoder.pos_grid:
        info.run["image_size"] = info.encoder.pos_grid[0] * info.encoder.patch_size
    return info


def inspect_checkpoint(obj_or_path: Any, *, path: str | Path | None = None,
                       audio_mel_bins: int = 128) -> CheckpointInfo:
    """Kind and structure of a checkpoint file (or of an object already loaded from `path`).

    A file that is not a PyTorch checkpoint at all raises ModelError naming it.
    """
    if isinstance(obj_or_path, (str, Path)):
        path = Path(obj_or_path)
        obj = safe_torch_load(path)
    else:
        obj = obj_or_path
    info = CheckpointInfo(path=str(path) if path is not None else "<checkpoint>", kind="unknown")
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return _inspect_mma(obj, info)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        sd = _tensor_dict(obj["state_dict"]) or {}
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = _tensor_dict(obj["model"]) or {}
    else:
        sd = _tensor_dict(obj) or {}
    if any(k.startswith("image_encoder.") for k in sd) and any(k.startswith("audio_model.") for k in sd):
        return _inspect_authors(sd, info, audio_mel_bins)
    geometry = _encoder_geometry(sd, "", audio_mel_bins)
    if geometry is None:
        if isinstance(obj, Mapping):
            keys = sorted(map(str, obj))[:6]
            info.notes.append(f"top-level keys: {', '.join(keys) if keys else 'none'}")
        else:
            info.notes.append(f"holds a {type(obj).__name__}, not a dict of tensors")
        return info
    info.encoder = geometry
    info.mae_leftovers = sorted(k for k in sd if k.startswith(IGNORED_ENCODER_KEYS))
    if geometry.in_chans == 3:
        info.kind = "vision-encoder"
    elif geometry.in_chans == 1:
        info.kind = "audio-encoder"
    if "pos_embed" not in sd:
        info.notes.append("no pos_embed tensor")
    elif geometry.pos_grid is None:
        info.notes.append(f"pos_embed has {geometry.pos_rows} patch rows, not a grid this encoder can use")
    if geometry.depth == 0:
        info.notes.append("no transformer blocks (blocks.N.*)")
    if any(k.startswith(("head.", "fc_norm.")) for k in sd) and not any(k.startswith("decoder") for k in sd):
        info.notes.append("has a classification head and no MAE decoder: a fine-tuned model, not the pre-trained one")
    return info


# --------------------------------------------------------------------------- requirements


def _swap_hint(kind: str, info: CheckpointInfo) -> str:
    if {kind, info.kind} == {"vision-encoder", "audio-encoder"}:
        return " (swapped --vision-ckpt and --audio-ckpt?)"
    if kind == "mma-run" and info.kind == "authors-trained":
        return " (pass --official, or convert it with `mma model import-official`)"
    if kind == "authors-trained" and info.kind == "mma-run":
        return " (drop --official: mma checkpoints load as they are)"
    if kind in ("mma-run", "authors-trained") and info.kind in ("vision-encoder", "audio-encoder"):
        return " (a pre-trained encoder, not a trained model: pass it as --vision-ckpt/--audio-ckpt)"
    return ""


def _check_geometry(geo: EncoderGeometry, expected: Expected, kind: str, path: str, flag: str, what: str,
                    needs: str) -> None:
    compare_geometry(geo, expected.for_kind(kind), path, what=what, flag=flag, needs=needs)
    if geo.pos_rows is not None and geo.pos_grid is None:
        shape = "a square grid" if geo.in_chans == 3 else f"a (time x {expected.audio_mel_bins // geo.patch_size}) grid"
        raise ModelError(f"{path}: {what} has {geo.pos_rows} positional-embedding rows, not {shape}, given as {flag}")
    if geo.pos_rows is None:
        raise ModelError(f"{path}: {what} has no usable pos_embed, given as {flag}")


def require(kind: str, info: CheckpointInfo, flag: str, expected: Expected | None = VIT_B,
            needs: str = "the run's model") -> CheckpointInfo:
    """`info` if the file is a `kind` fitting `expected`; else ModelError: the file, what it is, the flag.

    `expected=None` checks the kind only; `needs` names who expects that geometry in the message.
    """
    if kind not in KINDS or kind == "unknown":
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS[:-1])}")
    if info.kind != kind:
        raise ModelError(f"{info.path}: this is {info.short()}, given as {flag}{_swap_hint(kind, info)}")
    if expected is None:
        return info
    if kind in ("vision-encoder", "audio-encoder") and info.encoder is not None:
        what = "this " + info.short().removeprefix("a ").removeprefix("an ")
        _check_geometry(info.encoder, expected, kind, info.path, flag, what, needs)
    elif kind == "authors-trained":
        for geo, what, role in ((info.encoder, "its vision encoder", "vision-encoder"),
                                (info.audio_encoder, "its audio encoder", "audio-encoder")):
            if geo is None:
                raise ModelError(f"{info.path}: no patch embedding for {what} in the authors' checkpoint, given as {flag}")
            _check_geometry(geo, expected, role, info.path, flag, what, needs)
    return info


def check_file(path: str | Path, kind: str, flag: str, expected: Expected | None = VIT_B) -> CheckpointInfo:
    """inspect_checkpoint + require, for a file path: the one call stages make before their work."""
    mel = expected.audio_mel_bins if expected is not None else VIT_B.audio_mel_bins
    return require(kind, inspect_checkpoint(path, audio_mel_bins=mel), flag, expected)
