"""Per-object crops and measurements from an instance-labels image.

The cell-classification workflow (Pärnamaa & Parts 2017) works on crops
centred on each object. :func:`object_crops` cuts them with a fixed size,
pads objects that touch the image border (and reports which ones), and can
blank the pixels of neighbouring objects; :func:`auto_crop_size` chooses a
size that holds most objects whole. :func:`regionprops_table` gives the
morphology measurements exported beside the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_dlcb.data.images import to_cyx
from napari_dlcb.errors import DlcbError

__all__ = [
    "MORPHOLOGY",
    "ObjectCrops",
    "auto_crop_size",
    "object_crops",
    "object_ids",
    "regionprops_table",
]

#: regionprops measured for every object (scikit-image names)
MORPHOLOGY = (
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "extent",
    "major_axis_length",
    "minor_axis_length",
    "orientation",
    "intensity_mean",
    "intensity_max",
    "intensity_min",
)


@dataclass
class ObjectCrops:
    """Fixed-size crops centred on objects.

    Attributes
    ----------
    crops : ndarray, shape (N, C, S, S)
        Image crops in the image's dtype (channels first).
    masks : ndarray of bool, shape (N, S, S)
        Each object's own pixels within its crop.
    ids : ndarray of int, shape (N,)
        Label value of each object.
    centres : ndarray of float, shape (N, 2)
        Centroid (row, col) of each object in image coordinates.
    origins : ndarray of int, shape (N, 2)
        Image coordinates of each crop's top-left pixel (may be negative).
    touching_border : ndarray of int
        Ids of objects whose crop extends beyond the image (padded).
    notes : list of str
        Messages for the user (padding, objects larger than the crop).
    """

    crops: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    centres: np.ndarray
    origins: np.ndarray
    touching_border: np.ndarray
    notes: list[str] = field(default_factory=list)


def object_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero label values of an instance-labels image.

    Examples
    --------
    >>> object_ids(np.array([[0, 3], [3, 1]])).tolist()
    [1, 3]
    """
    ids = np.unique(np.asarray(labels))
    return ids[ids != 0]


def auto_crop_size(
    labels: np.ndarray,
    *,
    percentile: float = 90.0,
    factor: float = 1.5,
    multiple: int = 8,
    low: int = 32,
    high: int = 128,
) -> int:
    """A crop side that holds most objects whole, with some context around them.

    ``factor`` times the ``percentile``-th percentile of the objects'
    bounding-box sides (the longer of height and width), rounded up to a
    multiple of ``multiple`` and clamped to ``[low, high]``.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Instance labels, 0 = background.
    percentile, factor, multiple, low, high
        As described above (defaults: 1.5 x the 90th percentile, a multiple
        of 8, from 32 to 128 px).

    Returns
    -------
    int
        ``low`` when there are no objects.

    Examples
    --------
    >>> lab = np.zeros((100, 100), int); lab[10:50, 10:40] = 1
    >>> auto_crop_size(lab)
    64
    """
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    slices = [s for s in ndi.find_objects(lab.astype(np.int64, copy=False)) if s is not None]
    if not slices:
        return int(low)
    sides = [max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in slices]
    side = factor * float(np.percentile(sides, percentile))
    size = int(np.ceil(side / multiple) * multiple)
    return int(min(max(size, low), high))


def _check_labels(image_shape: tuple[int, ...], labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DlcbError(f"labels must be a 2-D instance-labels image, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise DlcbError(f"labels must be integers (instance ids), got dtype {labels.dtype}")
    if tuple(image_shape) != labels.shape:
        raise DlcbError(f"image {tuple(image_shape)} and labels {labels.shape} differ in shape")
    if not labels.any():
        raise DlcbError("the labels layer has no objects: segment or paint some cells first")
    return labels


def object_crops(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    size: int = 32,
    ids: Sequence[int] | None = None,
    channel_axis: int | None = None,
    mask_neighbours: bool = False,
    pad_mode: str = "reflect",
) -> ObjectCrops:
    """Cut a ``size`` x ``size`` crop centred on each object.

    Parameters
    ----------
    image : ndarray, shape (Y, X) or with a channel axis
        The intensity image.
    labels : ndarray of int, shape (Y, X)
        Instance labels, 0 = background.
    size : int
        Crop side length in pixels.
    ids : sequence of int, optional
        Objects to crop, in this order; default every object, sorted by id.
    channel_axis : int, optional
        Channel axis of a multichannel ``image``.
    mask_neighbours : bool
        Replace pixels of other objects with the crop's background median.
    pad_mode : str
        ``numpy.pad`` mode for crops that extend beyond the image.

    Returns
    -------
    ObjectCrops

    Raises
    ------
    DlcbError
        If ``labels`` has no objects, shapes disagree, or an id is missing.

    Examples
    --------
    >>> lab = np.zeros((20, 20), int); lab[0:4, 0:4] = 1; lab[10:14, 10:14] = 2
    >>> oc = object_crops(np.ones((20, 20)), lab, size=8)
    >>> oc.crops.shape, oc.touching_border.tolist()
    ((2, 1, 8, 8), [1])
    """
    from scipy import ndimage as ndi

    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise DlcbError(f"expected a 2-D image, got shape {img.shape}")
    cyx = to_cyx(img, channel_axis)
    labels = _check_labels(cyx.shape[1:], labels)
    if size < 2:
        raise DlcbError("the crop size must be at least 2 pixels")
    sel = _selected_ids(labels, ids)
    centres = np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, sel), float).reshape(
        -1, 2
    )
    origins = np.round(centres).astype(int) - size // 2
    crops, masks, border, too_big = _cut(cyx, labels, sel, origins, size, pad_mode, mask_neighbours)
    return ObjectCrops(
        crops=crops,
        masks=masks,
        ids=sel.astype(np.int64),
        centres=centres,
        origins=origins,
        touching_border=np.asarray(border, np.int64),
        notes=_crop_notes(border, too_big, size, pad_mode),
    )


