"""The one attribution result type, for images and DNA alike (STYLE.md rule 7).

Every attribution method (gradients, SmoothGrad, integrated gradients,
Grad-CAM, occlusion, DeepLIFT/SHAP, gradient x input) returns an
:class:`Attribution` whose ``map`` lies on the input's grid, so any of them can
become a napari layer with the same scale and translate as its source:

==============  =================================  ===============================
input           ``map``                            ``per_channel``
==============  =================================  ===============================
image (C, Y, X) (Y, X), summed over channels       (C, Y, X) or None
DNA (N, 4, L)   (N, 4, L), one value per base      None (the bases are the channels)
==============  =================================  ===============================

``completeness`` is the summation-to-delta error where the method has that
property (integrated gradients, DeepLIFT/SHAP): ``sum(map) - (f(x) - f(baseline))``
per input, so a GUI can show how faithful the map is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Attribution"]


@dataclass
class Attribution:
    """An attribution map on the input's grid.

    Attributes
    ----------
    map : ndarray of float32
        (Y, X) for an image (signed, summed over input channels), or
        (N, 4, L) for one-hot DNA.
    method : str
        The method that produced it ("gradients", "integrated-gradients", ...).
    target : int or None
        Index of the explained output (class or task).
    per_channel : ndarray of float32 or None
        (C, Y, X) attribution of each image channel, where the method defines one.
    completeness : ndarray of float32 or None
        Per input, ``sum(map) - (f(x) - f(baseline))`` for methods with the
        summation-to-delta property; None for the others.
    extra : dict
        Method-specific numbers (``target_logit``, ``output_difference``, ...).

    Examples
    --------
    >>> a = Attribution(np.zeros((2, 4, 10), np.float32), "deeplift", 0,
    ...                 completeness=np.array([1e-7, 2e-7], np.float32))
    >>> round(a.max_completeness_error, 7)
    2e-07
    """

    map: np.ndarray
    method: str
    target: int | None
    per_channel: np.ndarray | None = None
    completeness: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_completeness_error(self) -> float | None:
        """Largest absolute completeness error, or None where it is not defined."""
        if self.completeness is None:
            return None
        return float(np.max(np.abs(self.completeness))) if self.completeness.size else 0.0
