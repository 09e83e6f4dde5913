"""Per-object features from a network and their 2-D embedding.

:func:`object_features` pools a layer's activations inside every instance
label (or, for a crop classifier, takes its pooled features of a crop centred
on each object); :func:`embed` projects them to 2-D with PCA (NumPy SVD),
or UMAP / t-SNE where ``umap-learn`` / ``scikit-learn`` are installed.

Importing this module does not import torch (only :func:`object_features`
needs it), so a widget can list :func:`available_methods` and call
:func:`embed` without paying for the torch import on the GUI thread.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["UMAP_PCA_DIMS", "ObjectFeatures", "available_methods", "embed", "object_features"]

#: UMAP runs on the first principal components of wider features (as for single-cell data)
UMAP_PCA_DIMS = 50


@dataclass
class ObjectFeatures:
    """Features of every object.

    Attributes
    ----------
    ids : ndarray of int, shape (N,)
        Label value of each object.
    features : ndarray of float32, shape (N, F)
    centres : ndarray of float, shape (N, 2)
        Centroid (row, col) of each object.
    notes : list of str
        Messages for the user.
    """

    ids: np.ndarray
    features: np.ndarray
    centres: np.ndarray
    notes: list[str] = field(default_factory=list)


def object_features(
    model: nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    layer: str | nn.Module | None = None,
    crop_size: int | None = None,
    channel_axis: int | None = None,
    batch_size: int = 128,
    device: str = "cpu",
) -> ObjectFeatures:
    """Per-object features: a layer's activations averaged inside each instance.

    Two ways, chosen by ``crop_size``:

    * ``crop_size=None``: run the model once on the whole (normalised) image,
      upsample ``layer``'s output bilinearly to the image grid and average it
      over each object's pixels (any fully convolutional model, e.g. a U-Net);
    * ``crop_size=S``: cut an S x S crop centred on each object and take the
      model's ``features(crop)`` (a crop classifier's pooled representation).

    Parameters
    ----------
    model : torch.nn.Module
        The network; with ``crop_size`` it must have a ``features`` method.
    image : ndarray
        Normalised image, (Y, X) or with a channel axis.
    labels : ndarray of int, shape (Y, X)
        Instance labels.
    layer : str or torch.nn.Module, optional
        Whole-image mode: default the last convolution larger than 1x1.
    crop_size : int, optional
        Crop mode side length.
    channel_axis : int, optional
        Channel axis of a multichannel image.
    batch_size : int
        Crops per forward pass.
    device : str
        "cpu", "cuda" or "auto".

    Returns
    -------
    ObjectFeatures

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    >>> lab = np.zeros((16, 16), int); lab[2:6, 2:6] = 1; lab[9:14, 8:15] = 2
    >>> of = object_features(m, np.random.rand(16, 16), lab, layer="0")
    >>> of.ids.tolist(), of.features.shape
    ([1, 2], (2, 4))
    """
    img = np.asarray(image, dtype=np.float32)
    if crop_size is not None:
        return _crop_features(model, img, labels, int(crop_size), channel_axis, batch_size, device)
    return _pooled_features(model, img, np.asarray(labels), layer, channel_axis, device)


def _crop_features(
    model: nn.Module,
    img: np.ndarray,
    labels: np.ndarray,
    crop_size: int,
    channel_axis: int | None,
    batch_size: int,
    device: str,
) -> ObjectFeatures:
    """``model.features`` of a crop centred on each object."""
    import torch

    from napari_dlcb.data.cells import object_crops
    from napari_dlcb.device import resolve_device
    from napari_dlcb.models.state import inference_mode_on

    if not hasattr(model, "features"):
        raise DlcbError("crop mode needs a classifier with a features() method")
    dev = resolve_device(device)
    oc = object_crops(img, labels, size=crop_size, channel_axis=channel_axis)
    feats = []
    with inference_mode_on(model, dev):
        for i in range(0, len(oc.crops), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(oc.crops[i : i + batch_size]))
            feats.append(model.features(xb.float().to(dev)).cpu().numpy())
    return ObjectFeatures(oc.ids, np.concatenate(feats).astype(np.float32), oc.centres, oc.notes)


def _pooled_features(
    model: nn.Module,
    img: np.ndarray,
    lab: np.ndarray,
    layer: str | nn.Module | None,
    channel_axis: int | None,
    device: str,
) -> ObjectFeatures:
    """A layer's activations on the whole image, upsampled, averaged inside each object."""
    import torch
    from scipy import ndimage as ndi
    from torch import nn

    from napari_dlcb.data.cells import object_ids
    from napari_dlcb.interpret.common import resolve_layer
    from napari_dlcb.interpret.network import layer_activations

    if lab.shape != img.shape[-2:] and lab.shape != img.shape[:2]:
        raise DlcbError(f"image {img.shape} and labels {lab.shape} differ in shape")
    ids = object_ids(lab)
    if ids.size == 0:
        raise DlcbError("the labels layer has no objects: segment or paint some cells first")
    mod = resolve_layer(model, layer)
    act = layer_activations(model, img, layer=mod, channel_axis=channel_axis, device=device)
    at = torch.from_numpy(act)[None]
    if act.shape[-2:] != lab.shape:
        at = nn.functional.interpolate(at, size=lab.shape, mode="bilinear", align_corners=False)
    a = at[0].numpy()
    lab64 = lab.astype(np.int64, copy=False).ravel()
    counts = np.bincount(lab64, minlength=int(ids.max()) + 1)
    feats = np.empty((len(ids), a.shape[0]), np.float32)
    for f in range(a.shape[0]):
        sums = np.bincount(lab64, weights=a[f].ravel(), minlength=len(counts))
        feats[:, f] = sums[ids] / counts[ids]
    centres = np.asarray(ndi.center_of_mass(np.ones_like(lab), lab, ids), float).reshape(-1, 2)
    return ObjectFeatures(ids.astype(np.int64), feats, centres, [])


