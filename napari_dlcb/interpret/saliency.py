"""Saliency and attribution maps for image models: one call for every method.

Each method lives in its own module and has the one signature
``f(model, x, *, target=None, ...) -> Attribution`` (STYLE.md rule 7):

=========================  ===================================================
``"gradients"``            :func:`~napari_dlcb.interpret.gradients.gradients`
``"smoothgrad"``           :func:`~napari_dlcb.interpret.gradients.smoothgrad`
``"integrated-gradients"`` :func:`~napari_dlcb.interpret.integrated_gradients.integrated_gradients`
``"gradcam"``              :func:`~napari_dlcb.interpret.gradcam.gradcam`
``"occlusion"``            :func:`~napari_dlcb.interpret.occlusion.occlusion`
=========================  ===================================================

:func:`saliency` dispatches by name with every method's options;
:func:`iter_saliency` is the same as a generator of
:class:`~napari_dlcb.training.events.JobProgress` (for a GUI job: progress and
Stop). ``model`` maps ``(B, C, Y, X)`` float tensors to logits: ``(B, K)`` for
a classifier, ``(B, K, Y', X')`` for a segmentation model, whose explained
scalar is the logit of class ``target`` summed over ``region`` (a boolean mask
or a pair of slices; the whole image by default), so "why is this nucleus
foreground?" is one call. The model is handed back unchanged.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.interpret.common import (
    METHODS,
    Region,
    resolve_layer,
    run_to_end,
    standard_options,
)
from napari_dlcb.interpret.gradcam import gradcam
from napari_dlcb.interpret.gradients import gradients, smoothgrad
from napari_dlcb.interpret.integrated_gradients import (
    integrated_gradients,
    iter_integrated_gradients,
)
from napari_dlcb.interpret.occlusion import occlusion
from napari_dlcb.training.events import JobProgress

__all__ = [
    "METHODS",
    "SaliencyResult",
    "gradcam",
    "gradients",
    "integrated_gradients",
    "iter_saliency",
    "occlusion",
    "resolve_layer",
    "saliency",
    "smoothgrad",
]

#: the earlier name of :class:`~napari_dlcb.interpret.attribution.Attribution` (kept for one release)
SaliencyResult = Attribution


def saliency(
    model: nn.Module,
    x: np.ndarray,
    *,
    method: str = "integrated-gradients",
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    layer: str | nn.Module | None = None,
    window: int = 8,
    stride: int | None = None,
    n_samples: int = 16,
    noise_level: float = 0.15,
    n_steps: int = 32,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    device: Any = "auto",
) -> Attribution:
    """Compute any saliency map with one signature.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier ``(B, C, Y, X) -> (B, K)`` or segmentation model
        ``(B, C, Y, X) -> (B, K, Y, X)``, taking normalised input.
    x : ndarray
        Normalised input, (Y, X) or with a channel axis.
    method : str
        One of :data:`METHODS`.
    target, classes, region, channel_axis, device
        As in :func:`~napari_dlcb.interpret.gradients.gradients`.
    layer
        Grad-CAM layer (see :func:`~napari_dlcb.interpret.gradcam.gradcam`).
    window, stride
        Occlusion window and stride (see :func:`~napari_dlcb.interpret.occlusion.occlusion`).
    n_samples, noise_level, seed
        SmoothGrad settings (see :func:`~napari_dlcb.interpret.gradients.smoothgrad`).
    n_steps
        Integrated-gradients steps.
    baseline : float or ndarray
        Reference input for integrated gradients and the occlusion fill value
        (occlusion needs a scalar).
    batch_size : int
        Inputs per forward pass for the sampling methods.

    Returns
    -------
    Attribution
        ``map`` has the image's (Y, X) shape.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> saliency(m, np.random.rand(8, 8), method="gradients", target=0).map.shape
    (8, 8)
    """
    return run_to_end(
        iter_saliency(
            model, x, method=method, target=target, classes=classes, region=region,
            channel_axis=channel_axis, layer=layer, window=window, stride=stride,
            n_samples=n_samples, noise_level=noise_level, n_steps=n_steps, baseline=baseline,
            batch_size=batch_size, seed=seed, device=device,
        )
    )  # fmt: skip


def iter_saliency(
    model: nn.Module,
    x: np.ndarray,
    *,
    method: str = "integrated-gradients",
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    layer: str | nn.Module | None = None,
    window: int = 8,
    stride: int | None = None,
    n_samples: int = 16,
    noise_level: float = 0.15,
    n_steps: int = 32,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    device: Any = "auto",
    stop: Any = None,
) -> Generator[JobProgress, None, Attribution | None]:
    """:func:`saliency` as a generator: yields progress, returns the :class:`Attribution`.

    Integrated gradients reports every batch of path points and ends early
    (returning None) when ``stop`` (a ``threading.Event``) is set; the other
    methods report their start and end.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> gen = iter_saliency(m, np.random.rand(8, 8), method="gradients", target=0)
    >>> [(p.done, p.total) for p in gen]
    [(0, 1), (1, 1)]
    """
    if method not in METHODS:
        raise DlcbError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    _check_inputs(x, window=window, stride=stride, n_samples=n_samples, n_steps=n_steps)
    common = standard_options(locals())
    if method == "integrated-gradients":
        return (
            yield from iter_integrated_gradients(
                model,
                x,
                baseline=baseline,
                n_steps=n_steps,
                batch_size=batch_size,
                stop=stop,
                **common,
            )
        )
    if method == "occlusion" and not np.isscalar(baseline):
        raise DlcbError("occlusion needs a scalar baseline value")
    yield JobProgress(0, 1, method)
    options = {
        "gradients": {},
        "smoothgrad": {
            "n_samples": n_samples,
            "noise_level": noise_level,
            "batch_size": batch_size,
            "seed": seed,
        },
        "gradcam": {"layer": layer},
        "occlusion": {
            "window": window,
            "stride": stride,
            "baseline": baseline,
            "batch_size": batch_size,
        },
    }[method]
    out = _ONE_SHOT[method](model, x, **options, **common)
    yield JobProgress(1, 1, method)
    return out


_ONE_SHOT = {
    "gradients": gradients,
    "smoothgrad": smoothgrad,
    "gradcam": gradcam,
    "occlusion": occlusion,
}


def _check_inputs(x: Any, **sizes: int | None) -> None:
    """The prediction rule for interpretation too: NaN/Inf or complex pixels and sizes < 1 refused."""
    from napari_dlcb.data.normalize import check_finite

    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise DlcbError(f"the image has {arr.dtype} pixels; interpretation needs real numbers")
    if arr.dtype.kind == "f":
        check_finite(arr, "the image")
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise DlcbError(f"{name} must be a whole number of at least 1, got {value!r}")
