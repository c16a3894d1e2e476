"""Which timm models can be MMA-DFER's encoders, by name: families, pretrained tags, input statistics, geometry.

An encoder is named as timm names models, `ARCH[.TAG]` (`vit_base_patch16_clip_224.openai`):
ARCH is the timm architecture that is built (with `pretrained=False`; weights come from the
user's checkpoint file), TAG says which pre-trained weights the encoder stands for, and so
which input statistics it was trained with (timm's `pretrained_cfg`; no tag: timm's default
tag of ARCH). Two tags are mma's own, for the paper's pair (`DEFAULT_*`):

    vit_base_patch16_224.mae_face       MAE-Face: fed pixels in [0, 1], as the authors do (no mean/std)
    vit_base_patch16_224.audiomae_as2m  AudioMAE (AudioSet-2M): 1 input channel, fbank mean/std below

Supported families (`SUPPORTED`): ViTs of `timm.models.vision_transformer` with a class token
(the MAE layout `vit_*_patch16_224`, CLIP `vit_*_clip_*` incl. QuickGELU, DINOv2 `vit_*_dinov2`
incl. register tokens) and EVA-02 (`eva02_*`, timm's `Eva`: rotary position embedding, SwiGLU).
Every encoder reads its class token out after the final norm (`global_pool="token"`).

Geometry (`ViTGeometry`: width, depth, heads, MLP width, activation, patch size, input channels,
patch grid, class/register tokens, pre-norm, layer scale, RoPE) is read off a built timm model
(`read_geometry`), never assumed: `encoder_geometry(cfg, which)` builds the encoder on the meta
device (no memory, no random numbers drawn) and caches it. Only the paper's architecture
(`vit_base_patch16_224`) has a declared geometry (`_declared_geometry`), so that validating the
default configs imports no timm; a test holds it equal to what timm builds.

This module imports neither torch nor timm at import time (`model.config` uses it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from model.errors import ModelConfigError

DEFAULT_VISION_ENCODER = "vit_base_patch16_224.mae_face"
DEFAULT_AUDIO_ENCODER = "vit_base_patch16_224.audiomae_as2m"
ENCODER_ROLES = ("vision", "audio")

# AudioMAE's (and AST's) AudioSet fbank statistics; the spectrogram is fed as (x - mean) / (2 * std).
FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974

# timm modules whose models fit the block interface, and the family each is.
FAMILY_MODULES = {"timm.models.vision_transformer": "ViT", "timm.models.eva": "EVA-02"}
SUPPORTED = ("ViTs with a class token from timm.models.vision_transformer (vit_*_patch16_224 MAE layout, "
             "vit_*_clip_* incl. *_quickgelu_*, vit_*_dinov2 incl. *_reg4_*) and EVA-02 (eva02_*)")


@dataclass(frozen=True)
class InputNorm:
    """The statistics an encoder's input is normalised with: one value per input channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std)