def _pca(x: np.ndarray, n_components: int) -> np.ndarray:
    """Project centred ``x`` on its first principal axes (sign fixed: largest loading > 0)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_components, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    out = x @ (comps * signs[:, None]).T
    if k < n_components:
        out = np.pad(out, ((0, 0), (0, n_components - k)))
    return out


def available_methods() -> list[str]:
    """Embedding methods usable here: always "pca"; "umap"/"tsne" when installed.

    Examples
    --------
    >>> "pca" in available_methods()
    True
    """
    out = ["pca"]
    if importlib.util.find_spec("umap") is not None:
        out.append("umap")
    if importlib.util.find_spec("sklearn") is not None:
        out.append("tsne")
    return out


def embed(
    features: np.ndarray,
    *,
    method: str = "pca",
    n_components: int = 2,
    standardize: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Project features (N, F) to (N, n_components).

    Parameters
    ----------
    features : ndarray, shape (N, F)
    method : {"pca", "umap", "tsne"}
        PCA always works (instant); UMAP needs ``umap-learn`` (its first use in
        a process compiles code with numba: 10 s on a quiet CPU, a minute or more
        on a busy one; about a second after that), t-SNE ``scikit-learn`` (seconds).
        UMAP runs on the first :data:`UMAP_PCA_DIMS` principal components.
    n_components : int
        Output dimensions.
    standardize : bool
        Scale every feature to zero mean and unit variance first.
    seed : int
        Seed for UMAP / t-SNE; PCA's sign is fixed (largest loading positive).

    Returns
    -------
    ndarray of float32, shape (N, n_components)

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(20, 5))
    >>> embed(x).shape
    (20, 2)
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DlcbError(f"features must be a non-empty (objects, features) array, got {x.shape}")
    if not np.isfinite(x).all():
        raise DlcbError("features contain NaN or infinite values")
    if x.shape[0] < 2:
        raise DlcbError("an embedding needs at least 2 objects")
    x = x - x.mean(0)
    if standardize:
        sd = x.std(0)
        x = x / np.where(sd > 1e-12, sd, 1.0)
    if method == "pca":
        return _pca(x, n_components).astype(np.float32)
    if method == "umap":
        return _umap(x, n_components, seed)
    if method == "tsne":
        return _tsne(x, n_components, seed)
    raise DlcbError(
        f"unknown embedding method {method!r}; use one of {', '.join(available_methods())}"
    )


def _umap(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    if importlib.util.find_spec("umap") is None:
        raise DlcbError("UMAP needs the umap-learn package (pip install umap-learn)")
    if x.shape[0] < 4:
        # umap-learn's spectral initialisation fails with an obscure error below 4 points
        raise DlcbError(f"UMAP needs at least 4 objects ({x.shape[0]} given); use PCA")
    import umap

    if x.shape[1] > UMAP_PCA_DIMS:  # the neighbour search then costs 50 dims, not F
        x = _pca(x, UMAP_PCA_DIMS)
    n_neighbors = max(2, min(15, x.shape[0] - 1))
    # n_jobs=1: a seed makes umap-learn single-threaded anyway (and warn otherwise);
    # 200 epochs (umap-learn's own choice above 10,000 points) for any size
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        random_state=seed,
        n_jobs=1,
        n_epochs=200,
    )
    return reducer.fit_transform(x).astype(np.float32)


def _tsne(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    if importlib.util.find_spec("sklearn") is None:
        raise DlcbError("t-SNE needs the scikit-learn package (pip install scikit-learn)")
    from sklearn.manifold import TSNE

    perplexity = max(1.0, min(30.0, (x.shape[0] - 1) / 3))
    tsne = TSNE(n_components=n_components, perplexity=perplexity, random_state=seed, init="pca")
    return tsne.fit_transform(x).astype(np.float32)
