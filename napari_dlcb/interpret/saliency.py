"""Saliency and attribution maps for image models, on the input's grid.

Every method shares one signature and one return type (STYLE.md rule 7)::

    saliency(model, image, *, method=..., target=..., region=..., ...) -> SaliencyResult

``model`` maps ``(B, C, Y, X)`` float tensors to logits: ``(B, K)`` for a
classifier, ``(B, K, Y', X')`` for a segmentation model. For a segmentation
model the explained scalar is the logit of class ``target`` summed over
``region`` (a boolean mask or a pair of slices on the output grid; the whole
image by default), so "why is this nucleus foreground?" is one call.

The methods wrap captum (Kokhlikyan et al. 2020):

* ``"gradients"`` - vanilla gradient of the target (Simonyan et al. 2014);
* ``"smoothgrad"`` - gradients averaged over noisy copies (Smilkov et al. 2017);
* ``"integrated-gradients"`` - path integral from a baseline (Sundararajan et
  al. 2017); ``extra["completeness_error"]`` is the gap between the sum of the
  attributions and the change of the output;
* ``"gradcam"`` - gradient-weighted activations of a chosen layer, upsampled
  bilinearly to the input grid (Selvaraju et al. 2017);
* ``"occlusion"`` - drop in the output when a window is replaced by a baseline
  (Zeiler & Fergus 2014).

The model is handed back unchanged (mode, device, ``requires_grad``,
``.grad``, hooks): see :func:`napari_dlcb.models.state.preserve_model_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.state import preserve_model_state

__all__ = [
    "METHODS",
    "SaliencyResult",
    "saliency",
    "gradients",
    "smoothgrad",
    "integrated_gradients",
    "gradcam",
    "occlusion",
    "resolve_layer",
]

METHODS = ("gradients", "smoothgrad", "integrated-gradients", "gradcam", "occlusion")

Region = np.ndarray | tuple[slice, slice] | None


@dataclass
class SaliencyResult:
    """One attribution map on the input's grid.

    Attributes
    ----------
    map : ndarray of float32, shape (Y, X)
        Attribution per pixel, summed over input channels (signed; show it
        with a diverging colormap centred on 0).
    method : str
        The method that produced it.
    target : int
        Index of the explained output class.
    per_channel : ndarray of float32, shape (C, Y, X) or None
        Attribution for each input channel, where the method defines one.
    extra : dict
        Method-specific numbers, e.g. ``completeness_error``,
        ``output_difference`` and ``target_logit``.
    """

    map: np.ndarray
    method: str
    target: int
    per_channel: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """Find the layer Grad-CAM and activation tools work on.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str or torch.nn.Module or None
        A dotted sub-module name (as in ``model.named_modules()``), a module
        of ``model``, or None for the last convolution with a kernel larger
        than 1x1 (the usual Grad-CAM choice).

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> resolve_layer(m, None) is m[0]
    True
    """
    if isinstance(layer, nn.Module):
        if not any(mod is layer for mod in model.modules()):
            raise DlcbError("the chosen layer is not part of this model")
        return layer
    if isinstance(layer, str):
        names = dict(model.named_modules())
        if layer not in names:
            convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
            raise DlcbError(
                f"layer {layer!r} does not exist; convolution layers are: " + ", ".join(convs[-8:])
            )
        return names[layer]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    big = [m for m in convs if max(m.kernel_size) > 1]
    if not convs:
        raise DlcbError("this model has no 2-D convolution layer for Grad-CAM")
    return (big or convs)[-1]


class _TargetModel(nn.Module):
    """Reduce any image model to ``(B, K)`` scores captum can index with ``target``.

    Classifier logits pass through. Segmentation logits ``(B, K, Y, X)`` are
    summed over ``mask`` (on the output grid; all pixels if None).
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return self.reduce(out)

    def reduce(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` scores from the model's raw output."""
        if out.ndim == 2:
            return out
        if out.ndim != 4:
            raise DlcbError(f"unsupported model output of shape {tuple(out.shape)}")
        if self.mask is None:
            return out.sum(dim=(2, 3))
        mask = self.mask
        if mask.shape != out.shape[-2:]:
            mask = nn.functional.interpolate(
                mask[None, None].float(), size=out.shape[-2:], mode="nearest"
            )[0, 0]
        return (out * mask).sum(dim=(2, 3))


def _to_tensor(image: np.ndarray, channel_axis: int | None) -> torch.Tensor:
    arr = np.asarray(image)
    if arr.ndim == 2:
        if channel_axis is not None:
            raise DlcbError("a 2-D image has no channel axis")
        arr = arr[None]
    elif arr.ndim == 3:
        if channel_axis is None:
            raise DlcbError(f"image of shape {arr.shape} has 3 axes: say which is the channel axis")
        arr = np.moveaxis(arr, channel_axis, 0)
    else:
        raise DlcbError(f"expected a 2-D image (Y, X) or (Y, X, C), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def _region_mask(region: Region, shape: tuple[int, int]) -> torch.Tensor | None:
    if region is None:
        return None
    if isinstance(region, tuple) and all(isinstance(s, slice) for s in region):
        if len(region) != 2:
            raise DlcbError("region slices must be (rows, cols)")
        mask = np.zeros(shape, np.float32)
        mask[region] = 1
    else:
        arr = np.asarray(region)
        if arr.ndim != 2:
            raise DlcbError(f"region mask must be 2-D, got shape {arr.shape}")
        mask = (arr != 0).astype(np.float32)
    if not mask.any():
        raise DlcbError("the chosen region is empty: pick at least one pixel or object")
    return torch.from_numpy(mask)


@dataclass
class _Prepared:
    wrapped: _TargetModel
    x: torch.Tensor
    target: int
    n_classes: int
    logit: float
    device: torch.device


def _prepare(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None,
    classes: Sequence[str] | None,
    region: Region,
    channel_axis: int | None,
    device: torch.device,
) -> _Prepared:
    x = _to_tensor(image, channel_axis).to(device)
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # only the input needs a gradient
    mask = _region_mask(region, tuple(x.shape[-2:]))
    if mask is not None:
        mask = mask.to(device)
    wrapped = _TargetModel(model, mask).to(device).eval()
    with torch.no_grad():
        raw = model(x)
        if isinstance(raw, (tuple, list)):
            raw = raw[0]
        scores = wrapped.reduce(raw)  # one forward pass, not two
    n_classes = int(scores.shape[1])
    if isinstance(target, str):
        names = list(classes or [])
        if target not in names:
            raise DlcbError(
                f"target class {target!r} does not exist; classes are: {', '.join(names) or 'unnamed'}"
            )
        target = names.index(target)
    if target is None:
        if raw.ndim == 2:
            target = int(scores[0].argmax())
        else:
            target = 1 if n_classes > 1 else 0
    target = int(target)
    if not 0 <= target < n_classes:
        raise DlcbError(
            f"target class {target} does not exist: the model has {n_classes} output "
            f"class{'es' if n_classes != 1 else ''} (0..{n_classes - 1})"
        )
    x.requires_grad_(True)  # gradients flow to the input only
    return _Prepared(wrapped, x, target, n_classes, float(scores[0, target]), device)


def _finish(
    attr: torch.Tensor, method: str, prep: _Prepared, extra: dict[str, Any]
) -> SaliencyResult:
    a = attr.detach()[0].float().cpu().numpy()
    extra.setdefault("target_logit", prep.logit)
    return SaliencyResult(
        map=a.sum(axis=0).astype(np.float32),
        method=method,
        target=prep.target,
        per_channel=a.astype(np.float32),
        extra=extra,
    )


def _run(model: nn.Module, fn, **kw) -> SaliencyResult:
    if not isinstance(model, nn.Module):
        raise DlcbError("saliency needs a torch model (nn.Module)")
    device = resolve_device(kw.pop("device", "cpu"))
    # inference_mode(False): callable from inside ``torch.inference_mode()`` too, e.g. the
    # training engine's live preview; tensors made here then take part in autograd.
    with torch.inference_mode(False), preserve_model_state(model):
        prep = _prepare(
            model,
            kw.pop("image"),
            target=kw.pop("target", None),
            classes=kw.pop("classes", None),
            region=kw.pop("region", None),
            channel_axis=kw.pop("channel_axis", None),
            device=device,
        )
        with torch.enable_grad():
            return fn(prep, **kw)


def gradients(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    device: str = "cpu",
) -> SaliencyResult:
    """Vanilla gradient of the target score with respect to each input pixel.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, Y, X)`` to ``(B, K)`` or ``(B, K, Y, X)`` logits.
    image : ndarray, shape (Y, X) or with a channel axis
        The (normalised) model input; any real dtype.
    target : int or str, optional
        Class index, or a name from ``classes``. Default: the predicted class
        of a classifier, class 1 (first foreground class) of a segmentation model.
    classes : sequence of str, optional
        Class names, to accept ``target`` by name.
    region : ndarray of bool or (slice, slice), optional
        Segmentation models: pixels over which the class logit is summed.
    channel_axis : int, optional
        Axis of ``image`` holding channels; None for a 2-D image.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns
    -------
    SaliencyResult
        Signed gradient map (Y, X), summed over channels.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.LazyLinear(3))
    >>> _ = m(torch.zeros(1, 1, 8, 8))
    >>> r = gradients(m, np.random.rand(8, 8), target=2)
    >>> r.map.shape, r.target
    ((8, 8), 2)
    """
    return _run(
        model,
        _gradients,
        image=image,
        target=target,
        classes=classes,
        region=region,
        channel_axis=channel_axis,
        device=device,
    )


def _gradients(prep: _Prepared) -> SaliencyResult:
    from captum.attr import Saliency

    attr = Saliency(prep.wrapped).attribute(prep.x, target=prep.target, abs=False)
    return _finish(attr, "gradients", prep, {})


def smoothgrad(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    n_samples: int = 16,
    noise_level: float = 0.15,
    batch_size: int = 4,
    seed: int = 0,
    device: str = "cpu",
) -> SaliencyResult:
    """SmoothGrad: gradients averaged over copies of the input with Gaussian noise.

    Parameters
    ----------
    model, image, target, classes, region, channel_axis, device
        As in :func:`gradients`.
    n_samples : int
        Number of noisy copies.
    noise_level : float
        Noise standard deviation as a fraction of the input's value range
        (Smilkov et al. recommend 0.1-0.2).
    batch_size : int
        Noisy copies evaluated per forward pass.
    seed : int
        Seed of the noise, so maps are reproducible.

    Returns
    -------
    SaliencyResult
        Averaged signed gradient map; ``extra["noise_std"]`` is the noise used.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> smoothgrad(m, np.random.rand(8, 8), n_samples=4).map.shape
    (8, 8)
    """
    if n_samples < 1:
        raise DlcbError("n_samples must be at least 1")
    return _run(
        model,
        _smoothgrad,
        image=image,
        target=target,
        classes=classes,
        region=region,
        channel_axis=channel_axis,
        device=device,
        n_samples=n_samples,
        noise_level=noise_level,
        batch_size=batch_size,
        seed=seed,
    )


def _smoothgrad(
    prep: _Prepared, *, n_samples: int, noise_level: float, batch_size: int, seed: int
) -> SaliencyResult:
    from captum.attr import NoiseTunnel, Saliency

    span = float(prep.x.detach().max() - prep.x.detach().min()) or 1.0
    std = noise_level * span
    cpu_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if prep.device.type == "cuda" else None
    torch.manual_seed(seed)
    try:
        attr = NoiseTunnel(Saliency(prep.wrapped)).attribute(
            prep.x,
            nt_type="smoothgrad",
            nt_samples=n_samples,
            nt_samples_batch_size=max(1, batch_size),
            stdevs=std,
            target=prep.target,
            abs=False,
        )
    finally:
        torch.random.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
    return _finish(attr, "smoothgrad", prep, {"noise_std": std, "n_samples": n_samples})


def integrated_gradients(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    baseline: float | np.ndarray = 0.0,
    n_steps: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
) -> SaliencyResult:
    """Integrated gradients from a baseline, with the completeness error.

    Parameters
    ----------
    model, image, target, classes, region, channel_axis, device
        As in :func:`gradients`.
    baseline : float or ndarray
        Reference input (same shape as ``image``, or a scalar). 0 is a black
        image in normalised units.
    n_steps : int
        Steps of the Gauss-Legendre path integral.
    batch_size : int
        Path points evaluated per forward pass.

    Returns
    -------
    SaliencyResult
        ``extra["completeness_error"]`` is ``|sum(attributions) - (F(x) -
        F(baseline))|``; ``extra["relative_completeness_error"]`` divides it by
        ``|F(x) - F(baseline)|``; ``extra["output_difference"]`` is that difference.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> r = integrated_gradients(m, np.random.rand(8, 8), target=0)
    >>> r.extra["completeness_error"] < 1e-4
    True
    """
    if n_steps < 2:
        raise DlcbError("n_steps must be at least 2")
    return _run(
        model,
        _integrated_gradients,
        image=image,
        target=target,
        classes=classes,
        region=region,
        channel_axis=channel_axis,
        device=device,
        baseline=baseline,
        n_steps=n_steps,
        batch_size=batch_size,
        channel_axis_for_baseline=channel_axis,
    )


def _baseline_tensor(
    baseline: float | np.ndarray, prep: _Prepared, channel_axis: int | None
) -> torch.Tensor | float:
    if np.isscalar(baseline):
        return float(baseline)
    b = _to_tensor(np.asarray(baseline), channel_axis).to(prep.device)
    if b.shape != prep.x.shape:
        raise DlcbError(
            f"baseline shape {tuple(b.shape[1:])} differs from the image's {tuple(prep.x.shape[1:])}"
        )
    return b


def _integrated_gradients(
    prep: _Prepared,
    *,
    baseline: float | np.ndarray,
    n_steps: int,
    batch_size: int,
    channel_axis_for_baseline: int | None,
) -> SaliencyResult:
    from captum.attr import IntegratedGradients

    base = _baseline_tensor(baseline, prep, channel_axis_for_baseline)
    attr, delta = IntegratedGradients(prep.wrapped).attribute(
        prep.x,
        baselines=base,
        target=prep.target,
        n_steps=n_steps,
        internal_batch_size=max(1, batch_size),
        return_convergence_delta=True,
    )
    with torch.no_grad():
        bx = base if isinstance(base, torch.Tensor) else torch.full_like(prep.x, base)
        diff = float(prep.wrapped(prep.x)[0, prep.target] - prep.wrapped(bx)[0, prep.target])
    err = abs(float(delta.reshape(-1)[0]))
    extra = {
        "completeness_error": err,
        "relative_completeness_error": err / max(abs(diff), 1e-12),
        "output_difference": diff,
        "n_steps": n_steps,
    }
    return _finish(attr, "integrated-gradients", prep, extra)


def gradcam(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    layer: str | nn.Module | None = None,
    relu: bool = True,
    device: str = "cpu",
) -> SaliencyResult:
    """Grad-CAM on a chosen layer, upsampled bilinearly to the input grid.

    Parameters
    ----------
    model, image, target, classes, region, channel_axis, device
        As in :func:`gradients`.
    layer : str or torch.nn.Module, optional
        Sub-module name or module; default the last convolution larger than 1x1.
    relu : bool
        Keep only positive evidence, as in the Grad-CAM paper.

    Returns
    -------
    SaliencyResult
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
    layer_mod = resolve_layer(model, layer)
    return _run(
        model,
        _gradcam,
        image=image,
        target=target,
        classes=classes,
        region=region,
        channel_axis=channel_axis,
        device=device,
        layer=layer_mod,
        relu=relu,
        full_model=model,
    )


def _gradcam(
    prep: _Prepared, *, layer: nn.Module, relu: bool, full_model: nn.Module
) -> SaliencyResult:
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(prep.wrapped, layer).attribute(
        prep.x, target=prep.target, relu_attributions=relu
    )
    layer_shape = tuple(int(s) for s in cam.shape[-2:])
    up = LayerAttribution.interpolate(cam, tuple(prep.x.shape[-2:]), interpolate_mode="bilinear")
    name = next((n for n, m in full_model.named_modules() if m is layer), "")
    a = up.detach()[0, 0].float().cpu().numpy().astype(np.float32)
    return SaliencyResult(
        map=a,
        method="gradcam",
        target=prep.target,
        per_channel=None,
        extra={"layer": name, "layer_shape": layer_shape, "target_logit": prep.logit},
    )


def occlusion(
    model: nn.Module,
    image: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    window: int = 8,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 8,
    device: str = "cpu",
) -> SaliencyResult:
    """Occlusion: the drop of the target score when a window is set to a baseline.

    All channels inside the window are occluded together. Each pixel gets the
    mean drop over the windows that cover it (captum's ``Occlusion``).

    Parameters
    ----------
    model, image, target, classes, region, channel_axis, device
        As in :func:`gradients`.
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
    SaliencyResult
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
    stride = max(1, window // 2) if stride is None else int(stride)
    if stride < 1:
        raise DlcbError("the occlusion stride must be at least 1 pixel")
    return _run(
        model,
        _occlusion,
        image=image,
        target=target,
        classes=classes,
        region=region,
        channel_axis=channel_axis,
        device=device,
        window=int(window),
        stride=stride,
        baseline=float(baseline),
        batch_size=batch_size,
    )


def _occlusion(
    prep: _Prepared, *, window: int, stride: int, baseline: float, batch_size: int
) -> SaliencyResult:
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
            perturbations_per_eval=max(1, batch_size),
        )
    n_windows = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    a = attr.detach()[0].float().cpu().numpy()
    # Every channel holds the same value (the window spans all channels).
    return SaliencyResult(
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


_DISPATCH = {
    "gradients": gradients,
    "smoothgrad": smoothgrad,
    "integrated-gradients": integrated_gradients,
    "gradcam": gradcam,
    "occlusion": occlusion,
}


def saliency(
    model: nn.Module,
    image: np.ndarray,
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
    device: str = "cpu",
) -> SaliencyResult:
    """Compute any saliency map with one signature.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier ``(B, C, Y, X) -> (B, K)`` or segmentation model
        ``(B, C, Y, X) -> (B, K, Y, X)``, taking normalised input.
    image : ndarray
        Normalised input, (Y, X) or with a channel axis.
    method : str
        One of :data:`METHODS`.
    target, classes, region, channel_axis, device
        As in :func:`gradients`.
    layer
        Grad-CAM layer (see :func:`gradcam`).
    window, stride
        Occlusion window and stride (see :func:`occlusion`).
    n_samples, noise_level, seed
        SmoothGrad settings (see :func:`smoothgrad`).
    n_steps
        Integrated-gradients steps (see :func:`integrated_gradients`).
    baseline : float or ndarray
        Reference input for integrated gradients and the occlusion fill value
        (occlusion needs a scalar).
    batch_size : int
        Inputs per forward pass for the sampling methods.

    Returns
    -------
    SaliencyResult
        ``map`` has the image's (Y, X) shape.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> saliency(m, np.random.rand(8, 8), method="gradients", target=0).map.shape
    (8, 8)
    """
    if method not in _DISPATCH:
        raise DlcbError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    common = {
        "target": target,
        "classes": classes,
        "region": region,
        "channel_axis": channel_axis,
        "device": device,
    }
    if method == "gradients":
        return gradients(model, image, **common)
    if method == "smoothgrad":
        return smoothgrad(
            model,
            image,
            n_samples=n_samples,
            noise_level=noise_level,
            batch_size=batch_size,
            seed=seed,
            **common,
        )
    if method == "integrated-gradients":
        return integrated_gradients(
            model, image, baseline=baseline, n_steps=n_steps, batch_size=batch_size, **common
        )
    if method == "gradcam":
        return gradcam(model, image, layer=layer, **common)
    if not np.isscalar(baseline):
        raise DlcbError("occlusion needs a scalar baseline value")
    return occlusion(
        model,
        image,
        window=window,
        stride=stride,
        baseline=float(baseline),
        batch_size=batch_size,
        **common,
    )
