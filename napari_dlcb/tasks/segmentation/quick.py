"""Quick mode: the U-Net's encoder is frozen, its features cached, the decoder trains.

The encoder runs once over the annotated part of each image (its bounding box
plus half a patch of context, see :func:`encode_regions`); every epoch then
trains the decoder on aligned crops of those features, which costs a fraction
of a full forward and backward pass. With a pretrained head the starting
decoder's probabilities on the same region are kept too (:func:`teacher`), so
the loss can hold the model to what it knew where nothing is painted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.labels import IGNORE
from napari_dlcb.data.patches import FeatureDataset, ListDataset
from napari_dlcb.models.state import inference_mode_on
from napari_dlcb.tasks.segmentation.start import TrainNet
from napari_dlcb.training.frozen import cached_features

__all__ = ["QuickHead", "QuickView", "Region", "encode_regions", "quick_datasets", "teacher"]


class QuickHead(TrainNet):
    """The decoder of a U-Net as a network of its cached encoder features."""

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """Decode the features (full to coarsest resolution) into logits."""
        shape = [features[0].shape[-2], features[0].shape[-1]]
        return self.model.decode(list(features), shape)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


@contextlib.contextmanager
def fast_format(module: nn.Module) -> Iterator[None]:
    """Channels-last memory format while it runs, then as it was.

    2-D convolutions run ~1.5x faster channels-last on CPUs with oneDNN (the
    built-in U-Net's decoder on 512 x 512 features: 1.3 s instead of 2.0 s on
    a loaded 2-core box). During training the engine already uses it.
    """
    weights = [p for p in module.parameters() if p.dim() == 4]
    # under inference mode, converting would turn the weights into inference tensors
    switch = (
        bool(weights)
        and not torch.is_inference_mode_enabled()
        and not all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    )
    if switch:
        module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if switch:
            module.to(memory_format=torch.contiguous_format)


@dataclass
class Region:
    """Cached encoder features of one image's annotated box, with its targets cut to it."""

    feats: list[torch.Tensor]
    train: np.ndarray | None
    val: np.ndarray | None
    box: tuple[int, int, int, int]  # r0, c0, height, width in the image (height may pad)