# mma's own tags (the weights timm does not host), with the statistics the paper's pair is fed with.
MMA_TAGGED = {
    DEFAULT_VISION_ENCODER: InputNorm(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    DEFAULT_AUDIO_ENCODER: InputNorm(mean=(FBANK_MEAN,), std=(FBANK_STD,)),
}


@dataclass(frozen=True)
class ViTGeometry:
    """An encoder's shape as the built timm model has it (at the run's input size)."""

    name: str
    family: str  # "ViT" | "EVA-02"
    width: int
    depth: int
    heads: int
    mlp_hidden: int
    act: str  # the MLP activation class: GELU, QuickGELU, SiLU (SwiGLU), ...
    patch_size: tuple[int, int]
    in_chans: int
    grid: tuple[int, int]  # patch grid at the run's input size
    class_token: bool
    reg_tokens: int
    pos_embed_prefix: bool  # pos_embed has rows for the prefix tokens (False: timm's no_embed_class)
    pre_norm: bool  # a norm before the blocks (CLIP's ln_pre)
    layer_scale: bool
    rope: bool

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def describe(self) -> str:
        """One line: `vit_base_patch16_224.mae_face: ViT 768 wide, 12 blocks, 12 heads, 16x16 patches, ...`."""
        extras = [f"{self.reg_tokens} register tokens" if self.reg_tokens else "",
                  "pre-norm" if self.pre_norm else "", "layer scale" if self.layer_scale else "",
                  "RoPE" if self.rope else ""]
        tail = "".join(f", {e}" for e in extras if e)
        return (f"{self.name}: {self.family} {self.width} wide, {self.depth} blocks, {self.heads} heads, "
                f"MLP {self.mlp_hidden} {self.act}, {self.patch_size[0]}x{self.patch_size[1]} patches, "
                f"{self.grid[0]}x{self.grid[1]} grid, {self.in_chans} input channel(s){tail}")


# --------------------------------------------------------------------------- names


def split_name(name: str) -> tuple[str, str | None]:
    """`ARCH.TAG` -> (ARCH, TAG); no tag -> (ARCH, None)."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _timm() -> Any:
    import timm  # heavy (seconds): only names other than the paper's pair need it

    return timm


def family_of(name: str, field: str = "encoder") -> str:
    """The family of a timm name ("ViT" | "EVA-02"); ModelConfigError (one line, the supported families) else."""
    arch, tag = split_name(name)
    if name in MMA_TAGGED:
        return "ViT"
    timm = _timm()
    from timm.models import get_pretrained_cfg
    from timm.models._registry import model_entrypoint

    if not arch or not timm.is_model(arch):
        raise ModelConfigError(f"{field}={name!r}: timm has no model {arch!r}; supported: {SUPPORTED}")
    module = model_entrypoint(arch).__module__
    if module not in FAMILY_MODULES:
        raise ModelConfigError(f"{field}={name!r} is a {module.rsplit('.', 1)[-1]} model, not a ViT mma can adapt; "
                               f"supported: {SUPPORTED}")
    if tag is not None:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            raise ModelConfigError(f"{field}={name!r}: timm knows no pretrained tag {tag!r} for {arch} "
                                   f"(mma's own: {', '.join(MMA_TAGGED)})") from None
    return FAMILY_MODULES[module]


def input_norm(name: str, which: str) -> InputNorm:
    """The statistics `name` was trained with, for the `which` input (vision: 3 channels; audio: 1).

    mma's tags: the paper's (see MMA_TAGGED). timm names: the tag's `pretrained_cfg` mean/std. An
    audio encoder whose weights were trained on images has no fbank statistics of its own: it
    gets AudioSet's (FBANK_MEAN/STD), as AST and AudioMAE use; a vision encoder without a
    pretrained config gets ImageNet's (timm's default).
    """
    field = f"model.{which}_encoder"
    if name in MMA_TAGGED:
        norm = MMA_TAGGED[name]
    else:
        family_of(name, field)
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is None or cfg.mean is None:
            norm = InputNorm(tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
        else:
            norm = InputNorm(tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std))
    channels = 3 if which == "vision" else 1
    if len(norm.mean) == channels:
        return norm
    if which == "audio":
        return InputNorm((FBANK_MEAN,), (FBANK_STD,))
    raise ModelConfigError(f"{field}={name!r} was trained on {len(norm.mean)}-channel input (a spectrogram "
                           "encoder?), the vision encoder takes RGB faces")


def encoder_norm(cfg: Any, which: str) -> InputNorm:
    """The statistics `cfg`'s `which` input is normalised with: `model.{which}_mean/std` where set, else the encoder's."""
    mean, std = getattr(cfg, f"{which}_mean"), getattr(cfg, f"{which}_std")
    own = input_norm(getattr(cfg, f"{which}_encoder"), which) if mean is None or std is None else None

    def values(v: Any, fallback: tuple[float, ...]) -> tuple[float, ...]:
        if v is None:
            return fallback
        return tuple(float(x) for x in v) if isinstance(v, (tuple, list)) else (float(v),)

    norm = InputNorm(values(mean, own.mean if own else ()), values(std, own.std if own else ()))
    channels = 3 if which == "vision" else 1
    if len(norm.mean) != channels or len(norm.std) != channels:
        raise ModelConfigError(f"model.{which}_mean/std must give {channels} value(s) (got {norm.mean}, {norm.std})")
    return norm


# --------------------------------------------------------------------------- building


def timm_kwargs(cfg: Any, which: str) -> dict[str, Any]:
    """The keyword arguments `timm.create_model(ARCH, **kwargs)` builds `cfg`'s `which` encoder with.

    Input: vision S x S RGB; audio the (frames x mel bins) spectrogram, 1 channel. Geometry
    overrides (None: the architecture's own) apply per encoder (`vision_depth`, ...) or, failing
    that, to both (`depth`, `embed_dim`, `num_heads`, `mlp_ratio`, `patch_size`).
    """
    if which not in ENCODER_ROLES:
        raise ValueError(f"encoder role {which!r} is not one of {', '.join(ENCODER_ROLES)}")
    kw: dict[str, Any] = dict(pretrained=False, num_classes=0, global_pool="token", drop_path_rate=cfg.drop_path)
    if which == "vision":
        kw.update(in_chans=3, img_size=(cfg.image_size, cfg.image_size))
    else:
        kw.update(in_chans=1, img_size=(cfg.audio_frames, cfg.audio_mel_bins))
    for key in ("embed_dim", "depth", "num_heads"):
        value = getattr(cfg, f"{which}_{key}", None)
        value = getattr(cfg, key) if value is None else value
        if value is not None:
            kw[key] = value
    for key in ("mlp_ratio", "patch_size"):
        if getattr(cfg, key) is not None:
            kw[key] = getattr(cfg, key)
    return kw


def create_timm_encoder(cfg: Any, which: str) -> Any:
    """The timm model of `cfg`'s `which` encoder (random weights, on the current default device)."""
    name = getattr(cfg, f"{which}_encoder")
    family_of(name, f"model.{which}_encoder")
    return _create(name, which, timm_kwargs(cfg, which))


def read_geometry(vit: Any, name: str, which: str | None = None) -> ViTGeometry:
    """The geometry of a built timm model; ModelConfigError naming what is missing for a model that does not fit."""
    from torch import nn  # torch: only once a model exists

    field = f"model.{which}_encoder={name!r}" if which else name
    needed = ("patch_embed", "blocks", "pos_embed", "cls_token", "norm", "norm_pre", "pos_drop")
    missing = [a for a in needed if not hasattr(vit, a)]
    proj = getattr(getattr(vit, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        missing.append("patch_embed.proj (a patch convolution)")
    if missing:
        raise ModelConfigError(f"{field}: not a ViT-style model (no {', '.join(missing)}); supported: {SUPPORTED}")
    problems = []
    if vit.cls_token is None:
        problems.append("no class token (mma reads the class token out)")
    if vit.pos_embed is None:
        problems.append("no absolute position embedding")
    if getattr(vit, "dynamic_img_size", False):
        problems.append("dynamic image size")
    patch_drop = getattr(vit, "patch_drop", None)
    if patch_drop is not None and not isinstance(patch_drop, nn.Identity):
        problems.append("patch dropout")
    rope = getattr(vit, "rope", None)
    if rope is not None:
        from timm.layers import RotaryEmbeddingCat

        if not isinstance(rope, RotaryEmbeddingCat) or getattr(vit, "rope_mixed", False):
            problems.append(f"a {type(rope).__name__} rotary embedding (only timm's RotaryEmbeddingCat fits)")
    if problems:
        raise ModelConfigError(f"{field}: does not fit mma's encoder interface: {'; '.join(problems)}; "
                               f"supported: {SUPPORTED}")
    block = vit.blocks[0]
    mlp = block.mlp
    fc1 = getattr(mlp, "fc1", None) or getattr(mlp, "fc1_x", None)
    act = getattr(mlp, "act", None)
    layer_scale = (getattr(block, "ls1", None) is not None and not isinstance(block.ls1, nn.Identity)) or \
        getattr(block, "gamma_1", None) is not None
    reg = getattr(vit, "reg_token", None)
    module = type(vit).__module__
    return ViTGeometry(
        name=name,
        family=FAMILY_MODULES.get(module, type(vit).__name__),
        width=int(proj.out_channels),
        depth=len(vit.blocks),
        heads=int(block.attn.num_heads),
        mlp_hidden=int(fc1.out_features) if fc1 is not None else 0,
        act=type(act).__name__ if act is not None else "none",
        patch_size=tuple(int(p) for p in vit.patch_embed.patch_size),  # type: ignore[arg-type]
        in_chans=int(proj.in_channels),
        grid=tuple(int(g) for g in vit.patch_embed.grid_size),  # type: ignore[arg-type]
        class_token=vit.cls_token is not None,
        reg_tokens=int(reg.shape[1]) if reg is not None else 0,
        pos_embed_prefix=not getattr(vit, "no_embed_class", False),
        pre_norm=not isinstance(vit.norm_pre, nn.Identity),
        layer_scale=bool(layer_scale),
        rope=rope is not None,
    )


def _declared_geometry(cfg: Any, which: str) -> ViTGeometry | None:
    """The geometry of the paper's architecture (vit_base_patch16_224) with `cfg`'s overrides, without timm."""
    name = getattr(cfg, f"{which}_encoder")
    if split_name(name)[0] != "vit_base_patch16_224":
        return None
    kw = timm_kwargs(cfg, which)
    width, heads = kw.get("embed_dim", 768), kw.get("num_heads", 12)
    patch = kw.get("patch_size", 16)
    h, w = kw["img_size"]
    if width % heads or h % patch or w % patch:
        return None  # let timm build it and say what is wrong
    return ViTGeometry(name=name, family="ViT", width=width, depth=kw.get("depth", 12), heads=heads,
                       mlp_hidden=int(width * kw.get("mlp_ratio", 4.0)), act="GELU", patch_size=(patch, patch),
                       in_chans=kw["in_chans"], grid=(h // patch, w // patch), class_token=True, reg_tokens=0,
                       pos_embed_prefix=True, pre_norm=False, layer_scale=False, rope=False)


@functools.lru_cache(maxsize=64)
def _built_geometry(name: str, which: str, kw_items: tuple[tuple[str, Any], ...]) -> ViTGeometry:
    import torch  # the meta device: a ViT-B is built in ~0.1 s without memory or random numbers

    with torch.device("meta"):
        vit = _create(name, which, dict(kw_items))
    return read_geometry(vit, name, which)


def _create(name: str, which: str, kw: dict[str, Any]) -> Any:
    field = f"model.{which}_encoder"
    try:
        return _timm().create_model(split_name(name)[0], **kw)
    except (AssertionError, TypeError, ValueError) as exc:  # timm's checks of the geometry / an unknown kwarg
        shown = ", ".join(f"{k}={v}" for k, v in kw.items() if k not in ("pretrained", "num_classes"))
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "class token" in reason.lower():  # timm: "Token pooling needs the class token."
            raise ModelConfigError(f"{field}={name!r} has no class token (mma reads the class token out); "
                                   f"supported: {SUPPORTED}") from None
        raise ModelConfigError(f"{field}={name!r}: timm cannot build it with {shown} ({reason})") from None


def encoder_geometry(cfg: Any, which: str) -> ViTGeometry:
    """The geometry of `cfg`'s `which` encoder: declared for the paper's architecture, else built on meta (cached)."""
    declared = _declared_geometry(cfg, which)
    if declared is not None:
        return declared
    name = getattr(cfg, f"{which}_encoder")
    family_of(name, f"model.{which}_encoder")
    kw = timm_kwargs(cfg, which)
    return _built_geometry(name, which, tuple(sorted(kw.items())))
