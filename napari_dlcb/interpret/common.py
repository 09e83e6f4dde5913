"""What every image attribution method shares: input, target, layer, model hand-back.

Each method (:mod:`~napari_dlcb.interpret.gradients`,
:mod:`~napari_dlcb.interpret.integrated_gradients`,
:mod:`~napari_dlcb.interpret.gradcam`, :mod:`~napari_dlcb.interpret.occlusion`)
has the one signature ``f(model, x, *, target=None, classes=None, region=None,
channel_axis=None, device="auto", ...)`` and returns an
:class:`~napari_dlcb.interpret.attribution.Attribution` on ``x``'s grid. This
module holds the steps they have in common:

- :func:`explaining`: a context manager that checks the model, moves ``x`` to
  the device as a ``(1, C, Y, X)`` tensor (:func:`~napari_dlcb.data.normalize.to_cyx`
  rule), resolves the explained class (:func:`resolve_target`) and hands the
  model back unchanged (:func:`~napari_dlcb.models.state.preserve_model_state`);
  it works inside ``torch.inference_mode`` too (the training engine's live preview);
- :class:`TargetModel`: any image model reduced to ``(B, K)`` scores, a
  segmentation model's logits summed over a region;
- :func:`resolve_layer`: the layer Grad-CAM and the network views work on;
- :func:`to_attribution`: the result, summed over input channels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.images import to_cyx
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.models.state import preserve_model_state

__all__ = [
    "METHODS",
    "Prepared",
    "Region",
    "TargetModel",
    "explaining",
    "input_tensor",
    "layer_name",
    "region_mask",
    "resolve_layer",
    "resolve_target",
    "run_to_end",
    "standard_options",
    "to_attribution",
]

#: the options every image method takes besides the model and the input
STANDARD_OPTIONS = ("target", "classes", "region", "channel_axis", "device")

#: the image attribution methods, by the name :func:`~napari_dlcb.interpret.saliency.saliency` takes
METHODS = ("gradients", "smoothgrad", "integrated-gradients", "gradcam", "occlusion")

Region = np.ndarray | tuple[slice, slice] | None


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


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` in ``model`` ("" if it is the model itself)."""
    return next((n for n, m in model.named_modules() if m is layer), "")


class TargetModel(nn.Module):
    """Reduce any image model to ``(B, K)`` scores that a ``target`` indexes.

    Classifier logits pass through. Segmentation logits ``(B, K, Y, X)`` are
    summed over ``mask`` (on the output grid; all pixels if None).
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` scores of ``x``."""
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


def input_tensor(x: Any, channel_axis: int | None) -> torch.Tensor:
    """``x`` as a float32 ``(1, C, Y, X)`` tensor (the package's one image rule).

    Examples
    --------
    >>> tuple(input_tensor(np.zeros((5, 6)), None).shape)
    (1, 1, 5, 6)
    """
    arr = to_cyx(np.asarray(x), channel_axis)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def region_mask(region: Region, shape: tuple[int, int]) -> torch.Tensor | None:
    """A float mask of ``region`` (boolean array or (rows, cols) slices) on ``shape``."""
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


def resolve_target(
    target: int | str | None,
    scores: torch.Tensor,
    *,
    classes: Sequence[str] | None = None,
    classifier: bool = True,
) -> int:
    """The index of the explained class.

    ``target`` may be an index, a name from ``classes``, or None: the class a
    classifier predicts (``scores`` of shape (1, K)), or class 1 (the first
    foreground class) of a segmentation model.

    Examples
    --------
    >>> resolve_target("b", torch.zeros(1, 3), classes=["a", "b", "c"])
    1
    """
    n_classes = int(scores.shape[1])
    if isinstance(target, str):
        names = list(classes or [])
        if target not in names:
            raise DlcbError(
                f"target class {target!r} does not exist; classes are: {', '.join(names) or 'unnamed'}"
            )
        target = names.index(target)
    if target is None:
        target = int(scores[0].argmax()) if classifier else (1 if n_classes > 1 else 0)
    target = int(target)
    if not 0 <= target < n_classes:
        raise DlcbError(
            f"target class {target} does not exist: the model has {n_classes} output "
            f"class{'es' if n_classes != 1 else ''} (0..{n_classes - 1})"
        )
    return target


