"""The human side of an exported BioImage.IO package: name, lineage, README, cover.

Used by :mod:`napari_dlcb.models.bioimageio_export`. The README is the model
card the zoo shows: what the model does, its input and output, how it was
trained and from what, how to check it, and what to cite. The cover shows the
package's test input beside the model's prediction on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.meta import ModelMeta

__all__ = ["cover_image", "lineage", "readme_text", "sanitize_name"]

#: Colours of classes beyond the third (RGB 0-255), for covers.
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [255, 255, 255],
    ],
    dtype=np.uint8,
)


def sanitize_name(name: str | None, meta: ModelMeta) -> str:
    """A zoo model name: 5-128 letters, digits, spaces and ``_+-()``."""
    text = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", str(name or "")).strip()
    text = re.sub(r"\s+", " ", text)
    if len(text) < 5:
        arch = str(meta.architecture.get("name", "model"))
        text = f"napari-dlcb {meta.task} {arch}"
    return text[:128]


def lineage(meta: ModelMeta) -> dict[str, Any]:
    """Where the model comes from: ``source``, and for a zoo parent its id, name, licence, citations.

    Reads the parent package again when it still exists (fine-tuned models
    keep only its path); an imported package carries its provenance itself.
    """
    source = meta.parent
    builtin = [str(s) for s in (meta.parent, meta.extra.get("source")) if s]
    info: dict[str, Any] = {
        "source": source,
        "builtin": next((s for s in builtin if s.startswith("builtin:")), None),
    }
    own = meta.extra.get("bioimageio")
    if isinstance(own, dict) and own.get("name"):
        info.update({k: own.get(k) for k in ("id", "version", "name", "license", "cite")})
        return info
    if not source or str(source).startswith(("builtin", "scratch", "in-memory")):
        info["name"] = str(source) if source else None
        return info
    path = Path(str(source))
    from napari_dlcb.models.bioimageio_package import is_bioimageio_package, read_description

    info["name"] = path.name
    if path.exists() and is_bioimageio_package(path):
        try:
            descr = read_description(path)
        except DlcbError:
            return info
        info.update(
            id=None if descr.id is None else str(descr.id),
            version=None if descr.version is None else str(descr.version),
            name=descr.name,
            license=None if descr.license is None else str(descr.license),
            cite=[{"text": c.text, "doi": str(c.doi)} for c in descr.cite if c.doi is not None],
        )
    return info


# ------------------------------------------------------------------------------ cover
def _to_rgb01(cyx: np.ndarray) -> np.ndarray:
    """(C, Y, X) -> (Y, X, 3) in [0, 1], each channel stretched between its 1st and 99.8th percentiles."""
    chans = cyx[:3] if cyx.shape[0] >= 3 else np.repeat(cyx[:1], 3, axis=0)
    out = np.empty(chans.shape, np.float32)
    for i, ch in enumerate(chans):
        lo, hi = np.percentile(ch, [1, 99.8])
        out[i] = np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1)
    return out.transpose(1, 2, 0)


def _prediction_rgb(prob: np.ndarray) -> np.ndarray:
    """(K, Y, X) probabilities -> (Y, X, 3) in [0, 1]."""
    if prob.shape[0] == 1:
        return np.repeat(prob[0][..., None], 3, axis=2).clip(0, 1)
    if prob.shape[0] <= 3:  # background dark; the other classes as colours
        rgb = np.zeros((*prob.shape[1:], 3), np.float32)
        for k in range(1, prob.shape[0]):
            rgb += prob[k][..., None] * (_PALETTE[k] / 255.0)
        return rgb.clip(0, 1)
    return _PALETTE[np.argmax(prob, axis=0) % len(_PALETTE)] / 255.0


def _bars(prob: np.ndarray, side: int) -> np.ndarray:
    """A bar chart of class probabilities, (side, side, 3) in [0, 1]."""
    img = np.ones((side, side, 3), np.float32)
    k = len(prob)
    width = max(1, side // (2 * k + 1))
    for i, p in enumerate(prob):
        x0 = (2 * i + 1) * width
        height = int(round(float(p) * (side - 2 * width)))
        img[side - width - height : side - width, x0 : x0 + width] = _PALETTE[1 + i % 8] / 255.0
    return img


def cover_image(x: np.ndarray, y: np.ndarray, meta: ModelMeta) -> Any:
    """The cover: the test input beside the prediction (a ``PIL.Image``, 2:1, at least 256 px tall).

    Parameters
    ----------
    x : ndarray (1, C, Y, X)
        The raw test input.
    y : ndarray (1, K, Y, X) or (1, K)
        The model's output on it (after the activation).
    meta : ModelMeta
        The model's metadata.

    Returns
    -------
    PIL.Image.Image
    """
    from PIL import Image

    left = _to_rgb01(x[0])
    side = max(256, left.shape[0])
    scale = max(1, int(np.ceil(side / max(left.shape[:2]))))
    left = np.kron(left, np.ones((scale, scale, 1), np.float32))
    if y.ndim == 4:
        right = np.kron(_prediction_rgb(y[0]), np.ones((scale, scale, 1), np.float32))
    else:
        right = _bars(y[0], left.shape[0])[:, : left.shape[1]]
    gap = np.ones((left.shape[0], max(2, left.shape[1] // 64), 3), np.float32)
    both = np.concatenate([left, gap, right], axis=1)
    return Image.fromarray((both * 255).round().astype(np.uint8), mode="RGB")


# ----------------------------------------------------------------------------- readme
def _normalisation_text(norm: dict) -> str:
    mode = (norm or {}).get("mode", "none")
    return {
        "per_image_percentile": f"each image on its own: (x - p{norm.get('p_low', 1.0)}) / "
        f"(p{norm.get('p_high', 99.8)} - p{norm.get('p_low', 1.0)}) per channel "
        "(`scale_range` over y, x)",
        "per_image_zscore": "each image on its own to zero mean and unit variance per channel "
        "(`zero_mean_unit_variance` over y, x)",
        "zscore": "with the fixed training mean and standard deviation per channel "
        "(`fixed_zero_mean_unit_variance`)",
        "percentile": "with the fixed training percentiles per channel, (x - low) / (high - low) "
        "(`scale_linear`)",
    }.get(mode, "none: the network takes the raw intensities")


def readme_text(meta: ModelMeta, x_shape: tuple, y_shape: tuple, parent: dict[str, Any]) -> str:
    """The package's ``README.md``: a model card made from the metadata."""
    from napari_dlcb import __version__

    act = meta.output_activation
    out_what = {
        "sigmoid": "the foreground probability (a sigmoid of the logit)",
        "softmax": "one probability per class (a softmax over the channels)",
    }.get(act, "the raw logits (no activation): apply softmax or sigmoid yourself")
    training = meta.extra.get("training") or {}
    lines = [
        f"# {meta.task.capitalize()} model exported by napari-dlcb {__version__}",
        "",
        f"A 2-D {meta.architecture.get('name')} network that {'labels every pixel' if meta.task == 'segmentation' else 'classifies an image crop'} "
        f"as one of: {', '.join(meta.classes)}.",
        "",
        "## Input and output",
        "",
        f"- input: {meta.in_channels} channel(s), axes batch, channel, y, x; test tensor {tuple(x_shape)}.",
        f"- normalisation: {_normalisation_text(meta.normalization)}.",
        f"- output: {out_what}; test tensor {tuple(y_shape)}.",
    ]
    if meta.task == "segmentation":
        lines.append(
            f"- context: {meta.extra.get('halo') or 32} px of halo on each side of a tile."
        )
        if meta.label_kind == "instances":
            pp = meta.extra.get("postprocess") or {}
            lines.append(
                "- instances (napari-dlcb): seeded watershed on the interior probability "
                f"(options {pp or 'defaults'}); other tools see the probabilities only."
            )
    lines += ["", "## Training and lineage", ""]
    if parent.get("name") or parent.get("source"):
        ident = f" (zoo id `{parent['id']}`)" if parent.get("id") else ""
        lines.append(f"- started from: {parent.get('name') or parent.get('source')}{ident}.")
    if training:
        lines.append(
            "- fine-tuning: "
            + ", ".join(f"{k} {v}" for k, v in training.items() if not isinstance(v, (dict, list)))
            + "."
        )
    if meta.label_kind:
        lines.append(f"- trained on {meta.label_kind} labels.")
    lines += _card_of(parent)
    lines += [
        "",
        "## Validation",
        "",
        "The package's test output is the model's own prediction on its test input "
        "(`bioimageio test` reproduces it). Check the model on annotated images of your own "
        "before trusting it: napari-dlcb reports foreground IoU and object-level AP on "
        "held-out images.",
        "",
        "## Use",
        "",
        "In napari-dlcb: `napari-dlcb predict segmentation --model THIS.zip ...`, or choose the "
        "package as the model in the Segmentation dock; fine-tune with "
        "`napari-dlcb train segmentation --base THIS.zip ...`.",
        "",
        "## Cite",
        "",
        "Angermueller C, Pärnamaa T, Parts L, Stegle O. Deep learning for computational "
        "biology. Mol Syst Biol 12:878 (2016). doi:10.15252/msb.20156651",
    ]
    return "\n".join(lines) + "\n"


def _card_of(parent: dict[str, Any]) -> list[str]:
    """The built-in base model's card, demoted one heading level, if there is one."""
    source = str(parent.get("builtin") or "")
    if not source.startswith("builtin:"):
        return []
    from napari_dlcb.models.registry import BUILTIN_MODELS, WEIGHTS_DIR

    entry = BUILTIN_MODELS.get(source.partition(":")[2])
    if entry is None or not entry.card or not (WEIGHTS_DIR / entry.card).is_file():
        return []
    card = (WEIGHTS_DIR / entry.card).read_text(encoding="utf-8")
    return ["", "## The base model", ""] + [
        ("##" + ln) if ln.startswith("#") else ln for ln in card.splitlines()
    ]
