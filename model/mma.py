"""The MMA-DFER network: two prompted frozen encoders, per-block fusion, joint adaptation, MTT, classifier.

Data flow (docs/architecture.md, "Model"), for frames (n, T, 3, S, S) in [0, 1] and a normalised fbank
(n, 1, 512, 128):

    embed            the vision encoder's input statistics (identity for MAE-Face), then the frozen
                     patch-embedding convs -> vision (n, T, Nv, Dv), audio (n, Na, Da)
    forward_embedded [prefix, patches, prompts] + pos embed; for each fusion pair (vision block jv,
                     audio block ja; `fusion_pairs`, (i, i) for equal depths): audio blocks up to ja,
                     vision blocks up to jv, fusion (+ ITA), progressive prompts after each block;
                     final norms -> frame CLS (n, T, Dv), audio CLS (n, Da);
                     Joint Adaptation Linear D->512 on (frame CLS + audio CLS) (unequal widths: one
                     Linear per encoder, summed) -> (n, T, 512);
                     MTT -> CLS (n, 512) (or the mean over T when MTT is off); Linear -> (n, C)

`forward == forward_embedded ∘ embed`, so the cache can store `embed`'s output.
Unimodal variants (modality vision|audio) are the frozen encoder alone (their config must say
prompts, fusion and temporal "none"; positional embeddings frozen too) followed by a trainable
Linear D->C on its class token (vision: mean over the T frames).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from model.checkpoint import load_encoder_checkpoints
from model.config import ModelConfig
from model.encoders import PromptedEncoder
from model.families import create_timm_encoder, encoder_geometry, encoder_norm
from model.fusion import GatedFusion, build_fusion, fusion_pairs
from model.prompts import PromptTokens
from model.temporal import TemporalAdaptor, TemporalTransformer, ita_heads

log = logging.getLogger(__name__)


class MMADFER(nn.Module):
    """Audio-visual dynamic facial expression recogniser (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg = dataclasses.replace(cfg).validate()
        self.config = cfg
        self.use_vision = cfg.modality in ("both", "vision")
        self.use_audio = cfg.modality in ("both", "audio")
        multimodal = cfg.modality == "both"

        self.vision: PromptedEncoder | None = self._encoder(cfg, "vision", multimodal) if self.use_vision else None
        self.audio: PromptedEncoder | None = self._encoder(cfg, "audio", multimodal) if self.use_audio else None
        if not multimodal:
            for enc in (self.vision, self.audio):
                if enc is not None:
                    enc.freeze_backbone(freeze_pos_embed=True)
        # (vision block, audio block) of each fusion step; a unimodal model steps through its one encoder.
        if multimodal:
            self.block_pairs: list[tuple[int | None, int | None]] = list(
                fusion_pairs(self.vision.depth, self.audio.depth))  # type: ignore[union-attr]
        elif self.vision is not None:
            self.block_pairs = [(i, None) for i in range(self.vision.depth)]
        else:
            self.block_pairs = [(None, i) for i in range(self.audio.depth)]  # type: ignore[union-attr]
        steps = len(self.block_pairs)
        vision_dim = self.vision.embed_dim if self.vision is not None else 0
        audio_dim = self.audio.embed_dim if self.audio is not None else 0
        self.input_norm = encoder_norm(cfg, "vision") if self.vision is not None else None

        self.fusion: nn.ModuleList | None = None
        if multimodal and cfg.fusion != "none":
            self.fusion = nn.ModuleList(
                build_fusion(
                    cfg.fusion,
                    vision_dim=vision_dim,
                    audio_dim=audio_dim,
                    latent=cfg.latent_dim,
                    width=cfg.mult_dim,
                    heads=cfg.mult_heads,
                    mlp_ratio=cfg.mult_mlp_ratio,
                )
                for _ in range(steps)
            )

        # Intermediate temporal adaptors: inside the bottleneck (latent space, the fusion's gate)
        # or, with another fusion kind, on the encoder width with their own gates.
        self.ita: nn.ModuleList | None = None
        self.ita_gates: nn.ParameterList | None = None
        self.ita_in_bottleneck = False
        if multimodal and cfg.temporal in ("ita", "both"):
            self.ita_in_bottleneck = cfg.fusion == "bottleneck"
            in_dim = cfg.latent_dim if self.ita_in_bottleneck else vision_dim
            heads = ita_heads(cfg.ita_dim, cfg.ita_head_dim)
            self.ita = nn.ModuleList(
                TemporalAdaptor(in_dim, cfg.ita_dim, heads, cfg.num_frames) for _ in range(steps)
            )
            if not self.ita_in_bottleneck:
                self.ita_gates = nn.ParameterList(nn.Parameter(torch.zeros(1)) for _ in range(steps))

        self.jam: nn.Linear | None = None
        self.jam_audio: nn.Linear | None = None  # encoders of unequal width: the audio CLS's own projection
        self.temporal: TemporalTransformer | None = None
        if multimodal:
            self.jam = nn.Linear(vision_dim, cfg.temporal_dim)
            if audio_dim != vision_dim:
                self.jam_audio = nn.Linear(audio_dim, cfg.temporal_dim, bias=False)
            if cfg.temporal in ("mtt", "both"):
                self.temporal = TemporalTransformer(
                    cfg.temporal_dim,
                    cfg.temporal_depth,
                    cfg.temporal_heads,
                    cfg.temporal_head_dim,
                    cfg.temporal_mlp_dim,
                    cfg.num_frames,
                )
            self.classifier = nn.Linear(cfg.temporal_dim, cfg.num_classes)
        else:
            self.classifier = nn.Linear(vision_dim or audio_dim, cfg.num_classes)

        # Which checkpoint each encoder holds ({"path", "sha256"}); None = random weights.
        self.encoder_sources: dict[str, dict | None] = {"vision": None, "audio": None}
        self._random_warning_done = False

    @staticmethod
    def _encoder(cfg: ModelConfig, which: str, multimodal: bool) -> PromptedEncoder:
        """The prompts (drawn first, as the authors' order of construction has it), then the timm encoder."""
        name = getattr(cfg, f"{which}_encoder")
        geometry = encoder_geometry(cfg, which)  # no random numbers drawn
        prompts = None
        if multimodal and cfg.prompts != "none":
            intro = cfg.prompt_introductions if cfg.prompts == "progressive" else 0
            prompts = PromptTokens(cfg.num_prompts, geometry.width, depth=geometry.depth, introductions=intro)
        enc = PromptedEncoder(create_timm_encoder(cfg, which), name, prompts)
        if enc.geometry != geometry:
            raise RuntimeError(f"{name}: built geometry {enc.geometry} differs from the predicted {geometry}")
        return enc

    def fusion_pairs(self) -> list[tuple[int, int]]:
        """(vision block, audio block) after which each fusion step acts; [] for a unimodal model."""
        if self.vision is None or self.audio is None:
            return []
        return [(int(v), int(a)) for v, a in self.block_pairs]  # type: ignore[arg-type]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the encoder blocks in training: activations recomputed in backward (less memory, same gradients)."""
        for enc in (self.vision, self.audio):
            if enc is not None:
                enc.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------ stage 1

    def embed(self, frames: torch.Tensor | None, spec: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen patch tokens: frames (n,T,3,S,S) -> (n,T,Nv,D); spec (n,1,F,M) -> (n,Na,D).

        The input of a branch the model does not have may be None; its tokens are then an
        empty tensor ((n, T, 0, D) or (n, 0, D)).
        """
        cfg = self.config
        n = self._batch(frames, spec)
        ref = next(self.parameters())
        if self.vision is not None:
            if frames is None or frames.dim() != 5 or tuple(frames.shape[2:]) != (3, cfg.image_size, cfg.image_size):
                raise ValueError(
                    f"frames must be (n, T, 3, {cfg.image_size}, {cfg.image_size}); got "
                    f"{None if frames is None else tuple(frames.shape)}"
                )
            t = frames.shape[1]
            x = self._normalise_frames(frames.reshape(n * t, *frames.shape[2:]))
            vt = self.vision.embed_patches(x).view(n, t, -1, self.vision.embed_dim)
        else:
            t = frames.shape[1] if frames is not None and frames.dim() == 5 else 0
            vt = ref.new_zeros(n, t, 0, self.audio.embed_dim if self.audio is not None else 0)
        if self.audio is not None:
            want = (1, cfg.audio_frames, cfg.audio_mel_bins)
            if spec is None or spec.dim() != 4 or tuple(spec.shape[1:]) != want:
                raise ValueError(
                    f"spectrogram must be (n, {', '.join(map(str, want))}); got "
                    f"{None if spec is None else tuple(spec.shape)}"
                )
            at = self.audio.embed_patches(spec)
        else:
            at = ref.new_zeros(n, 0, self.vision.embed_dim if self.vision is not None else 0)
        return vt, at

    def _normalise_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel with the vision encoder's statistics; untouched when they are the identity."""
        norm = self.input_norm
        if norm is None or norm.identity:
            return x
        mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @staticmethod
    def _batch(frames: torch.Tensor | None, spec: torch.Tensor | None) -> int:
        sizes = {x.shape[0] for x in (frames, spec) if x is not None}
        if not sizes:
            raise ValueError("give frames and/or a spectrogram")
        if len(sizes) > 1:
            raise ValueError(f"frames and spectrogram batch sizes differ: {sorted(sizes)}")
        return sizes.pop()

    # ------------------------------------------------------------------ stage 2

    def forward_embedded(self, vision_tokens: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Everything after the patch embeddings: tokens -> logits (n, C)."""
        v_cls, a_cls = self.encode_embedded(vision_tokens, audio_tokens)
        return self.classify(v_cls, a_cls)

    def forward(self, frames: torch.Tensor | None, spec: torch.Tensor | None) -> torch.Tensor:
        """frames (n, T, 3, S, S) float in [0, 1], spec (n, 1, 512, 128) normalised -> logits (n, C)."""
        return self.forward_embedded(*self.embed(frames, spec))

    def encode_embedded(
        self, vision_tokens: torch.Tensor, audio_tokens: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The encoders with prompts and fusion: -> frame CLS (n, T, D) and audio CLS (n, D) (None if absent)."""
        if not torch.compiler.is_compiling():  # a Python side effect: kept out of compiled graphs
            self._warn_if_random()
        cfg = self.config
        n = audio_tokens.shape[0] if self.audio is not None else vision_tokens.shape[0]
        v = a = None
        t = vision_tokens.shape[1]
        if self.vision is not None:
            if vision_tokens.dim() != 4 or vision_tokens.shape[2:] != (self.vision.num_patches, self.vision.embed_dim):
                raise ValueError(
                    f"vision tokens must be (n, T, {self.vision.num_patches}, {self.vision.embed_dim}); "
                    f"got {tuple(vision_tokens.shape)}"
                )
            if t > cfg.num_frames and (self.temporal is not None or self.ita is not None):
                raise ValueError(f"model built for at most {cfg.num_frames} frames, got {t}")
            v = self.vision.start(vision_tokens.reshape(n * t, *vision_tokens.shape[2:]))
        if self.audio is not None:
            if audio_tokens.dim() != 3 or audio_tokens.shape[1:] != (self.audio.num_patches, self.audio.embed_dim):
                raise ValueError(
                    f"audio tokens must be (n, {self.audio.num_patches}, {self.audio.embed_dim}); "
                    f"got {tuple(audio_tokens.shape)}"
                )
            if self.vision is not None and vision_tokens.shape[0] != n:
                raise ValueError(f"vision and audio token batch sizes differ: {vision_tokens.shape[0]} vs {n}")
            a = self.audio.start(audio_tokens)

        next_v = next_a = 0  # the next block of each encoder to run
        for i, (jv, ja) in enumerate(self.block_pairs):
            if a is not None:
                a = self._run_blocks(self.audio, a, next_a, ja)  # type: ignore[arg-type]
                next_a = ja + 1  # type: ignore[operator]
            if v is not None:
                v = self._run_blocks(self.vision, v, next_v, jv)  # type: ignore[arg-type]
                next_v = jv + 1  # type: ignore[operator]
            if self.fusion is not None:
                fuse: GatedFusion = self.fusion[i]  # type: ignore[assignment]
                ita = self.ita[i] if self.ita_in_bottleneck else None  # type: ignore[index]
                v, a = fuse(v, a, n, ita=ita)
            if self.ita is not None and not self.ita_in_bottleneck:
                v = self._standalone_ita(i, v, n)  # type: ignore[arg-type]
            if v is not None:
                v = self.vision.add_prompts(jv, v)  # type: ignore[union-attr,arg-type]
            if a is not None:
                a = self.audio.add_prompts(ja, a)  # type: ignore[union-attr,arg-type]

        v_cls = self.vision.finish(v).view(n, t, -1) if v is not None else None  # type: ignore[union-attr]
        a_cls = self.audio.finish(a) if a is not None else None  # type: ignore[union-attr]
        return v_cls, a_cls

    @staticmethod
    def _run_blocks(enc: PromptedEncoder, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Blocks first..last of `enc`, with the prompts of every block but the last (those follow the fusion)."""
        for j in range(first, last + 1):
            if j > first:
                x = enc.add_prompts(j - 1, x)
            x = enc.block(j, x)
        return x

    def _standalone_ita(self, i: int, v: torch.Tensor, n: int) -> torch.Tensor:
        bt, lv, dim = v.shape
        t = bt // n
        update = self.ita[i](v[:, 0].reshape(n, t, dim))  # type: ignore[index]
        gate = torch.tanh(self.ita_gates[i])  # type: ignore[index]
        return v + gate * update.reshape(bt, 1, dim)

    def classify(self, v_cls: torch.Tensor | None, a_cls: torch.Tensor | None) -> torch.Tensor:
        """Joint adaptation, temporal transformer (or mean over frames) and the classifier."""
        if self.jam is None:  # unimodal
            feat = v_cls.mean(1) if v_cls is not None else a_cls
            return self.classifier(feat)
        if self.jam_audio is None:
            joint = self.jam(v_cls + a_cls[:, None, :])  # type: ignore[index,operator]
        else:
            joint = self.jam(v_cls) + self.jam_audio(a_cls)[:, None, :]  # type: ignore[index,operator,misc]
        feat = self.temporal(joint) if self.temporal is not None else joint.mean(1)
        return self.classifier(feat)

    # ------------------------------------------------------------------ helpers

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every tensor the optimiser should see."""
        return [(k, p) for k, p in self.named_parameters() if p.requires_grad]

    def _warn_if_random(self) -> None:
        if self._random_warning_done:
            return
        self._random_warning_done = True
        random = [w for w, enc in (("vision", self.vision), ("audio", self.audio))
                  if enc is not None and self.encoder_sources[w] is None]
        if random:
            log.warning(
                "MMA-DFER is running with RANDOMLY INITIALISED %s encoder(s): no MAE-Face/AudioMAE checkpoint "
                "was loaded, so the frozen features are noise (fine for tests and the demo, not for results)",
                " and ".join(random),
            )


def build_model(cfg: ModelConfig, *, vision_ckpt: str | None = None, audio_ckpt: str | None = None) -> MMADFER:
    """Build MMA-DFER for `cfg`; optionally load the encoder checkpoints right away."""
    model = MMADFER(cfg)
    if vision_ckpt or audio_ckpt:
        load_encoder_checkpoints(model, vision_ckpt, audio_ckpt)
    return model
