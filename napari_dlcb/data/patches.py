"""Training and validation datasets of image patches with sparse targets.

Targets are int64 maps (``-1`` = unlabelled, see :mod:`napari_dlcb.data.labels`).
Three datasets feed the segmentation task:

- :class:`PatchDataset`: random augmented patches centred near annotation
  (every layer trains);
- :class:`TileDataset`: deterministic tiles covering the validation
  annotation;
- :class:`FeatureDataset`: aligned random crops of cached multi-scale encoder
  features with their targets (the frozen-encoder "quick" mode), optionally
  with the starting model's probabilities on the same crop, so training can
  keep what the model knew where nothing is painted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from napari_dlcb.data.augment import random_crop

__all__ = ["FeatureDataset", "ListDataset", "PatchDataset", "TileDataset", "target_tensor"]


def target_tensor(target: np.ndarray, binary: bool) -> torch.Tensor:
    """A target map as a tensor: int64, or float with NaN = unlabelled for one-logit models.

    Examples
    --------
    >>> target_tensor(np.array([[-1, 1]]), binary=True)
    tensor([[[nan, 1.]]])
    """
    t = torch.from_numpy(np.ascontiguousarray(target))
    if binary:
        f = t.float()[None]
        f[t[None] < 0] = float("nan")
        return f
    return t.long()


class _AnnotatedSampler(torch.utils.data.Dataset):
    """``n`` random crops per epoch, from regions drawn in proportion to their annotation.

    Holds what the random-crop datasets share: the targets, the crop side, the
    random generator and, per region, its annotated pixels (``coords``) and
    its share of all of them (``weights``).
    """

    def __init__(
        self, targets: Sequence[np.ndarray], *, patch: int, n: int, seed: int, binary: bool
    ) -> None:
        self.targets, self.patch, self.n, self.binary = targets, patch, n, binary
        self.rng = np.random.default_rng(seed)
        self.coords = [np.argwhere(t >= 0) for t in targets]
        w = np.array([len(c) for c in self.coords], float)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return self.n


class PatchDataset(_AnnotatedSampler):
    """``n`` random annotated patches per epoch, augmented (every layer trains).

    Nine patches in ten are centred on a random annotated pixel (the rest
    anywhere), so sparse strokes are seen often.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        *,
        patch: int,
        n: int,
        augment: Callable[..., Any] | None,
        seed: int,
        binary: bool,
    ) -> None:
        super().__init__(targets, patch=patch, n=n, seed=seed, binary=binary)
        self.images, self.augment = images, augment

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        k = int(rng.choice(len(self.images), p=self.weights))
        coords = self.coords[k]
        centre = tuple(coords[rng.integers(len(coords))]) if rng.random() < 0.9 else None
        img, tgt = random_crop(self.images[k], self.targets[k], self.patch, rng, centre=centre)
        if self.augment is not None:
            img, tgt = self.augment(img, tgt, rng)
        return torch.from_numpy(np.ascontiguousarray(img)), target_tensor(tgt, self.binary)


class TileDataset(torch.utils.data.Dataset):
    """Deterministic ``patch`` tiles covering the (validation) annotation."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        *,
        patch: int,
        binary: bool,
    ) -> None:
        self.items = []
        for img, tgt in zip(images, targets):
            h, w = tgt.shape
            for r in range(0, max(h - patch, 0) + patch, patch):
                for c in range(0, max(w - patch, 0) + patch, patch):
                    r0, c0 = min(r, max(h - patch, 0)), min(c, max(w - patch, 0))
                    t = tgt[r0 : r0 + patch, c0 : c0 + patch]
                    if (t >= 0).any():
                        im = img[:, r0 : r0 + patch, c0 : c0 + patch]
                        im, t = random_crop(im, t, patch, np.random.default_rng(0))
                        self.items.append((im, t))
        self.binary = binary

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im, t = self.items[i]
        return torch.from_numpy(np.ascontiguousarray(im)), target_tensor(t, self.binary)


class FeatureDataset(_AnnotatedSampler):
    """Aligned random crops of cached multi-scale features and their targets.

    Parameters
    ----------
    feats : sequence of list of Tensor
        Per region, the encoder's features from full to coarsest resolution,
        each (C_l, H / 2**l, W / 2**l).
    targets : sequence of ndarray
        Per region, the (H, W) target.
    patch : int
        Crop side in pixels (a multiple of the coarsest feature's stride).
    n : int
        Crops per epoch.
    seed : int
        Makes the crops reproducible.
    binary : bool
        One-logit model (float targets, NaN = unlabelled).
    teacher : sequence of Tensor, optional
        Per region, the starting model's probabilities (K, H, W); crops then
        yield ``(target, teacher_crop)`` as the target.
    """

    def __init__(
        self,
        feats: Sequence[list[torch.Tensor]],
        targets: Sequence[np.ndarray],
        *,
        patch: int,
        n: int,
        seed: int,
        binary: bool,
        teacher: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__(targets, patch=patch, n=n, seed=seed, binary=binary)
        self.feats, self.teacher = feats, teacher

    def crop(self, k: int, r0: int, c0: int) -> tuple[tuple[torch.Tensor, ...], Any]:
        """The features and target of region ``k`` at (r0, c0), ``patch`` pixels a side."""
        p = self.patch
        out = []
        for f in self.feats[k]:
            s = self.targets[k].shape[0] // f.shape[-2]
            out.append(f[:, r0 // s : (r0 + p) // s, c0 // s : (c0 + p) // s])
        tgt = target_tensor(self.targets[k][r0 : r0 + p, c0 : c0 + p], self.binary)
        if self.teacher is not None:
            return tuple(out), (tgt, self.teacher[k][:, r0 : r0 + p, c0 : c0 + p])
        return tuple(out), tgt

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, ...], Any]:
        rng, p = self.rng, self.patch
        k = int(rng.choice(len(self.feats), p=self.weights))
        h, w = self.targets[k].shape
        cy, cx = self.coords[k][rng.integers(len(self.coords[k]))]
        r0 = int(np.clip(cy - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, h - p))
        c0 = int(np.clip(cx - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, w - p))
        step = self.targets[k].shape[0] // self.feats[k][-1].shape[-2]
        return self.crop(k, r0 // step * step, c0 // step * step)

    def tiles(self) -> ListDataset | None:
        """Every ``patch`` tile of the regions that holds annotation (validation)."""
        items = []
        p = self.patch
        for k, t in enumerate(self.targets):
            step = t.shape[0] // self.feats[k][-1].shape[-2]
            h, w = t.shape
            rows = sorted({*range(0, h - p + 1, p), h - p})
            cols = sorted({*range(0, w - p + 1, p), w - p})
            for r in rows:
                for c in cols:
                    if (t[r : r + p, c : c + p] >= 0).any():
                        items.append(self.crop(k, r // step * step, c // step * step))
        return ListDataset(items) if items else None


class ListDataset(torch.utils.data.Dataset):
    """A dataset of ready-made items."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]
