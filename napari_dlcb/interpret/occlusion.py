"""Occlusion: how much the target score drops when a window of the input is covered.

Zeiler & Fergus (2014), via captum's ``Occlusion``. Same signature as every
image method (see :mod:`~napari_dlcb.interpret.common`); the model is handed
back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.interpret.common import Prepared, Region, explaining, standard_options

__all__ = ["occlusion"]


def occlusion(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    window: int = 8,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 8,
    device: Any = "auto",
) -> Attribution:
    """Occlusion: the drop of the target score when a window is set to a baseline.

    All channels inside the window are occluded together. Each pixel gets the
    mean drop over the windows that cover it (captum's ``Occlusion``).

    Parameters
    ----------
    model, x, target, classes, region, channel_axis, device
        As in :func:`~napari_dlcb.interpret.gradients.gradients`.
    window : int
        Side of the square occluding window in pixels.
    stride : int, optional
        Step between windows; default ``max(1, window // 2)``.
    baseline : float
        Value written into the window (0 = mean intensity in z-scored units).
    batch_size : int
        Occluded copies evaluated per forward pass.

    Returns
    -------
    Attribution
        ``F(x) - F(x occluded)`` averaged per pixel; ``extra["n_windows"]``.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> occlusion(m, np.random.rand(8, 8), window=2).map.shape
    (8, 8)
    """
    if window < 1:
        raise DlcbError("the occlusion window must be at least 1 pixel")
    window = int(window)
    stride = max(1, window // 2) if stride is None else int(stride)
    if stride < 1:
        raise DlcbError("the occlusion stride must be at least 1 pixel")
    if not np.isscalar(baseline):
        raise DlcbError("occlusion needs a scalar baseline value")
    with explaining(model, x, **standard_options(locals())) as prep:
        return _occlude(prep, window, stride, float(baseline), max(1, batch_size))


def _occlude(prep: Prepared, window: int, stride: int, baseline: float, batch: int) -> Attribution:
    from captum.attr import Occlusion

    c, h, w = prep.x.shape[1:]
    if window > min(h, w):
        raise DlcbError(f"the occlusion window ({window}) is larger than the image ({h}x{w})")
    with torch.no_grad():
        attr = Occlusion(prep.wrapped).attribute(
            prep.x,
            sliding_window_shapes=(int(c), window, window),
            strides=(int(c), stride, stride),
            baselines=baseline,
            target=prep.target,
            perturbations_per_eval=batch,
        )
    n_windows = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    a = attr.detach()[0].float().cpu().numpy()
    # every channel holds the same value (the window spans all channels)
    return Attribution(
        map=a[0].astype(np.float32),
        method="occlusion",
        target=prep.target,
        per_channel=None,
        extra={
            "window": window,
            "stride": stride,
            "n_windows": n_windows,
            "target_logit": prep.logit,
        },
    )
