"""Integrated gradients for image models, with the completeness error and progress.

Path integral of the gradient from a baseline to the input (Sundararajan et al.
2017), by Gauss-Legendre quadrature as in captum. :func:`iter_integrated_gradients`
is the same computation as a generator: it yields a
:class:`~napari_dlcb.training.events.JobProgress` after every batch of path
points and ends early (returning None) when ``stop`` is set, so a GUI can show
progress and cancel a whole-image map of a large model.

The DNA counterpart (one-hot (N, 4, L) input) lives in
:mod:`napari_dlcb.interpret.dna_attribution`; both return
:class:`~napari_dlcb.interpret.attribution.Attribution`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.interpret.common import (
    Prepared,
    Region,
    explaining,
    input_tensor,
    run_to_end,
    standard_options,
    to_attribution,
)
from napari_dlcb.training.events import JobProgress

__all__ = ["integrated_gradients", "iter_integrated_gradients"]


def integrated_gradients(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    baseline: float | np.ndarray = 0.0,
    n_steps: int = 32,
    batch_size: int = 8,
    device: Any = "auto",
) -> Attribution:
    """Integrated gradients from a baseline, with the completeness error.

    Parameters
    ----------
    model, x, target, classes, region, channel_axis, device
        As in :func:`~napari_dlcb.interpret.gradients.gradients`.
    baseline : float or ndarray
        Reference input (same shape as ``x``, or a scalar). 0 is a black
        image in normalised units.
    n_steps : int
        Steps of the Gauss-Legendre path integral.
    batch_size : int
        Path points evaluated per forward pass.

    Returns
    -------
    Attribution
        ``completeness`` is ``sum(map) - (F(x) - F(baseline))``;
        ``extra["completeness_error"]`` its absolute value,
        ``extra["relative_completeness_error"]`` that divided by
        ``|F(x) - F(baseline)|``, and ``extra["output_difference"]`` the difference.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> r = integrated_gradients(m, np.random.rand(8, 8), target=0)
    >>> r.extra["completeness_error"] < 1e-4
    True
    """
    return run_to_end(
        iter_integrated_gradients(
            model,
            x,
            target=target,
            classes=classes,
            region=region,
            channel_axis=channel_axis,
            baseline=baseline,
            n_steps=n_steps,
            batch_size=batch_size,
            device=device,
        )
    )


def iter_integrated_gradients(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    baseline: float | np.ndarray = 0.0,
    n_steps: int = 32,
    batch_size: int = 8,
    device: Any = "auto",
    stop: Any = None,
) -> Generator[JobProgress, None, Attribution | None]:
    """:func:`integrated_gradients` as a generator of progress events.

    Yields a ``JobProgress(done, n_steps)`` after each batch of path points
    and returns the :class:`Attribution` (``StopIteration.value``), or None
    if ``stop`` (a ``threading.Event``) was set. The model is in eval mode
    without parameter gradients between two yields and is handed back
    unchanged when the generator ends or is closed.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> gen = iter_integrated_gradients(m, np.random.rand(8, 8), n_steps=8, batch_size=4)
    >>> [p.done for p in gen]
    [4, 8]
    """
    if int(n_steps) < 2:
        raise DlcbError("n_steps must be at least 2")
    n_steps, batch_size = int(n_steps), max(1, int(batch_size))
    with explaining(model, x, **standard_options(locals())) as prep:
        base = _baseline_tensor(baseline, prep, channel_axis)
        # Gauss-Legendre nodes and weights on [0, 1] (captum's default "gausslegendre")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        alphas, steps = 0.5 * (1 + nodes), 0.5 * weights
        delta_x = prep.x.detach() - base
        total = torch.zeros_like(prep.x)
        for i in range(0, n_steps, batch_size):
            a = torch.as_tensor(alphas[i : i + batch_size], dtype=prep.x.dtype, device=prep.device)
            w = torch.as_tensor(steps[i : i + batch_size], dtype=prep.x.dtype, device=prep.device)
            points = (base + a.view(-1, 1, 1, 1) * delta_x).requires_grad_(True)
            score = prep.wrapped(points)[:, prep.target]
            (grad,) = torch.autograd.grad(score.sum(), points)
            total += (grad.detach() * w.view(-1, 1, 1, 1)).sum(0, keepdim=True)
            yield JobProgress(min(i + batch_size, n_steps), n_steps, "integrated gradients")
            if stop is not None and stop.is_set():
                return None
        return _finish(total * delta_x, base, prep, n_steps)


def _baseline_tensor(
    baseline: float | np.ndarray, prep: Prepared, channel_axis: int | None
) -> torch.Tensor:
    if np.isscalar(baseline):
        return torch.full_like(prep.x.detach(), float(baseline))
    b = input_tensor(np.asarray(baseline), channel_axis).to(prep.device)
    if b.shape != prep.x.shape:
        raise DlcbError(
            f"baseline shape {tuple(b.shape[1:])} differs from the image's {tuple(prep.x.shape[1:])}"
        )
    return b


def _finish(attr: torch.Tensor, base: torch.Tensor, prep: Prepared, n_steps: int) -> Attribution:
    with torch.no_grad():
        diff = float(prep.wrapped(prep.x)[0, prep.target] - prep.wrapped(base)[0, prep.target])
    delta = float(attr.sum()) - diff
    err = abs(delta)
    extra = {
        "completeness_error": err,
        "relative_completeness_error": err / max(abs(diff), 1e-12),
        "output_difference": diff,
        "n_steps": n_steps,
    }
    return to_attribution(attr, "integrated-gradients", prep, extra, completeness=delta)
