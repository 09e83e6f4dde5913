"""Grad-CAM: gradient-weighted activations of a layer, on the input's grid.

Selvaraju et al. (2017), via captum's ``LayerGradCam``; the coarse map is
upsampled bilinearly to the input grid. Same signature as every image method
(see :mod:`~napari_dlcb.interpret.common`); the model is handed back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.interpret.common import (
    Region,
    explaining,
    layer_name,
    resolve_layer,
    standard_options,
)

__all__ = ["gradcam"]


def gradcam(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    layer: str | nn.Module | None = None,
    relu: bool = True,
    device: Any = "auto",
) -> Attribution:
    """Grad-CAM on a chosen layer, upsampled bilinearly to the input grid.

    Parameters
    ----------
    model, x, target, classes, region, channel_axis, device
        As in :func:`~napari_dlcb.interpret.gradients.gradients`.
    layer : str or torch.nn.Module, optional
        Sub-module name or module; default the last convolution larger than 1x1.
    relu : bool
        Keep only positive evidence, as in the Grad-CAM paper.

    Returns
    -------
    Attribution
        ``per_channel`` is None (Grad-CAM is not per input channel);
        ``extra["layer"]`` names the layer and ``extra["layer_shape"]`` is its
        spatial size before upsampling.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> gradcam(m, np.random.rand(8, 8), target=1).map.shape
    (8, 8)
    """
    from captum.attr import LayerAttribution, LayerGradCam

    layer_mod = resolve_layer(model, layer)
    with explaining(model, x, **standard_options(locals())) as prep:
        cam = LayerGradCam(prep.wrapped, layer_mod).attribute(
            prep.x, target=prep.target, relu_attributions=relu
        )
        layer_shape = tuple(int(s) for s in cam.shape[-2:])
        up = LayerAttribution.interpolate(
            cam, tuple(prep.x.shape[-2:]), interpolate_mode="bilinear"
        )
        a = up.detach()[0, 0].float().cpu().numpy().astype(np.float32)
        return Attribution(
            map=a,
            method="gradcam",
            target=prep.target,
            per_channel=None,
            extra={
                "layer": layer_name(model, layer_mod),
                "layer_shape": layer_shape,
                "target_logit": prep.logit,
            },
        )
