"""Crops for a classifier: one size and channel count, datasets, the 8 dihedral views.

A crop classifier takes images of one shape. :func:`prepare_images` brings
images of any size and channel count to one ``(N, C, S, S)`` array (scale the
longer side, edge-pad to square, repeat or drop channels) and says what it
changed; :func:`unprepare_map` takes a map on a prepared crop back to the
original image's grid. :class:`CropDataset` serves normalised crops (with
augmentation) to the training engine, and :func:`dihedral_views` gives the 8
rotations/flips used for frozen-feature caching and test-time augmentation.
:class:`DenoisingDataset` serves (corrupted, clean) pairs (:func:`corrupt`:
masked patches and Gaussian noise) for autoencoder pretraining on unlabelled
crops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_dlcb.data.images import to_cyx
from napari_dlcb.errors import DlcbError

__all__ = [
    "CropDataset",
    "DenoisingDataset",
    "PreparedImages",
    "common_side",
    "corrupt",
    "dihedral_views",
    "most_common_channels",
    "prepare_images",
    "stratified_split",
    "unprepare_map",
]


@dataclass
class PreparedImages:
    """Images brought to one size and channel count, shape (N, C, S, S) float32."""

    data: np.ndarray
    notes: list[str] = field(default_factory=list)


def _fit_square(im: np.ndarray, size: int) -> np.ndarray:
    """Scale (C, Y, X) so its longer side is ``size``, then edge-pad to square."""
    from skimage.transform import resize

    c, h, w = im.shape
    if h == size and w == size:
        return im
    f = size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if (nh, nw) != (h, w):
        im = resize(im, (c, nh, nw), order=1, anti_aliasing=f < 1, preserve_range=True)
    ph, pw = size - nh, size - nw
    if ph or pw:
        im = np.pad(im, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="edge")
    return im


def most_common_channels(images: Sequence[np.ndarray], channel_axis: int | None = None) -> int:
    """The most common channel count of ``images`` (see :func:`~napari_dlcb.data.normalize.to_cyx`).

    Examples
    --------
    >>> most_common_channels([np.zeros((4, 4)), np.zeros((4, 4, 3)), np.zeros((5, 5))])
    1
    """
    return Counter(to_cyx(im, channel_axis).shape[0] for im in images).most_common(1)[0][0]


def prepare_images(
    images: Sequence[np.ndarray],
    *,
    size: int | None = None,
    channels: int | None = None,
    channel_axis: int | None = None,
) -> PreparedImages:
    """Bring images of any size and channel count to one (N, C, S, S) array.

    Parameters
    ----------
    images : sequence of ndarray
        2-D grey images, or RGB(A)/multichannel images (see ``channel_axis``).
    size : int, optional
        Output side length; default the most common longer side.
    channels : int, optional
        Output channel count; default the most common channel count. Grey
        images are repeated to fill extra channels; surplus channels are dropped.
    channel_axis : int, optional
        Channel axis of 3-D images; None guesses (last axis of 3/4 = RGB(A)).

    Returns
    -------
    PreparedImages
        ``data`` (float32, not yet normalised) and ``notes``: one line per
        kind of change made (resizing, padding, channel conversion), for the user.

    Examples
    --------
    >>> p = prepare_images([np.zeros((20, 20)), np.zeros((10, 20))], size=20)
    >>> p.data.shape, len(p.notes)
    ((2, 1, 20, 20), 1)
    """
    if len(images) == 0:
        raise DlcbError("there are no images")
    cyx = [to_cyx(im, channel_axis) for im in images]
    counts = Counter(im.shape[0] for im in cyx)
    c_out = int(channels) if channels is not None else counts.most_common(1)[0][0]
    sides = Counter(max(im.shape[1:]) for im in cyx)
    s_out = int(size) if size is not None else sides.most_common(1)[0][0]
    notes: list[str] = []
    n_resized = sum(1 for im in cyx if im.shape[1:] != (s_out, s_out))
    if n_resized:
        notes.append(
            f"{n_resized} of {len(cyx)} images were not {s_out}x{s_out}: resized to a longer "
            f"side of {s_out} px and edge-padded to square"
        )
    n_chan = sum(1 for im in cyx if im.shape[0] != c_out)
    if n_chan:
        notes.append(
            f"{n_chan} of {len(cyx)} images did not have {c_out} channel(s): grey images were "
            "repeated into every channel, extra channels dropped"
        )
    out = np.empty((len(cyx), c_out, s_out, s_out), np.float32)
    for i, im in enumerate(cyx):
        im = im.astype(np.float32, copy=False)
        if im.shape[0] < c_out:
            im = np.concatenate([im] + [im[:1]] * (c_out - im.shape[0]), axis=0)
        out[i] = _fit_square(im[:c_out], s_out)
    return PreparedImages(out, notes)


def unprepare_map(smap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo :func:`prepare_images`' scale-and-pad for a (S, S) map: back to ``shape``.

    Examples
    --------
    >>> unprepare_map(np.ones((16, 16), np.float32), (40, 30)).shape
    (40, 30)
    """
    from skimage.transform import resize

    h, w = shape
    s = smap.shape[0]
    if (h, w) == (s, s):
        return smap
    f = s / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    r0, c0 = (s - nh) // 2, (s - nw) // 2
    inner = smap[r0 : r0 + nh, c0 : c0 + nw]
    return resize(inner, (h, w), order=1, preserve_range=True).astype(np.float32)


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and flips of a ``(..., Y, X)`` tensor (square crops keep their shape).

    Examples
    --------
    >>> len(dihedral_views(torch.zeros(2, 1, 4, 4)))
    8
    """
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


class CropDataset(torch.utils.data.Dataset):
    """Normalised crops ``(N, C, S, S)`` and class indices as a torch dataset.

    Parameters
    ----------
    x : ndarray, shape (N, C, S, S)
        Normalised crops.
    y : ndarray of int, shape (N,)
        Class index of each crop.
    augment : callable, optional
        ``augment(image, labels, rng) -> (image, labels)``, e.g.
        :class:`~napari_dlcb.data.augment.Augment` (the labels are a dummy).
    seed : int
        Seed of the augmentation.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, augment: Any | None, seed: int) -> None:
        self.x, self.y = x, y
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._dummy = np.zeros(x.shape[-2:], np.int64)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im = self.x[i]
        if self.augment is not None:
            im, _ = self.augment(im, self._dummy, self.rng)
        return torch.from_numpy(np.ascontiguousarray(im, np.float32)), torch.tensor(int(self.y[i]))


