"""The checkpoints `mma` knows by name: what each is, where it comes from, its licence as its source states it.

Two groups. The paper's files: MAE-Face (GitHub release), AudioMAE and the authors' trained
models, as the authors' README (katerynaCh/MMA-DFER) links them. And encoders published on the
Hugging Face hub in timm's format (`hub_id`). Every encoder entry lists the encoder names it
holds the weights of (`encoders`, `ARCH.TAG` as `model.vision_encoder` / `model.audio_encoder`
take them, the first the one to use): a stage finds an encoder's file by that name. A published
file in another layout (safetensors, OpenAI's CLIP names) is converted when it is installed
(`pipeline.weights.convert`). AudioMAE itself is fetched from the hub port
`gaunernst/vit_base_patch16_1024_128.audiomae_as2m`: the same timm tensor names and shapes as
the AudioMAE file `mma` loads (1-channel 16x16 patches, CLS + 64x8 position rows for a
1024x128 fbank), without the MAE decoder, so no browser is needed any more.

Only a source a plain HTTPS request can fetch is `fetchable`; Google Drive files need a browser
(a confirmation page), so for those `mma weights fetch` prints the link and the `mma weights add`
command instead of scraping. `MMA_WEIGHTS_URL_<NAME>` (name upper-cased, every other character
as `_`) replaces an entry's URL — a mirror, or a server on 127.0.0.1 in the tests — and makes it
fetchable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from model.families import DEFAULT_AUDIO_ENCODER, DEFAULT_VISION_ENCODER
from pipeline.core.errors import MMAError

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class WeightSpec:
    """One known checkpoint."""

    name: str
    title: str
    kind: str  # model.inspect kind: vision-encoder | audio-encoder | authors-trained
    filename: str  # the name it gets in the weights folder
    url: str  # the download link (or the page holding it)
    page: str  # where the link is published
    licence: str
    fetchable: bool  # a plain HTTPS GET returns the file
    use: str  # how mma uses it
    sha256: str | None = None  # of the published file, checked after download when known
    note: str = ""
    # encoder names (timm ARCH.TAG, model.vision_encoder / audio_encoder) these are the weights of; first: to use
    encoders: tuple[str, ...] = ()
    hub_id: str | None = None  # Hugging Face hub repository (timm's `hf_hub:` name)
    non_commercial: bool = False

    @property
    def role(self) -> str | None:
        """vision | audio for an encoder, None for a trained model."""
        return {"vision-encoder": "vision", "audio-encoder": "audio"}.get(self.kind)


def hub_file(hub_id: str, filename: str) -> str:
    """The HTTPS URL of `filename` on the main branch of hub repository `hub_id`."""
    return f"{HUB}/{hub_id}/resolve/main/{filename}"


def _hub_encoder(name: str, title: str, kind: str, hub_id: str, published: str, *, encoders: tuple[str, ...],
                 licence: str, non_commercial: bool = False, note: str = "") -> WeightSpec:
    role = "vision" if kind == "vision-encoder" else "audio"
    return WeightSpec(
        name=name, title=title, kind=kind, filename=f"{name}.pth", url=hub_file(hub_id, published),
        page=f"{HUB}/{hub_id}", licence=licence, fetchable=True,
        use=f"the frozen {role} encoder of --set model.{role}_encoder={encoders[0]}",
        note=note, encoders=encoders, hub_id=hub_id, non_commercial=non_commercial)


AUDIOMAE_HUB = "gaunernst/vit_base_patch16_1024_128.audiomae_as2m"

WEIGHTS: dict[str, WeightSpec] = {
    "mae-face": WeightSpec(
        name="mae-face",
        title="MAE-Face ViT-B/16 face encoder (MAE pre-trained on faces)",
        kind="vision-encoder",
        filename="mae_face_pretrain_vit_base.pth",
        url="https://github.com/FuxiVirtualHuman/MAE-Face/releases/latest/download/mae_face_pretrain_vit_base.pth",
        page="https://github.com/FuxiVirtualHuman/MAE-Face/releases",
        licence="MIT (FuxiVirtualHuman/MAE-Face repository licence); cite the MAE-Face papers",
        fetchable=True,
        use="the frozen vision encoder (--vision-ckpt) of cache, train, eval",
        encoders=(DEFAULT_VISION_ENCODER,),
    ),
    "audiomae": WeightSpec(
        name="audiomae",
        title="AudioMAE ViT-B/16 audio encoder (pre-trained on AudioSet-2M, not fine-tuned; timm port on the HF hub)",
        kind="audio-encoder",
        filename="audiomae_pretrained.pth",
        url=hub_file(AUDIOMAE_HUB, "pytorch_model.bin"),
        page=f"{HUB}/{AUDIOMAE_HUB}",
        licence="CC-BY-NC 4.0, non-commercial (the LICENSE file of facebookresearch/AudioMAE, whose weights these are; "
                "the hub card's metadata and AudioMAE's README say CC-BY 4.0)",
        fetchable=True,
        use="the frozen audio encoder (--audio-ckpt) of cache, train, eval",
        encoders=(DEFAULT_AUDIO_ENCODER,),
        note="timm tensor names, 1-channel 16x16 patches, CLS + 64x8 positions for 1024x128 fbank (mean -4.2677393, "
             "std 4.5689974), no MAE decoder: the layout of AudioMAE's own file, loaded as it is. The original file "
             "(Google Drive 1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu, linked from the MMA-DFER README) can still be "
             "registered with `mma weights add audiomae FILE`",
        hub_id=AUDIOMAE_HUB,
        non_commercial=True,
    ),
    "mma-dfer-dfew": WeightSpec(
        name="mma-dfer-dfew",
        title="the authors' trained MMA-DFER models on DFEW (one file per fold)",
        kind="authors-trained",
        filename="mma_dfer_dfew.pth",
        url="https://drive.google.com/drive/folders/1I3dvClr4oVH3h5cGmaFXmTc8aV-nYHof?usp=sharing",
        page="https://github.com/katerynaCh/MMA-DFER",
        licence="trained on DFEW: use them only under the DFEW licence (the authors: 'Please respect the dataset "
                "license when downloading the models!')",
        fetchable=False,
        use="mma eval --official / mma predict --official, or mma model import-official",
        note="a Google Drive folder (needs a browser); add the fold you evaluate",
    ),
    "mma-dfer-mafw": WeightSpec(
        name="mma-dfer-mafw",
        title="the authors' trained MMA-DFER models on MAFW",
        kind="authors-trained",
        filename="mma_dfer_mafw.pth",
        url="https://github.com/katerynaCh/MMA-DFER",
        page="https://github.com/katerynaCh/MMA-DFER",
        licence="trained on MAFW: use them only under the MAFW licence",
        fetchable=False,
        use="mma eval --official / mma predict --official, or mma model import-official",
        note="the authors' README links DFEW models only; if MAFW ones are published, register them with add",
    ),
    "vit_base_patch16_clip_224.openai": _hub_encoder(
        "vit_base_patch16_clip_224.openai", "OpenAI CLIP ViT-B/16 image encoder (WIT-400M, contrastive)",
        "vision-encoder", "timm/vit_base_patch16_clip_224.openai", "pytorch_model.bin",
        encoders=("vit_base_patch16_clip_quickgelu_224.openai", "vit_base_patch16_clip_224.openai"),
        licence="Apache-2.0 (the timm hub card); OpenAI releases CLIP's code and weights under MIT (openai/CLIP)",
        note="the published file is the whole CLIP model in OpenAI's names (text tower included); its image tower is "
             "kept, in timm's names. Trained with QuickGELU: use vit_base_patch16_clip_quickgelu_224"),
    "vit_base_patch16_224.mae": _hub_encoder(
        "vit_base_patch16_224.mae", "MAE ViT-B/16 image encoder (MAE pre-trained on ImageNet-1k, not fine-tuned)",
        "vision-encoder", "timm/vit_base_patch16_224.mae", "model.safetensors",
        encoders=("vit_base_patch16_224.mae",),
        licence="CC-BY-NC 4.0, non-commercial (the timm hub card and timm's pretrained config; facebookresearch/mae)",
        non_commercial=True,
        note="the same architecture as MAE-Face (the default face encoder), pre-trained on ImageNet instead of faces"),
    "vit_small_patch14_dinov2.lvd142m": _hub_encoder(
        "vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14 image encoder (LVD-142M, self-distillation)",
        "vision-encoder", "timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors",
        encoders=("vit_small_patch14_dinov2.lvd142m",),
        licence="Apache-2.0 (the timm hub card and timm's pretrained config; facebookresearch/dinov2)",
        note="14 px patches, 384 wide, layer scale; positions for 518 px (37x37), resized to the run's grid"),
}



def weight_spec(name: str) -> WeightSpec:
    """The registry entry `name` (or a hub id / `hf_hub:` name of one); MMAError listing the known names otherwise."""
    if name in WEIGHTS:
        return WEIGHTS[name]
    hub = name.removeprefix("hf_hub:")
    for spec in WEIGHTS.values():
        if spec.hub_id and hub == spec.hub_id:
            return spec
    raise MMAError(f"unknown checkpoint name {name!r}; known: {', '.join(WEIGHTS)}")


def weights_for_encoder(encoder: str, role: str) -> WeightSpec | None:
    """The entry holding the weights of encoder name `encoder` (timm ARCH.TAG) for `role`, or None.

    A name without a tag matches the one entry of that architecture, if there is exactly one.
    """
    specs = [s for s in WEIGHTS.values() if s.role == role]
    for spec in specs:
        if encoder in spec.encoders:
            return spec
    if "." not in encoder:
        same = [s for s in specs if any(e.split(".", 1)[0] == encoder for e in s.encoders)]
        if len(same) == 1:
            return same[0]
    return None


def fetch_command(name: str) -> str:
    """The command that puts `name` into the weights folder: `mma weights fetch` (plain HTTPS, or a mirror
    set in MMA_WEIGHTS_URL_<NAME>), else `mma weights add NAME FILE` after a browser download."""
    spec = weight_spec(name)
    return f"mma weights fetch {spec.name}" if source_url(spec)[1] else f"mma weights add {spec.name} FILE"


def url_override_var(name: str) -> str:
    """The environment variable that replaces `name`'s URL (MMA_WEIGHTS_URL_ + name, other characters as _)."""
    return "MMA_WEIGHTS_URL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def source_url(spec: WeightSpec) -> tuple[str, bool]:
    """(URL to download from, whether a plain HTTPS request gets it); the env override wins."""
    override = os.environ.get(url_override_var(spec.name))
    if override:
        return override, True
    return spec.url, spec.fetchable