def _selected_ids(labels: np.ndarray, ids: Sequence[int] | None) -> np.ndarray:
    all_ids = object_ids(labels)
    if ids is None:
        sel = all_ids
    else:
        sel = np.asarray(list(ids), dtype=np.int64)
        missing = np.setdiff1d(sel, all_ids)
        if missing.size:
            raise DlcbError(f"object {int(missing[0])} is not in the labels layer")
    if sel.size == 0:
        raise DlcbError("no objects were chosen")
    return sel


def _cut(
    cyx: np.ndarray,
    labels: np.ndarray,
    sel: np.ndarray,
    origins: np.ndarray,
    size: int,
    pad_mode: str,
    mask_neighbours: bool,
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Crops, own-object masks, ids whose crops were padded, ids larger than the crop."""
    from scipy import ndimage as ndi

    slices = ndi.find_objects(labels.astype(np.int64, copy=False))
    pad = size
    padded = np.pad(cyx, ((0, 0), (pad, pad), (pad, pad)), mode=pad_mode)
    lab_p = np.pad(labels, pad, mode="constant")
    H, W = labels.shape
    crops = np.empty((len(sel), cyx.shape[0], size, size), cyx.dtype)
    masks = np.empty((len(sel), size, size), bool)
    border, too_big = [], []
    for i, (oid, (r0, c0)) in enumerate(zip(sel, origins)):
        crops[i] = padded[:, r0 + pad : r0 + pad + size, c0 + pad : c0 + pad + size]
        lab_crop = lab_p[r0 + pad : r0 + pad + size, c0 + pad : c0 + pad + size]
        sl = slices[int(oid) - 1]
        masks[i] = lab_crop == oid
        on_edge = sl is not None and (
            sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == H or sl[1].stop == W
        )
        if on_edge or r0 < 0 or c0 < 0 or r0 + size > H or c0 + size > W:
            border.append(int(oid))
        if sl is not None and (sl[0].stop - sl[0].start > size or sl[1].stop - sl[1].start > size):
            too_big.append(int(oid))
        if mask_neighbours:
            _blank_neighbours(crops[i], lab_crop, oid)
    return crops, masks, border, too_big


def _blank_neighbours(crop: np.ndarray, lab_crop: np.ndarray, oid: int) -> None:
    """Replace other objects' pixels of ``crop`` (C, S, S) with the background median."""
    other = (lab_crop != 0) & (lab_crop != oid)
    if other.any():
        bg = crop[:, lab_crop == 0]
        fill = np.median(bg, axis=1) if bg.size else np.zeros(crop.shape[0])
        crop[:, other] = fill[:, None].astype(crop.dtype)


def _crop_notes(border: list[int], too_big: list[int], size: int, pad_mode: str) -> list[str]:
    notes = []
    if border:
        notes.append(
            f"{len(border)} object(s) touch the image border or lie within {size // 2} px of it "
            f"(ids {', '.join(map(str, border[:10]))}{'...' if len(border) > 10 else ''}): "
            f"their crops were padded ({pad_mode})"
        )
    if too_big:
        notes.append(
            f"{len(too_big)} object(s) are larger than the {size}x{size} crop "
            f"(ids {', '.join(map(str, too_big[:10]))}): only their centre is seen"
        )
    return notes


def regionprops_table(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    properties: Sequence[str] = MORPHOLOGY,
    channel_axis: int | None = None,
):
    """Morphology (and intensity) measurements of every object as a table.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Instance labels.
    image : ndarray, optional
        Intensity image for ``intensity_*`` properties (dropped without it).
    properties : sequence of str
        scikit-image ``regionprops`` property names.
    channel_axis : int, optional
        Channel axis of a multichannel ``image``.

    Returns
    -------
    pandas.DataFrame
        One row per object: ``object_id``, ``centroid_row``, ``centroid_col``,
        ``touches_border`` and the properties (multichannel intensities get
        ``-0``, ``-1``... suffixes).

    Examples
    --------
    >>> lab = np.zeros((10, 10), int); lab[2:5, 2:6] = 4
    >>> t = regionprops_table(lab)
    >>> int(t.object_id[0]), float(t.area[0]), bool(t.touches_border[0])
    (4, 12.0, False)
    """
    import pandas as pd
    from skimage.measure import regionprops_table as _rpt

    if image is not None:
        img = np.asarray(image)
        if img.ndim == 3:
            img = np.moveaxis(to_cyx(img, channel_axis), 0, -1)
        labels = _check_labels(img.shape[:2], labels)
        props = list(properties)
    else:
        img = None
        labels = _check_labels(np.asarray(labels).shape, labels)
        props = [p for p in properties if not p.startswith("intensity")]
    lab = labels.astype(np.int64, copy=False)
    table = _rpt(lab, intensity_image=img, properties=["label", "centroid", "bbox", *props])
    df = pd.DataFrame(table).rename(
        columns={"label": "object_id", "centroid-0": "centroid_row", "centroid-1": "centroid_col"}
    )
    df["object_id"] = df["object_id"].astype(np.int64)
    H, W = lab.shape
    df["touches_border"] = (
        (df["bbox-0"] == 0) | (df["bbox-1"] == 0) | (df["bbox-2"] == H) | (df["bbox-3"] == W)
    )
    return df.drop(columns=[c for c in df.columns if c.startswith("bbox-")])
