"""The live view while a segmentation model trains: the viewport's prediction and saliency.

:class:`LivePreview` is the engine's ``preview`` callable. It runs in the
training thread between two optimiser steps, on the region of the image that
is on screen only, and within a time budget (:class:`~napari_dlcb.tasks.base.LiveBudget`):
the overlay takes at most ``share`` of the thread's time and comes no more
often than every ``interval`` seconds; a saliency map of the centre of the
viewport, when asked for, takes at most :data:`LIVE_SALIENCY_SHARE` more.
However slow the machine, training keeps the rest.

Importing this module is cheap (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import LiveBudget

__all__ = [
    "LIVE_SALIENCY",
    "LIVE_SALIENCY_SHARE",
    "PREVIEW_SHARE",
    "LivePreview",
    "centre_span",
    "yx_shape",
]

Region = tuple[slice, slice]

#: Live saliency while training: for each method, the largest side in pixels of the
#: explained crop (the centre of the viewport) and the method's settings. One map
#: should cost no more than a few training steps on a CPU, so the sampling methods
#: get a smaller crop and fewer samples than the Interpret dock uses. Measured with
#: the built-in 2 M-parameter U-Net on 2 CPU cores, where a training step on a
#: 256-px patch takes ~0.1 s: gradients / Grad-CAM on 256 px 0.1-0.15 s, SmoothGrad
#: (8 samples) / integrated gradients (16 steps) on 192 px 0.4-0.8 s, occlusion (64
#: windows of 16 px) on 128 px 0.5 s.
LIVE_SALIENCY: dict[str, tuple[int, dict[str, Any]]] = {
    "gradients": (256, {}),
    "gradcam": (256, {}),
    "smoothgrad": (192, {"n_samples": 8, "batch_size": 4}),
    "integrated-gradients": (192, {"n_steps": 16, "batch_size": 8}),
    "occlusion": (128, {"window": 16, "stride": 16, "batch_size": 8}),
}
#: Largest share of the training thread's time that live saliency may take: a map
#: that took ``t`` seconds is followed by previews without saliency for the next
#: ``t * (1 / share - 1)`` seconds (2 t for 1/3).
LIVE_SALIENCY_SHARE = 1 / 3
#: Largest share of the training thread's time that the live overlay may take (a
#: 512-px viewport costs ~0.3-1 s on 2 CPU cores: one overlay every ~1-2 s).
PREVIEW_SHARE = 0.5
#: the region predicted when the caller does not say what is on screen
DEFAULT_SIDE = 512


def centre_span(start: int, stop: int, size: int, multiple: int = 1) -> tuple[int, int]:
    """The centred sub-range of ``[start, stop)`` at most ``size`` long.

    Its length is rounded down to a multiple of ``multiple`` (models that need
    input sizes divisible by it) unless the range is shorter than that.

    Examples
    --------
    >>> centre_span(10, 90, 32)
    (34, 66)
    """
    n = min(stop - start, size)
    if n >= multiple > 1:
        n -= n % multiple
    lo = start + (stop - start - n) // 2
    return lo, lo + n


def yx_shape(image: Any, channel_axis: int | None) -> tuple[int, int]:
    """(rows, cols) of a 2-D or channelled image without reading it (the one channel rule).

    Examples
    --------
    >>> yx_shape(np.zeros((5, 7, 3)), None)
    (5, 7)
    """
    from napari_dlcb.data.images import channel_layout

    shape = tuple(image.shape)
    axis, _ = channel_layout(shape, channel_axis)
    yx = [s for i, s in enumerate(shape) if i != axis]
    return yx[0], yx[1]


class LivePreview:
    """``preview(net) -> dict | None``: the viewport's prediction when the budget allows.

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained (its current weights are used).
    meta : ModelMeta
        Its metadata (activation, label convention, classes).
    normalizer : Normalizer
        The training normaliser; a per-image one is frozen on the whole image
        once, on the first run.
    image : array-like
        The image whose viewport is shown.
    channel_axis : int, optional
        Channel axis of ``image``.
    device : str
        Where the model runs.
    region : callable, optional
        Returns the (row, col) slices on screen, or None (then the top-left
        512 x 512 pixels).
    interval : float
        Fewest seconds between two overlays.
    share : float
        Largest share of the time the overlay may take.
    saliency : str, optional
        A method of :data:`LIVE_SALIENCY`.
    window : callable, optional
        ``window(r0, r1, c0, c1) -> probabilities or None``: a cheaper way to
        predict the viewport (quick mode: the decoder on cached features);
        None falls back to a full prediction of the region.
    stop : threading.Event, optional
        The training's Stop: once set, no more views (Stop is not kept waiting).

    The returned dict has ``"probabilities"`` (K, h, w), ``"labels"`` (h, w)
    and ``"offset"`` (row0, col0); with saliency, some also carry
    ``"saliency"``, ``"saliency_offset"``, ``"saliency_method"`` and
    ``"saliency_target"``, or once ``"saliency_error"``.
    """

    def __init__(
        self,
        model: Any,
        meta: Any,
        normalizer: Any,
        image: Any,
        *,
        channel_axis: int | None,
        device: str,
        region: Callable[[], Region | None] | None = None,
        interval: float = 1.0,
        share: float = PREVIEW_SHARE,
        saliency: str | None = None,
        window: Callable[[int, int, int, int], Any] | None = None,
        stop: Any = None,
    ) -> None:
        if saliency is not None and saliency not in LIVE_SALIENCY:
            raise DlcbError(
                f"unknown live saliency method {saliency!r}; choose one of "
                + ", ".join(LIVE_SALIENCY)
            )
        self.model, self.meta, self.image = model, meta, image
        self.channel_axis, self.device, self.region_fn = channel_axis, device, region
        self._normalizer, self._frozen = normalizer, None
        self.budget = LiveBudget(share, min_interval=interval)
        self.method = saliency
        self.window = window
        self.stop = stop
        self.saliency_budget = LiveBudget(LIVE_SALIENCY_SHARE)
        self._saliency = None
        if saliency is not None:
            from napari_dlcb.interpret.saliency import saliency as saliency_fn

            self._saliency = saliency_fn

    def __call__(self, net: Any = None) -> dict[str, Any] | None:
        """The engine's preview hook: run if due, else None (costs nothing)."""
        if not self.budget.due() or (self.stop is not None and self.stop.is_set()):
            return None
        return self.run()

    @property
    def normalizer(self) -> Any:
        """The normaliser with this image's statistics (frozen on first use)."""
        if self._frozen is None:
            from napari_dlcb.inference import freeze_normalizer

            self._frozen = freeze_normalizer(
                self._normalizer, self.image, channel_axis=self.channel_axis
            )
        return self._frozen

    def region(self) -> tuple[int, int, int, int] | None:
        """(r0, r1, c0, c1) of the viewport clipped to the image, or None if empty."""
        h, w = yx_shape(self.image, self.channel_axis)
        reg = self.region_fn() if self.region_fn is not None else None
        if reg is None:
            reg = (slice(0, min(h, DEFAULT_SIDE)), slice(0, min(w, DEFAULT_SIDE)))
        rs, cs = reg
        r0, r1 = max(rs.start or 0, 0), min(rs.stop or h, h)
        c0, c1 = max(cs.start or 0, 0), min(cs.stop or w, w)
        if r1 <= r0 or c1 <= c0:
            return None
        return r0, r1, c0, c1

    def run(self) -> dict[str, Any] | None:
        """Predict the viewport now (and a saliency map if its budget allows)."""
        from napari_dlcb.inference import labels_from_probabilities, predict_viewport
        from napari_dlcb.models.spec import InferenceSpec

        box = self.region()
        if box is None:
            return None
        r0, r1, c0, c1 = box
        with self.budget.spend():  # the saliency map keeps its own budget
            prob = self.window(r0, r1, c0, c1) if self.window is not None else None
            if prob is None:
                spec = InferenceSpec.from_meta(self.meta)
                prob = predict_viewport(
                    self.model,
                    self.image,
                    (slice(r0, r1), slice(c0, c1)),
                    normalizer=self.normalizer,
                    channel_axis=self.channel_axis,
                    activation=spec.activation,
                    halo=spec.halo,
                    size_multiple=spec.size_multiple,
                    device=self.device,
                )
            out = {
                "probabilities": prob,
                "labels": labels_from_probabilities(prob, self.meta),
                "offset": (r0, c0),
            }
        if self._saliency is not None and self.saliency_budget.due():
            out.update(self.saliency_map(r0, r1, c0, c1))
        return out

    def saliency_map(self, r0: int, r1: int, c0: int, c1: int) -> dict[str, Any]:
        """A saliency map of the centre of the viewport with the current weights.

        Runs between two optimiser steps; ``saliency`` hands the model back
        unchanged (mode, ``requires_grad``, ``.grad``, hooks). If the method
        cannot explain this model, says so once and never tries again.
        """
        from napari_dlcb.data.images import to_cyx

        method = self.method
        side, settings = LIVE_SALIENCY[method]
        with self.saliency_budget.spend():
            multiple = int((self.meta.extra or {}).get("size_multiple") or 1)
            a0, a1 = centre_span(r0, r1, side, multiple)
            b0, b1 = centre_span(c0, c1, side, multiple)
            crop = to_cyx(np.asarray(self.image), self.channel_axis)[:, a0:a1, b0:b1]
            x = self.normalizer(crop, channel_axis=0)
            try:
                res = self._saliency(
                    self.model,
                    x,
                    method=method,
                    channel_axis=0,
                    classes=list(self.meta.classes),
                    device=self.device,
                    **settings,
                )
            except (DlcbError, RuntimeError) as err:  # e.g. Grad-CAM without convolutions
                text = str(err).strip()
                msg = text.splitlines()[0] if text else type(err).__name__
                reason = f"live {method} saliency is unavailable: {msg}"
                self.saliency_budget.disable(reason)
                return {"saliency_error": reason}
        return {
            "saliency": res.map,
            "saliency_offset": (a0, b0),
            "saliency_method": method,
            "saliency_target": res.target,
        }
