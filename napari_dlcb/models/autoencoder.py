"""A denoising autoencoder around the cell classifier's encoder, for unsupervised pretraining.

The paper's recipe for tasks with few labels (Angermueller et al. 2016, after
Vincent et al. 2010): train an encoder to reconstruct its input from a
corrupted copy on unlabelled data, then fine-tune it on the few labels.
Here the encoder *is* :class:`~napari_dlcb.models.classifier.CellClassifier`'s
backbone (stem and residual stages), so what the autoencoder learns is
exactly what ``train classification --base`` starts from. The decoder is
deliberately light (one nearest-neighbour upsampling and one 3x3 convolution
per stage, halving the channels): the encoder has to carry the information.

Corruption (:func:`~napari_dlcb.data.crops.corrupt`) hides random square patches (set to 0, the mean
of normalised data) and adds Gaussian noise; the loss is the mean squared
error against the clean crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_dlcb.models.classifier import CellClassifier

__all__ = ["AE_ARCH_NAME", "CellAutoencoder"]

AE_ARCH_NAME = "cellae"


class _UpBlock(nn.Module):
    """Upsample x2 (nearest), 3x3 convolution, batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.bn(self.conv(x)))


class CellAutoencoder(nn.Module):
    """Encoder of a :class:`CellClassifier` plus a light convolutional decoder.

    Parameters
    ----------
    in_channels : int
        Input (and reconstructed) channels.
    width : int
        Channels of the encoder's first stage.
    blocks : tuple of int
        Residual blocks per encoder stage.
    encoder : CellClassifier, optional
        An existing (e.g. pretrained) classifier whose backbone to use; its
        head is kept but unused. ``in_channels``, ``width`` and ``blocks``
        are then taken from it.
    pooled : bool
        Decode from the globally pooled features only (a spatial broadcast
        decoder) instead of the last feature map. Pooled features are nearly
        translation invariant, so this cannot place what it reconstructs and
        learns little on off-centre objects (measured: reconstruction error
        0.99 vs 0.27 of the unpooled decoder on random discs); off by default
        here. On crops centred on their cell it is what pretraining should
        do: the pooled vector is what the classifier's head reads, and only
        this decoder trains it to summarise the crop, so
        :class:`~napari_dlcb.tasks.classification_config.PretrainConfig`
        uses it by default (``decoder="pooled"``).

    Examples
    --------
    >>> import torch
    >>> ae = CellAutoencoder(3, width=8, blocks=(1, 1, 1))
    >>> ae(torch.zeros(2, 3, 28, 28)).shape
    torch.Size([2, 3, 28, 28])
    >>> ae(torch.zeros(1, 3, 30, 27)).shape
    torch.Size([1, 3, 30, 27])
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        width: int = 32,
        blocks: tuple[int, ...] | list[int] = (2, 2, 2),
        encoder: CellClassifier | None = None,
        pooled: bool = False,
    ) -> None:
        super().__init__()
        self.pooled = bool(pooled)
        if encoder is None:
            encoder = CellClassifier(in_channels, 1, width=width, blocks=tuple(blocks))
        self.encoder = encoder
        self.in_channels = encoder.in_channels
        chans = [encoder.width * 2**i for i in range(len(encoder.blocks))]
        self.up = nn.ModuleList(
            [_UpBlock(chans[i], chans[i - 1]) for i in range(len(chans) - 1, 0, -1)]
        )
        self.out = nn.Conv2d(chans[0], self.in_channels, 3, padding=1)
        if self.pooled:
            self.broadcast = nn.Conv2d(chans[-1] + 2, chans[-1], 3, padding=1)

    def architecture(self) -> dict:
        """``{"name": "cellae", ...}`` (the encoder's width and blocks)."""
        return {
            "name": AE_ARCH_NAME,
            "in_channels": self.in_channels,
            "width": self.encoder.width,
            "blocks": list(self.encoder.blocks),
        }

    def decode(self, maps: Tensor, size: tuple[int, int]) -> Tensor:
        """Reconstruct a (B, C, *size) image from the encoder's feature maps."""
        x = maps
        if self.pooled:
            # spatial broadcast decoder (Watters et al. 2019): the pooled vector, tiled
            # over the feature grid, plus the grid's coordinates
            b, _, h, w = maps.shape
            z = maps.mean(dim=(2, 3), keepdim=True).expand(-1, -1, h, w)
            yy = (
                torch.linspace(-1.0, 1.0, h, device=maps.device).view(1, 1, h, 1).expand(b, 1, h, w)
            )
            xx = (
                torch.linspace(-1.0, 1.0, w, device=maps.device).view(1, 1, 1, w).expand(b, 1, h, w)
            )
            x = F.relu(self.broadcast(torch.cat([z, yy, xx], 1)))
        for up in self.up:
            x = up(x)
        x = self.out(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (same shape)."""
        return self.decode(self.encoder.feature_maps(x), (x.shape[-2], x.shape[-1]))
