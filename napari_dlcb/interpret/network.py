"""Looking at the network: filters, maximally activating patches, generated inputs.

These are the classic views of what a CNN has learnt (Zeiler & Fergus 2014;
Erhan et al. 2009; Olah et al. 2017). Every function hands the model back
unchanged (:func:`~napari_dlcb.models.state.preserve_model_state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.common import input_tensor, resolve_layer
from napari_dlcb.models.state import preserve_model_state

__all__ = [
    "TopPatches",
    "activation_maximisation",
    "filter_grid",
    "first_conv",
    "layer_activations",
    "receptive_field",
    "top_activating_patches",
]


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` of ``model`` in registration order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise DlcbError("this model has no 2-D convolution layer")


def _grid(tiles: np.ndarray, n_cols: int, pad: int, fill: float) -> np.ndarray:
    n, h, w = tiles.shape[:3]
    rest = tiles.shape[3:]
    n_rows = int(np.ceil(n / n_cols))
    out = np.full(
        (n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, *rest), fill, dtype=np.float32
    )
    for i in range(n):
        r, c = divmod(i, n_cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = tiles[i]
    return out


def filter_grid(
    model: nn.Module,
    *,
    layer: str | nn.Module | None = None,
    zoom: int = 8,
    pad: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolution filters tiled into one image (first layer by default).

    Filters of a layer with 3 input channels are shown as RGB tiles; otherwise
    each output filter is a row with one tile per input channel (a single
    input channel gives a near-square grid). Every tile is scaled to [0, 1]
    symmetrically around 0 (0.5 = zero weight), and enlarged ``zoom`` times
    with nearest-neighbour sampling.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str or torch.nn.Module, optional
        A convolution; default the first one.
    zoom : int
        Pixels per kernel element.
    pad : int
        Gap between tiles (in zoomed pixels), filled with 0.5.

    Returns
    -------
    grid : ndarray of float32, shape (H, W) or (H, W, 3)
    weights : ndarray of float32, shape (out, in, kh, kw)

    Examples
    --------
    >>> from torch import nn
    >>> grid, w = filter_grid(nn.Conv2d(1, 6, 3), zoom=2)
    >>> w.shape, grid.shape
    ((6, 1, 3, 3), (15, 22))
    """
    conv = first_conv(model) if layer is None else resolve_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise DlcbError("filters can only be shown for a 2-D convolution layer")
    w = conv.weight.detach().float().cpu().numpy()
    o, i, kh, kw = w.shape
    scale = np.abs(w).reshape(o, -1).max(1).reshape(o, 1, 1, 1)
    wn = 0.5 + 0.5 * w / np.maximum(scale, 1e-12)
    wn = wn.repeat(zoom, axis=2).repeat(zoom, axis=3)
    if i == 3:
        tiles = np.moveaxis(wn, 1, -1)  # (o, h, w, 3)
        n_cols = int(np.ceil(np.sqrt(o)))
    elif i == 1:
        tiles = wn[:, 0]
        n_cols = int(np.ceil(np.sqrt(o)))
    else:
        tiles = wn.reshape(o * i, kh * zoom, kw * zoom)
        n_cols = i
    return _grid(tiles, n_cols, pad, 0.5), w


def _as_batch(
    images: Sequence[np.ndarray] | np.ndarray, channel_axis: int | None
) -> list[torch.Tensor]:
    """(1, C, Y, X) tensors of one 2-D image or a sequence of images."""
    seq = [images] if isinstance(images, np.ndarray) and images.ndim == 2 else images
    out = []
    for im in seq:
        if np.ndim(im) not in (2, 3):
            raise DlcbError(f"expected 2-D images, got shape {np.shape(im)}")
        out.append(input_tensor(im, channel_axis))
    if not out:
        raise DlcbError("no images were given")
    return out


