"""Turn the three annotation kinds into training targets.

``scribbles``: 0 = unlabelled (ignored by the loss), 1 = background, 2..K = classes.
``classes``: dense semantic masks; every pixel value is a class.
``instances``: dense instance masks, 0 = background; the model learns
background / interior / boundary and prediction returns instance ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = [
    "FOREGROUND",
    "IGNORE",
    "LABEL_KINDS",
    "class_names_for",
    "class_values_for",
    "make_target",
]

LABEL_KINDS = ("scribbles", "classes", "instances")
IGNORE = -1
#: target value meaning "any object class" (interior or boundary) in partial labels:
#: object strokes painted for an instance model (background / interior / boundary)
FOREGROUND = 3


def _check_kind(kind: str) -> None:
    if kind not in LABEL_KINDS:
        raise DlcbError(f"unknown label kind {kind!r}; use one of {', '.join(LABEL_KINDS)}")


def class_values_for(labels: Sequence[np.ndarray], kind: str) -> list[int]:
    """Return the label value of each output class, checking there are at least two.

    Parameters
    ----------
    labels : sequence of ndarray
        Label images of one training set.
    kind : {"scribbles", "classes", "instances"}
        The annotation convention.

    Returns
    -------
    list of int
        For ``scribbles`` the values 1..K, for ``classes`` the sorted distinct
        values, for ``instances`` ``[0, 1, 2]`` (background/interior/boundary
        are written back as instance ids, not these values).

    Raises
    ------
    DlcbError
        If nothing is annotated or only one class is present.

    Examples
    --------
    >>> class_values_for([np.array([[0, 1], [2, 2]])], "scribbles")
    [1, 2]
    """
    _check_kind(kind)
    values: set[int] = set()
    for lab in labels:
        lab = np.asarray(lab)
        if not np.issubdtype(lab.dtype, np.integer) and not np.issubdtype(lab.dtype, np.bool_):
            if not np.all(np.mod(lab, 1) == 0):
                raise DlcbError("labels must be integers (got fractional values)")
        values.update(int(v) for v in np.unique(lab))
    if kind == "scribbles":
        values.discard(0)
        if not values:
            raise DlcbError("no annotation: paint some scribbles (1 = background, 2.. = classes)")
        if any(v < 0 for v in values):
            raise DlcbError("scribble labels must be >= 0")
        if len(values) < 2:
            only = next(iter(values))
            raise DlcbError(
                f"scribbles contain only one class (label {only}); paint at least background (1) "
                "and one object class (2)"
            )
        return list(range(1, max(values) + 1))
    if kind == "classes":
        if len(values) < 2:
            raise DlcbError(
                f"labels contain a single class (value {next(iter(values), 0)}); need at least two"
            )
        if len(values) > 256:
            raise DlcbError(
                f"labels have {len(values)} distinct values; did you mean --labels-kind instances?"
            )
        return sorted(values)
    if values <= {0}:
        raise DlcbError("instance labels contain no objects (all pixels are 0)")
    if 0 not in values:
        raise DlcbError("instance labels have no background (0) pixels")
    return [0, 1, 2]


def class_names_for(kind: str, class_values: Sequence[int]) -> list[str]:
    """Human-readable names of the output classes."""
    if kind == "instances":
        return ["background", "interior", "boundary"][: len(class_values)]
    if kind == "scribbles":
        return ["background"] + [f"class {v}" for v in class_values[1:]]
    return [f"value {v}" for v in class_values]


def make_target(
    labels: np.ndarray, kind: str, class_values: Sequence[int], *, n_classes: int | None = None
) -> np.ndarray:
    """Make an int64 target map (``-1`` = ignore) for one label image.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        One annotation image.
    kind : {"scribbles", "classes", "instances"}
        The annotation convention.
    class_values : sequence of int
        From :func:`class_values_for` over the whole training set.
    n_classes : int, optional
        For ``instances``: 3 (background/interior/boundary, default) or 2
        (background/foreground, for one-channel community models).

    Returns
    -------
    ndarray of int64, shape (Y, X)

    Examples
    --------
    >>> make_target(np.array([[0, 1, 3]]), "scribbles", [1, 2, 3]).tolist()
    [[-1, 0, 2]]
    """
    _check_kind(kind)
    lab = np.asarray(labels)
    if kind == "scribbles":
        tgt = lab.astype(np.int64) - 1
        tgt[lab <= 0] = IGNORE
        tgt[lab > len(class_values)] = IGNORE
        return tgt
    if kind == "classes":
        lut = {v: i for i, v in enumerate(class_values)}
        tgt = np.full(lab.shape, IGNORE, np.int64)
        for v, i in lut.items():
            tgt[lab == v] = i
        return tgt
    from skimage.segmentation import find_boundaries

    lab = lab.astype(np.int64)
    fg = lab > 0
    if n_classes == 2:
        return fg.astype(np.int64)
    tgt = fg.astype(np.int64)
    tgt[find_boundaries(lab, mode="inner") & fg] = 2
    return tgt
