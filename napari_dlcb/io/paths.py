"""What a file name says: its stem, whether it holds labels, whether it is a Zarr store.

Importing this module is cheap (standard library only).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_NAME_SUFFIXES",
    "image_stem",
    "is_labels_path",
    "is_zarr_path",
]

#: File name endings :func:`napari_dlcb.io.images.read_image` understands
#: (``.ome.tif`` and ``.ome.zarr`` are covered by their last suffix).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".zarr")

#: A file whose stem ends in one of these holds labels, not intensities.
LABEL_NAME_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_scribbles")

# longest first, so that "x.ome.tif" loses ".ome.tif" and not just ".tif"
_STRIP_SUFFIXES = (
    ".dlcb.zarr",
    ".ome.zarr",
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".png",
    ".zarr",
)

# "mask"/"masks" anywhere as a word that no letter follows (mask2d, cellmask, nuclei_masks_01);
# "label(s)" only after a separator (img_labels_01, a-label), so "labels.tif" and
# "unlabelled.tif" stay images.
_LABELS_NAME = re.compile(r"masks?(?![a-z])|[_\-. ]labels?(?![a-z])")


def image_stem(path: str | os.PathLike) -> str:
    """Return the file name without its image suffixes.

    Parameters
    ----------
    path : str or path-like
        An image file or Zarr folder.

    Returns
    -------
    str
        ``"cells"`` for ``cells.ome.tif``, ``cells.ome.zarr``, ``cells.png`` ...

    Examples
    --------
    >>> image_stem("data/cells.ome.zarr")
    'cells'
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in _STRIP_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_labels_path(path: str | os.PathLike) -> bool:
    """Whether a file name says it holds labels (``*_labels``, ``*mask*`` ...).

    Parameters
    ----------
    path : str or path-like
        File name or path.

    Returns
    -------
    bool
        True if the stem ends in one of :data:`LABEL_NAME_SUFFIXES`, contains
        the word ``mask``/``masks`` (``mask2d``, ``cellmask``,
        ``nuclei_masks_01``), or ``_label``/``_labels`` followed by no letter
        (``img_labels_01``). ``labels.tif`` and ``unlabelled.tif`` are images.

    Examples
    --------
    >>> is_labels_path("nuclei_masks.tif"), is_labels_path("mask2d.tif"), is_labels_path("nuclei.tif")
    (True, True, False)
    """
    stem = image_stem(path).lower()
    return stem.endswith(LABEL_NAME_SUFFIXES) or _LABELS_NAME.search(stem) is not None


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Zarr store (v2 or v3 metadata at its root).

    Parameters
    ----------
    path : str or path-like
        A folder.

    Returns
    -------
    bool
        True for a folder holding ``zarr.json``, ``.zgroup`` or ``.zarray``.
    """
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray"))