def layer_activations(
    model: nn.Module,
    image: np.ndarray,
    *,
    layer: str | nn.Module | None = None,
    channel_axis: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Output of ``layer`` for one (normalised) image, shape (F, h, w).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    >>> layer_activations(m, np.zeros((8, 8)), layer="0").shape
    (4, 8, 8)
    """
    mod = resolve_layer(model, layer)
    dev = resolve_device(device)
    x = _as_batch([image], channel_axis)[0].to(dev)
    store: dict[str, torch.Tensor] = {}
    with preserve_model_state(model):
        model.to(dev).eval()
        handle = mod.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
    a = store["a"]
    if a.ndim != 4:
        raise DlcbError(f"layer output has shape {tuple(a.shape)}; choose a convolution layer")
    return a[0].float().cpu().numpy()


def receptive_field(
    model: nn.Module,
    *,
    layer: str | nn.Module,
    in_channels: int,
    size: int = 128,
    device: str = "cpu",
) -> int:
    """Side of a layer's receptive field in input pixels, measured by back-propagation.

    The gradient of one central activation with respect to the input is
    non-zero exactly on the receptive field; its bounding box is returned
    (capped at ``size``).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
    >>> receptive_field(m, layer="1", in_channels=1, size=16)
    5
    """
    mod = resolve_layer(model, layer)
    dev = resolve_device(device)
    store: dict[str, torch.Tensor] = {}
    with preserve_model_state(model):
        model.to(dev).eval()
        x = torch.rand(1, in_channels, size, size, device=dev, requires_grad=True)
        handle = mod.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            with torch.enable_grad():
                model(x)
                a = store["a"]
                h, w = a.shape[-2:]
                a[0, :, h // 2, w // 2].sum().backward()
        finally:
            handle.remove()
        g = x.grad[0].abs().sum(0).cpu().numpy()
    rows, cols = np.nonzero(g)
    if rows.size == 0:
        return 1
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


@dataclass
class TopPatches:
    """The top-k input patches for one channel of one layer.

    Attributes
    ----------
    patches : ndarray of float32, shape (k, C, P, P)
        Input patches (edge-padded where they leave the image).
    grid : ndarray of float32, shape (H, W)
        The patches' first channel tiled into one image, each scaled to [0, 1].
    locations : ndarray of float, shape (k, 3)
        (image index, row, col) of each patch centre on the input grid: ready
        for a napari Points layer.
    values : ndarray of float32, shape (k,)
        The activation at each location.
    patch_size : int
        ``P``, the layer's receptive field (or the requested size).
    """

    patches: np.ndarray
    grid: np.ndarray
    locations: np.ndarray
    values: np.ndarray
    patch_size: int


def top_activating_patches(
    model: nn.Module,
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    layer: str | nn.Module | None = None,
    channel: int = 0,
    k: int = 16,
    patch_size: int | None = None,
    channel_axis: int | None = None,
    device: str = "cpu",
) -> TopPatches:
    """Find the k input patches that activate one channel of a layer the most.

    Activations are computed on whole images, local maxima are kept (one per
    patch-sized neighbourhood, so the k patches differ), and the input patch
    centred on each maximum is cut out.

    Parameters
    ----------
    model : torch.nn.Module
        The network (fully convolutional up to ``layer``).
    images : ndarray or sequence of ndarray
        Normalised input images ("the open images").
    layer : str or torch.nn.Module, optional
        Default: the last convolution larger than 1x1.
    channel : int
        Channel of the layer's output.
    k : int
        Number of patches.
    patch_size : int, optional
        Default: the layer's measured receptive field (at most 64).
    channel_axis : int, optional
        Channel axis of multichannel images.
    device : str
        "cpu", "cuda" or "auto".

    Returns
    -------
    TopPatches

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    >>> img = np.zeros((32, 32)); img[5, 7] = 10
    >>> with torch.no_grad():
    ...     _ = m[0].weight.zero_(); _ = m[0].bias.zero_(); m[0].weight[:, 0, 1, 1] = 1.0
    >>> tp = top_activating_patches(m, img, layer="0", channel=1, k=1)
    >>> tp.locations.tolist()
    [[0.0, 5.0, 7.0]]
    """
    mod = resolve_layer(model, layer)
    xs = _as_batch(images, channel_axis)
    c_in = int(xs[0].shape[1])
    if patch_size is None:
        patch_size = min(64, receptive_field(model, layer=mod, in_channels=c_in, device=device))
    patch_size = max(1, int(patch_size))
    cands: list[tuple[float, int, float, float]] = []
    for idx, x in enumerate(xs):
        act = layer_activations(model, x[0].numpy(), layer=mod, channel_axis=0, device=device)
        if not 0 <= channel < act.shape[0]:
            raise DlcbError(
                f"channel {channel} does not exist: the layer has {act.shape[0]} channels"
            )
        cands += _peaks(act[channel], x.shape[-2:], idx, patch_size, k)
    cands = sorted(cands, key=lambda t: -t[0])[:k]
    patches = _cut_patches(xs, cands, c_in, patch_size)
    locations = np.array([[i, r, c] for _, i, r, c in cands], float).reshape(-1, 3)
    values = np.array([v for v, *_ in cands], np.float32)
    return TopPatches(patches, _patch_grid(patches), locations, values, patch_size)


def _peaks(
    a: np.ndarray, in_shape: tuple[int, int], idx: int, patch_size: int, k: int
) -> list[tuple[float, int, float, float]]:
    """The k highest local maxima of one activation map: (value, image, row, col) on the input grid."""
    from scipy import ndimage as ndi

    h, w = a.shape
    sy, sx = in_shape[0] / h, in_shape[1] / w
    nbh = max(1, int(round(patch_size / max(sy, sx))))
    peaks = (a == ndi.maximum_filter(a, size=nbh, mode="nearest")) & np.isfinite(a)
    rr, cc = np.nonzero(peaks)
    order = np.argsort(-a[rr, cc])[:k]
    return [
        (float(a[r, c]), idx, (r + 0.5) * sy - 0.5, (c + 0.5) * sx - 0.5)
        for r, c in zip(rr[order], cc[order])
    ]


def _cut_patches(
    xs: list[torch.Tensor], cands: list[tuple[float, int, float, float]], c_in: int, size: int
) -> np.ndarray:
    """Input patches (k, C, P, P) centred on the candidates (edge-padded at borders)."""
    half = size // 2
    patches = np.zeros((len(cands), c_in, size, size), np.float32)
    for j, (_, idx, r, c) in enumerate(cands):
        arr = xs[idx][0].numpy()
        p = np.pad(arr, ((0, 0), (size, size), (size, size)), mode="edge")
        r0, c0 = int(round(r)) - half + size, int(round(c)) - half + size
        patches[j] = p[:, r0 : r0 + size, c0 : c0 + size]
    return patches


def _patch_grid(patches: np.ndarray) -> np.ndarray:
    """The patches' first channel, each scaled to [0, 1], tiled into one image."""
    if not len(patches):
        return np.zeros((1, 1), np.float32)
    tiles = patches[:, 0].copy()
    flat = tiles.reshape(len(tiles), -1)
    lo, hi = flat.min(1).reshape(-1, 1, 1), flat.max(1).reshape(-1, 1, 1)
    tiles = (tiles - lo) / np.maximum(hi - lo, 1e-12)
    return _grid(tiles, int(np.ceil(np.sqrt(len(tiles)))), 1, 0.0)


def activation_maximisation(
    model: nn.Module,
    *,
    layer: str | nn.Module | None = None,
    channel: int = 0,
    in_channels: int = 1,
    shape: tuple[int, int] = (64, 64),
    steps: int = 128,
    lr: float = 0.05,
    l2: float = 1e-3,
    tv: float = 1e-2,
    jitter: int = 2,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, list[float]]:
    """Generate an input that maximises the mean activation of one channel.

    Gradient ascent from small noise with L2 and total-variation penalties and
    random jitter (Olah et al. 2017), so the result is a plausible image rather
    than adversarial high-frequency noise.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str or torch.nn.Module, optional
        Default: the last convolution larger than 1x1.
    channel : int
        Channel to maximise.
    in_channels : int
        Input channels of the model.
    shape : tuple of int
        Size of the generated image.
    steps, lr : int, float
        Adam steps and learning rate.
    l2, tv : float
        Weights of the L2 and total-variation penalties.
    jitter : int
        Maximum random shift (pixels) per step.
    seed : int
        Seed of the initial noise and jitter.
    device : str
        "cpu", "cuda" or "auto".

    Returns
    -------
    image : ndarray of float32, shape (C, Y, X)
        The generated (normalised) input.
    trace : list of float
        Mean activation of the channel after each step.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    >>> img, trace = activation_maximisation(m, layer="0", channel=0, shape=(16, 16), steps=10)
    >>> img.shape, trace[-1] > trace[0]
    ((1, 16, 16), True)
    """
    mod = resolve_layer(model, layer)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    with preserve_model_state(model):
        model.to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = (0.01 * torch.randn(1, in_channels, *shape, generator=gen)).to(dev)
        x.requires_grad_(True)
        trace = _ascend(
            model, mod, x, channel, gen, steps=steps, lr=lr, l2=l2, tv=tv, jitter=jitter
        )
    return x.detach()[0].cpu().numpy().astype(np.float32), trace


def _ascend(
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    channel: int,
    gen: torch.Generator,
    *,
    steps: int,
    lr: float,
    l2: float,
    tv: float,
    jitter: int,
) -> list[float]:
    """Adam ascent of ``x`` on the channel's mean activation; the trace of that mean."""
    store: dict[str, torch.Tensor] = {}
    trace: list[float] = []
    opt = torch.optim.Adam([x], lr=lr)
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            for _ in range(steps):
                shift = (
                    torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
                    if jitter
                    else (0, 0)
                )
                model(torch.roll(x, shifts=tuple(shift), dims=(-2, -1)))
                act = _channel_mean(store["a"], channel)
                loss = -act + l2 * (x**2).mean() + tv * _total_variation(x)
                opt.zero_grad()
                loss.backward()
                opt.step()
                trace.append(float(act.detach()))
    finally:
        handle.remove()
    return trace


def _channel_mean(a: torch.Tensor, channel: int) -> torch.Tensor:
    if a.ndim != 4 or not 0 <= channel < a.shape[1]:
        raise DlcbError(f"channel {channel} does not exist in a layer of shape {tuple(a.shape)}")
    return a[0, channel].mean()


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()