def stratified_split(
    y: np.ndarray, n_classes: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of the validation rows: ``fraction`` of each class.

    A class with 2 or more items gives at least one and keeps at least one;
    a class with one item stays in training.

    Examples
    --------
    >>> int(stratified_split(np.array([0, 0, 0, 0, 1, 1]), 2, 0.25, np.random.default_rng(0)).sum())
    2
    """
    val_idx: list[int] = []
    for k in range(n_classes):
        idx = np.flatnonzero(y == k)
        n_val = int(round(fraction * len(idx)))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val_idx += list(rng.permutation(idx)[:n_val])
    mask = np.zeros(len(y), bool)
    mask[np.asarray(val_idx, int)] = True
    return mask


def common_side(
    images: Sequence[np.ndarray], channel_axis: int | None, fallback: int | None
) -> int | None:
    """The images' longer side when they all share one; else ``fallback``.

    Examples
    --------
    >>> common_side([np.zeros((20, 20)), np.zeros((20, 12))], None, 32)
    20
    >>> common_side([np.zeros((20, 20)), np.zeros((16, 16))], None, 32)
    32
    """
    sides = {max(to_cyx(im, channel_axis).shape[1:]) for im in images}
    return sides.pop() if len(sides) == 1 else fallback


def corrupt(
    x: torch.Tensor,
    *,
    noise: float = 0.2,
    mask_fraction: float = 0.4,
    patch: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A corrupted copy of normalised images: masked square patches and Gaussian noise.

    Parameters
    ----------
    x : Tensor, shape (B, C, Y, X) or (C, Y, X)
        Normalised images (zero mean, unit variance).
    noise : float
        Standard deviation of the additive Gaussian noise.
    mask_fraction : float
        Expected share of ``patch`` x ``patch`` squares set to 0 (the mean of
        normalised data), in every channel.
    patch : int
        Side of the masked squares in pixels.
    generator : torch.Generator, optional
        For reproducible corruption (e.g. a fixed validation set).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> y = corrupt(torch.ones(1, 1, 8, 8), noise=0.0, mask_fraction=0.5, patch=4, generator=g)
    >>> set(y.flatten().tolist()) <= {0.0, 1.0}
    True
    """
    single = x.ndim == 3
    xb = x[None] if single else x
    b, _, h, w = xb.shape
    out = xb.clone()
    if mask_fraction > 0:
        gh, gw = -(-h // patch), -(-w // patch)
        keep = torch.rand(b, 1, gh, gw, generator=generator) >= mask_fraction
        keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :h, :w]
        out = out * keep.to(out.device, out.dtype)
    if noise > 0:
        eps = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
        out = out + noise * eps
    return out[0] if single else out


class DenoisingDataset(torch.utils.data.Dataset):
    """(corrupted, clean) pairs of normalised crops for a denoising autoencoder.

    Parameters
    ----------
    x : ndarray, shape (N, C, S, S)
        Normalised crops.
    noise, mask_fraction, patch
        The corruption (see :func:`corrupt`).
    augment : bool
        A random one of the 8 rotations/flips of each crop (training).
    seed : int
        Seeds the augmentation and the corruption.
    fixed : bool
        The same corruption of item ``i`` every time, no augmentation
        (validation: comparable losses from epoch to epoch).

    Examples
    --------
    >>> ds = DenoisingDataset(np.ones((4, 1, 8, 8), np.float32), noise=0.1, fixed=True)
    >>> a, b = ds[2]
    >>> a.shape, bool(torch.equal(ds[2][0], a)), float(b.mean())
    (torch.Size([1, 8, 8]), True, 1.0)
    """

    def __init__(
        self,
        x: np.ndarray,
        *,
        noise: float = 0.2,
        mask_fraction: float = 0.4,
        patch: int = 4,
        augment: bool = False,
        seed: int = 0,
        fixed: bool = False,
    ) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.options = {"noise": noise, "mask_fraction": mask_fraction, "patch": patch}
        self.augment = augment and not fixed
        self.fixed = fixed
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.x[i]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i) if self.fixed else self.gen
        if self.augment and clean.shape[-1] == clean.shape[-2]:
            k = int(torch.randint(8, (1,), generator=gen))
            clean = dihedral_views(clean)[k]
        return corrupt(clean, generator=gen, **self.options), clean
