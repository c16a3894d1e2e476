"""The checkpoints `mma` knows by name: what each is, where it comes from, its licence note.

Sources as the authors' README (katerynaCh/MMA-DFER) gives them. Only a source a plain HTTPS
request can fetch is `fetchable`; Google Drive files need a browser (a confirmation page), so
for those `mma weights fetch` prints the link and the `mma weights add` command instead of
scraping. `MMA_WEIGHTS_URL_<NAME>` (name upper-cased, `-` as `_`) replaces an entry's URL —
a mirror, or a server on 127.0.0.1 in the tests — and makes it fetchable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.core.errors import MMAError


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
    sha256: str | None = None  # checked after download when known
    note: str = ""


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
    ),
    "audiomae": WeightSpec(
        name="audiomae",
        title="AudioMAE ViT-B/16 audio encoder (pre-trained on AudioSet-2M, not fine-tuned)",
        kind="audio-encoder",
        filename="audiomae_pretrained.pth",
        url="https://drive.google.com/file/d/1rRsmU8x7D-x4BvcPyroUJwU18eixNfKg/view?usp=sharing",
        page="https://github.com/facebookresearch/AudioMAE",
        licence="CC-BY 4.0 (facebookresearch/AudioMAE)",
        fetchable=False,
        use="the frozen audio encoder (--audio-ckpt) of cache, train, eval",
        note="a Google Drive file (needs a browser). The MMA-DFER README links Drive id "
             "1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu and says to extract it and name it audiomae_pretrained.pth",
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
}

ENCODERS = {"vision": "mae-face", "audio": "audiomae"}  # which entry a stage takes for each encoder


def weight_spec(name: str) -> WeightSpec:
    """The registry entry `name`; MMAError listing the known names otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise MMAError(f"unknown checkpoint name {name!r}; known: {', '.join(WEIGHTS)}") from None


def url_override_var(name: str) -> str:
    """The environment variable that replaces `name`'s URL."""
    return "MMA_WEIGHTS_URL_" + name.upper().replace("-", "_")


def source_url(spec: WeightSpec) -> tuple[str, bool]:
    """(URL to download from, whether a plain HTTPS request gets it); the env override wins."""
    override = os.environ.get(url_override_var(spec.name))
    if override:
        return override, True
    return spec.url, spec.fetchable
