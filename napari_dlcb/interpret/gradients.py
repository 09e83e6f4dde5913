"""Gradient maps: the vanilla gradient and SmoothGrad.

* :func:`gradients` - the gradient of the target score with respect to each
  input pixel (Simonyan et al. 2014);
* :func:`smoothgrad` - gradients averaged over noisy copies of the input
  (Smilkov et al. 2017).

Both wrap captum (Kokhlikyan et al. 2020), share the signature of every image
method (see :mod:`~napari_dlcb.interpret.common`) and hand the model back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.interpret.common import Region, explaining, standard_options, to_attribution

__all__ = ["gradients", "smoothgrad"]


def gradients(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    device: Any = "auto",
) -> Attribution:
    """Vanilla gradient of the target score with respect to each input pixel.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, Y, X)`` to ``(B, K)`` or ``(B, K, Y, X)`` logits.
    x : ndarray, shape (Y, X) or with a channel axis
        The (normalised) model input; any real dtype.
    target : int or str, optional
        Class index, or a name from ``classes``. Default: the predicted class
        of a classifier, class 1 (first foreground class) of a segmentation model.
    classes : sequence of str, optional
        Class names, to accept ``target`` by name.
    region : ndarray of bool or (slice, slice), optional
        Segmentation models: pixels over which the class logit is summed.
    channel_axis : int, optional
        Axis of ``x`` holding channels; None: a 2-D image is grey, a 3-D one
        follows :func:`~napari_dlcb.data.normalize.to_cyx`.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    Attribution
        Signed gradient map (Y, X), summed over channels.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.LazyLinear(3))
    >>> _ = m(torch.zeros(1, 1, 8, 8))
    >>> r = gradients(m, np.random.rand(8, 8), target=2, device="cpu")
    >>> r.map.shape, r.target
    ((8, 8), 2)
    """
    from captum.attr import Saliency

    with explaining(model, x, **standard_options(locals())) as prep:
        attr = Saliency(prep.wrapped).attribute(prep.x, target=prep.target, abs=False)
        return to_attribution(attr, "gradients", prep, {})


def smoothgrad(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    region: Region = None,
    channel_axis: int | None = None,
    n_samples: int = 16,
    noise_level: float = 0.15,
    batch_size: int = 4,
    seed: int = 0,
    device: Any = "auto",
) -> Attribution:
    """SmoothGrad: gradients averaged over copies of the input with Gaussian noise.

    Parameters
    ----------
    model, x, target, classes, region, channel_axis, device
        As in :func:`gradients`.
    n_samples : int
        Number of noisy copies.
    noise_level : float
        Noise standard deviation as a fraction of the input's value range
        (Smilkov et al. recommend 0.1-0.2).
    batch_size : int
        Noisy copies evaluated per forward pass.
    seed : int
        Seed of the noise, so maps are reproducible (the global RNG is left alone).

    Returns
    -------
    Attribution
        Averaged signed gradient map; ``extra["noise_std"]`` is the noise used.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> smoothgrad(m, np.random.rand(8, 8), n_samples=4).map.shape
    (8, 8)
    """
    from captum.attr import NoiseTunnel, Saliency

    if n_samples < 1:
        raise DlcbError("n_samples must be at least 1")
    with explaining(model, x, **standard_options(locals())) as prep:
        span = float(prep.x.detach().max() - prep.x.detach().min()) or 1.0
        std = noise_level * span
        devices = [prep.device] if prep.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            attr = NoiseTunnel(Saliency(prep.wrapped)).attribute(
                prep.x,
                nt_type="smoothgrad",
                nt_samples=n_samples,
                nt_samples_batch_size=max(1, batch_size),
                stdevs=std,
                target=prep.target,
                abs=False,
            )
        return to_attribution(attr, "smoothgrad", prep, {"noise_std": std, "n_samples": n_samples})
