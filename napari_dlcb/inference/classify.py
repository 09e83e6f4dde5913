"""Class probabilities of a crop classifier, with optional test-time augmentation.

:func:`predict_crops` runs a classifier over crops that are already
normalised; :func:`predict_proba` takes raw images of any size and channel
count and a saved model, and prepares them as the model was trained
(:func:`~napari_dlcb.data.crops.prepare_images`, the stored normaliser).
:func:`predict_heatmaps` does the same for a multiple-instance (MIL) image
classifier and also returns its localisation map on every image's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.crops import dihedral_views, prepare_images, unprepare_map
from napari_dlcb.data.normalize import Normalizer, check_finite
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.state import inference_mode_on

__all__ = ["check_classifier", "predict_crops", "predict_heatmaps", "predict_proba"]


def predict_crops(
    model: nn.Module,
    x: np.ndarray,
    *,
    device: Any = "auto",
    tta: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """Softmax probabilities (N, K) of normalised crops (N, C, S, S).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier ``(B, C, S, S) -> (B, K)`` logits; handed back unchanged.
    x : ndarray, shape (N, C, S, S)
        Normalised crops.
    device : str or torch.device
        "auto", "cpu", "cuda" or "mps".
    tta : bool
        Average over the 8 rotations/flips (test-time augmentation).
    batch_size : int
        Crops per forward pass.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> predict_crops(net, np.zeros((2, 1, 4, 4), np.float32), device="cpu").shape
    (2, 3)
    """
    dev = resolve_device(device)
    out = []
    with inference_mode_on(model, dev):
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(dev)
            views = dihedral_views(xb) if tta else [xb]
            p = torch.stack([torch.softmax(model(v), 1) for v in views]).mean(0)
            out.append(p.cpu().numpy())
    k = getattr(model, "n_classes", None)
    if out and not all(np.isfinite(p).all() for p in out):
        raise DlcbError(
            "the model returned NaN or infinite values (its weights may be broken, e.g. a "
            "training run that diverged)"
        )
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k or 0), np.float32)


def predict_proba(
    model: nn.Module,
    meta: Any,
    images: Sequence[np.ndarray],
    *,
    channel_axis: int | None = None,
    tta: bool = False,
    device: Any = "auto",
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of a saved classifier for raw images.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`napari_dlcb.models.saved.load_model`.
    meta : ModelMeta
        Its metadata (input size, channels, normalisation).
    images : sequence of ndarray
        Raw images of any size/channel count.
    channel_axis : int, optional
        Channel axis of 3-D images.
    tta : bool
        Average over the 8 rotations/flips (test-time augmentation).
    device : str
        "auto", "cpu", "cuda" or "mps".

    Returns
    -------
    probabilities : ndarray (N, K)
    notes : list of str
        What was resized or converted.
    """
    check_classifier(meta)
    x, notes = _prepared(meta, images, channel_axis)
    return predict_crops(model, x, device=device, tta=tta), notes


def check_classifier(meta: Any, *, mil: bool = False) -> None:
    """One-line :class:`DlcbError` unless ``meta`` is a trained classifier (a MIL one if ``mil``).

    Examples
    --------
    >>> from napari_dlcb.models.meta import ModelMeta
    >>> meta = ModelMeta("classification", {"name": "cellclf"}, [], extra={"encoder_only": True})
    >>> try:
    ...     check_classifier(meta)
    ... except DlcbError as err:
    ...     print(err)
    this model is an encoder pretrained without labels; fine-tune it first (train classification --base MODEL_DIR)
    """
    if meta.task != "classification":
        raise DlcbError(f"this is a {meta.task} model, not a classifier")
    if meta.extra.get("encoder_only") or not meta.classes:
        raise DlcbError(
            "this model is an encoder pretrained without labels; fine-tune it first "
            "(train classification --base MODEL_DIR)"
        )
    if mil and not meta.extra.get("mil"):
        raise DlcbError(
            "localisation heatmaps need a multiple-instance model (train classification --mil)"
        )


def _prepared(
    meta: Any, images: Sequence[np.ndarray], channel_axis: int | None
) -> tuple[np.ndarray, list[str]]:
    """Images brought to the model's input size and channels, normalised; the notes."""
    size = int(meta.extra.get("input_size") or 32)
    for i, im in enumerate(images):  # NaN would make every probability NaN: refused, as in training
        check_finite(np.asarray(im), f"image {i + 1} of {len(images)}")
    prep = prepare_images(
        images, size=size, channels=int(meta.in_channels), channel_axis=channel_axis
    )
    norm = Normalizer.from_dict(meta.normalization)
    x = np.stack([norm(im, channel_axis=0) for im in prep.data]).astype(np.float32)
    return x, prep.notes


def predict_heatmaps(
    model: nn.Module,
    meta: Any,
    images: Sequence[np.ndarray],
    *,
    channel_axis: int | None = None,
    target: int | None = None,
    device: Any = "auto",
    batch_size: int = 16,
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Class probabilities and localisation maps of a MIL image classifier.

    Parameters
    ----------
    model : MILClassifier
        From :func:`napari_dlcb.models.saved.load_model`; handed back unchanged.
    meta : ModelMeta
        Its metadata (input size, channels, normalisation, ``extra["mil"]``).
    images : sequence of ndarray
        Raw images of any size/channel count.
    channel_axis : int, optional
        Channel axis of 3-D images.
    target : int, optional
        Class whose map to return (noisy-AND pooling); default each image's
        predicted class. Attention maps are the same for every class.
    device : str
        "auto", "cpu", "cuda" or "mps".
    batch_size : int
        Images per forward pass.

    Returns
    -------
    probabilities : ndarray (N, K)
    maps : list of ndarray
        One float32 map per image on that image's (Y, X) grid (the map on the
        model's input grid, bilinearly upsampled, then the resize and padding
        undone): the relative attention (1 = uniform) or the class's
        instance probability.
    notes : list of str
        What was resized or converted.
    """
    check_classifier(meta, mil=True)
    x, notes = _prepared(meta, images, channel_axis)
    dev = resolve_device(device)
    probs, maps = [], []
    with inference_mode_on(model, dev) as net:
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i : i + batch_size]).to(dev)
            logits, small = net.localise(xb)
            p = torch.softmax(logits, 1)
            k = p.argmax(1) if target is None else torch.full_like(p[:, 0], target).long()
            m = small[:, :1] if small.shape[1] == 1 else small[torch.arange(len(k)), k][:, None]
            up = torch.nn.functional.interpolate(
                m.float(), size=xb.shape[-2:], mode="bilinear", align_corners=False
            )
            probs.append(p.cpu().numpy())
            maps += list(up[:, 0].cpu().numpy())
    shapes = [_grid_shape(im, channel_axis) for im in images]
    out = [unprepare_map(m.astype(np.float32), s).astype(np.float32) for m, s in zip(maps, shapes)]
    return np.concatenate(probs).astype(np.float32), out, notes


def _grid_shape(image: np.ndarray, channel_axis: int | None) -> tuple[int, int]:
    from napari_dlcb.data.images import to_cyx

    return tuple(int(s) for s in to_cyx(image, channel_axis).shape[1:])  # type: ignore[return-value]