def _box(lab: np.ndarray, p: int, m: int) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(lab.any(1)), np.flatnonzero(lab.any(0))
    h, w = lab.shape
    r0, r1 = max(rows[0] - p // 2, 0), min(rows[-1] + p // 2 + 1, h)
    c0, c1 = max(cols[0] - p // 2, 0), min(cols[-1] + p // 2 + 1, w)
    return int(r0), int(c0), max(-(-(r1 - r0) // m) * m, p), max(-(-(c1 - c0) // m) * m, p)


def _cut(t: np.ndarray | None, box: tuple[int, int, int, int]) -> np.ndarray | None:
    if t is None:
        return None
    r0, c0, hh, ww = box
    out = np.full((hh, ww), IGNORE, np.int64)
    sub = t[r0 : r0 + hh, c0 : c0 + ww]
    out[: sub.shape[0], : sub.shape[1]] = sub
    return out


def encode_regions(
    unet: nn.Module,
    images: list[np.ndarray],
    train_t: dict[int, np.ndarray],
    val_t: dict[int, np.ndarray],
    *,
    patch: int,
    device: str,
) -> dict[int, Region]:
    """Encode the annotated box of every image once (eval mode, no gradients).

    Parameters
    ----------
    unet : torch.nn.Module
        Has ``encode(x) -> list of features`` and a ``multiple`` (input sizes).
    images : list of ndarray
        Normalised (C, Y, X) images.
    train_t, val_t : dict of int to ndarray
        Training and validation targets by image index.
    patch : int
        Training patch side; the box gets half a patch of context each side.
    device : str
        Where the encoder runs (features are kept on the CPU).
    """
    m = int(getattr(unet, "multiple", 16))
    p = max(patch // m * m, m)
    dev = torch.device(device)
    unet.to(dev)
    regions: dict[int, Region] = {}
    for i in sorted(set(train_t) | set(val_t)):
        lab = np.zeros(images[i].shape[1:], bool)
        for d in (train_t, val_t):
            if i in d:
                lab |= d[i] >= 0
        if not lab.any():
            continue
        box = r0, c0, hh, ww = _box(lab, p, m)
        img = images[i][:, r0 : r0 + hh, c0 : c0 + ww]
        pad = ((0, 0), (0, hh - img.shape[1]), (0, ww - img.shape[2]))
        mode = "reflect" if min(img.shape[1:]) > max(pad[1][1], pad[2][1]) else "edge"
        x = _channels_last(torch.from_numpy(np.pad(img, pad, mode=mode))[None].to(dev))
        with fast_format(unet):
            (feats,) = cached_features(unet.encode, [x], module=unet)
        regions[i] = Region(
            [f[0].contiguous() for f in feats],
            _cut(train_t.get(i), box),
            _cut(val_t.get(i), box),
            box,
        )
    return regions


def teacher(unet: nn.Module, region: Region, *, binary: bool, device: str) -> torch.Tensor:
    """The current decoder's probabilities (K, H, W) on a region's cached features."""
    was = unet.training
    dev = torch.device(device)
    unet.eval()
    try:
        with fast_format(unet), torch.inference_mode():
            feats = [_channels_last(f[None].to(dev)) for f in region.feats]
            logits = unet.decode(feats, list(region.feats[0].shape[-2:]))
            prob = torch.sigmoid(logits) if binary else torch.softmax(logits, 1)
    finally:
        unet.train(was)
    return prob[0].float().cpu().contiguous()


def quick_datasets(
    regions: dict[int, Region],
    train_images: list[int],
    *,
    patch: int,
    n: int,
    seed: int,
    binary: bool,
    teachers: dict[int, torch.Tensor] | None = None,
) -> tuple[FeatureDataset, ListDataset | None]:
    """Training crops of the cached features and validation tiles of the held-out part."""
    tr = [
        i
        for i in train_images
        if i in regions and regions[i].train is not None and (regions[i].train >= 0).any()
    ]
    p = min([patch] + [min(regions[i].train.shape) for i in tr])
    train = FeatureDataset(
        [regions[i].feats for i in tr],
        [regions[i].train for i in tr],
        patch=p,
        n=n,
        seed=seed,
        binary=binary,
        teacher=None if teachers is None else [teachers[i] for i in tr],
    )
    va = [r for r in regions.values() if r.val is not None and (r.val >= 0).any()]
    if not va:
        return train, None
    pv = min([patch] + [min(r.val.shape) for r in va])
    tiles = FeatureDataset(
        [r.feats for r in va], [r.val for r in va], patch=pv, n=0, seed=0, binary=binary
    )
    return train, tiles.tiles()


class QuickView:
    """Predict a window of a cached region with the current decoder only.

    The encoder is frozen in quick mode, so its cached features stay valid:
    the live overlay of a viewport inside the annotated box needs a decoder
    pass over the window plus :attr:`HALO` pixels of context (the decoder's
    receptive field), about half the cost of a full forward pass.

    Parameters
    ----------
    unet : torch.nn.Module
        Has ``decode(features, shape)``.
    region : Region
        The cached features of the image shown.
    activation : {"softmax", "sigmoid", None}
        Applied over the class axis.
    device : str
        Where the decoder runs.
    start : Tensor, optional
        The starting decoder's probabilities over the whole region (the
        distillation teacher): the first window is cut from it, at no cost.
    """

    #: context each side of the window, at full resolution (the decoder's receptive
    #: field: two 3x3 convolutions per level of a depth-4 U-Net reach ~62 px)
    HALO = 64

    def __init__(
        self,
        unet: nn.Module,
        region: Region,
        *,
        activation: str | None,
        device: str,
        start: torch.Tensor | None = None,
    ) -> None:
        self.unet, self.region, self.activation = unet, region, activation
        self.device = torch.device(device)
        self.start = start if activation in ("softmax", "sigmoid") else None

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray | None:
        """Probabilities (K, r1 - r0, c1 - c0), or None if the window leaves the box."""
        br, bc, hh, ww = self.region.box
        feats = self.region.feats
        if r0 < br or c0 < bc or r1 > br + hh or c1 > bc + ww:
            return None
        if self.start is not None:  # the starting weights: already predicted
            start, self.start = self.start, None
            return start[:, r0 - br : r1 - br, c0 - bc : c1 - bc].numpy().astype(np.float32)
        step = hh // feats[-1].shape[-2]
        a0 = max((r0 - br - self.HALO) // step * step, 0)
        a1 = min(-(-(r1 - br + self.HALO) // step) * step, hh)
        b0 = max((c0 - bc - self.HALO) // step * step, 0)
        b1 = min(-(-(c1 - bc + self.HALO) // step) * step, ww)
        window = []
        for f in feats:
            s = hh // f.shape[-2]
            window.append(
                _channels_last(f[None, :, a0 // s : a1 // s, b0 // s : b1 // s].to(self.device))
            )
        with fast_format(self.unet), inference_mode_on(self.unet, self.device):
            logits = self.unet.decode(window, [a1 - a0, b1 - b0]).float()
            if self.activation == "softmax":
                logits = torch.softmax(logits, 1)
            elif self.activation == "sigmoid":
                logits = torch.sigmoid(logits)
        out = logits[0, :, r0 - br - a0 : r1 - br - a0, c0 - bc - b0 : c1 - bc - b0]
        return out.cpu().numpy().astype(np.float32, copy=False)