@dataclass
class Prepared:
    """A model and input ready to explain (inside :func:`explaining`)."""

    model: nn.Module
    wrapped: TargetModel
    x: torch.Tensor
    target: int
    n_classes: int
    logit: float
    device: torch.device


def _prepare(
    model: nn.Module,
    x: Any,
    *,
    target: int | str | None,
    classes: Sequence[str] | None,
    region: Region,
    channel_axis: int | None,
    device: torch.device,
) -> Prepared:
    xt = input_tensor(x, channel_axis).to(device)
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # only the input needs a gradient
    mask = region_mask(region, tuple(xt.shape[-2:]))
    if mask is not None:
        mask = mask.to(device)
    wrapped = TargetModel(model, mask).to(device).eval()
    with torch.no_grad():
        raw = model(xt)
        if isinstance(raw, (tuple, list)):
            raw = raw[0]
        scores = wrapped.reduce(raw)  # one forward pass, not two
    t = resolve_target(target, scores, classes=classes, classifier=raw.ndim == 2)
    xt.requires_grad_(True)  # gradients flow to the input only
    return Prepared(model, wrapped, xt, t, int(scores.shape[1]), float(scores[0, t]), device)


@contextlib.contextmanager
def explaining(
    model: nn.Module,
    x: Any,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    device: Any = "auto",
) -> Iterator[Prepared]:
    """Prepare ``model`` and ``x`` for one attribution; hand the model back on exit.

    Inside the block the model is in eval mode on ``device`` with
    ``requires_grad`` off for its parameters and gradients enabled for the
    input, also when the caller runs under ``torch.inference_mode``. On exit
    mode, device, ``requires_grad``, ``.grad`` and hooks are restored.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, Y, X)`` to ``(B, K)`` or ``(B, K, Y, X)`` logits.
    x : ndarray
        The (normalised) model input, (Y, X) or with a channel axis.
    target, classes, region, channel_axis, device
        See :func:`~napari_dlcb.interpret.gradients.gradients`.

    Yields
    ------
    Prepared
    """
    if not isinstance(model, nn.Module):
        raise DlcbError("saliency needs a torch model (nn.Module)")
    dev = resolve_device(device)
    # inference_mode(False): callable from inside ``torch.inference_mode()`` too, e.g. the
    # training engine's live preview; tensors made here then take part in autograd.
    with torch.inference_mode(False), preserve_model_state(model):
        prep = _prepare(
            model,
            x,
            target=target,
            classes=classes,
            region=region,
            channel_axis=channel_axis,
            device=dev,
        )
        with torch.enable_grad():
            yield prep


def standard_options(options: dict[str, Any]) -> dict[str, Any]:
    """The :data:`STANDARD_OPTIONS` among a method's arguments (e.g. its ``locals()``).

    Examples
    --------
    >>> standard_options({"target": 1, "classes": None, "region": None,
    ...                   "channel_axis": None, "device": "cpu", "window": 8})["target"]
    1
    """
    return {k: options[k] for k in STANDARD_OPTIONS}


def to_attribution(
    attr: torch.Tensor,
    method: str,
    prep: Prepared,
    extra: dict[str, Any],
    *,
    completeness: float | None = None,
) -> Attribution:
    """An :class:`Attribution` from a ``(1, C, Y, X)`` attribution tensor."""
    a = attr.detach()[0].float().cpu().numpy()
    extra.setdefault("target_logit", prep.logit)
    return Attribution(
        map=a.sum(axis=0).astype(np.float32),
        method=method,
        target=prep.target,
        per_channel=a.astype(np.float32),
        completeness=None if completeness is None else np.array([completeness], np.float32),
        extra=extra,
    )


def run_to_end(gen: Generator[Any, None, Any]) -> Any:
    """Drain a generator (progress events) and return its return value.

    Examples
    --------
    >>> def g():
    ...     yield 1
    ...     return "done"
    >>> run_to_end(g())
    'done'
    """
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value
