"""A compact 2-D U-Net for pixel classification that accepts any image size.

The network follows Ronneberger et al. (2015) with the usual modern changes:
padded 3x3 convolutions with batch normalisation, max-pooling on the way down,
bilinear upsampling (or transposed convolutions) on the way up, and channel
dropout on the bottleneck features. Inputs of any spatial size are reflect-padded
to a multiple of ``2 ** depth`` and the logits are cropped back, so the output
grid is always the input grid.

The forward pass is split in two so that a training engine can freeze the
encoder, cache its features once per patch and train only the decoder
("quick mode")::

    features = model.encode(x)                  # skips + bottleneck
    logits = model.decode(features, x.shape[-2:])
    # == model(x)

The module is TorchScript-compatible (``torch.jit.script``), which is how
:func:`napari_dlcb.models.saved.save_model` writes ``model.pt``.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet2D"]


def _conv_block(c_in: int, c_out: int, batchnorm: bool) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by (batch norm and) ReLU."""
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers.append(nn.Conv2d(c, c_out, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Upsample by two, concatenate the skip connection, then a conv block."""

    def __init__(self, c_below: int, c_skip: int, batchnorm: bool, mode: str) -> None:
        super().__init__()
        self.bilinear = mode == "bilinear"
        if self.bilinear:
            # keep parameters compact: no learned upsampling, the conv block mixes
            self.transposed = nn.Identity()
            c_cat = c_below + c_skip
        else:
            self.transposed = nn.ConvTranspose2d(c_below, c_skip, 2, stride=2)
            c_cat = 2 * c_skip
        self.block = _conv_block(c_cat, c_skip, batchnorm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.bilinear:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        else:
            x = self.transposed(x)
        return self.block(torch.cat([skip, x], dim=1))


class UNet2D(nn.Module):
    """Compact 2-D U-Net returning per-pixel class logits on the input grid.

    Parameters
    ----------
    in_channels : int
        Number of input channels.
    n_classes : int
        Number of output channels (class logits).
    base : int
        Number of feature maps at full resolution; doubled at every level.
    depth : int
        Number of 2x down-sampling steps. Inputs are padded internally to a
        multiple of ``2 ** depth``.
    dropout : float
        Channel dropout probability applied to the bottleneck features (at
        the start of the decoder, so it also regularises training on cached
        encoder features).
    batchnorm : bool
        Use batch normalisation after every convolution.
    upsample : {"bilinear", "transposed"}
        How the decoder doubles the resolution.

    Notes
    -----
    With the defaults (``base=16, depth=4``) the network has about 1.9 M
    parameters and predicts a 512 x 512 image in well under a second on a
    laptop CPU.

    Examples
    --------
    >>> import torch
    >>> net = UNet2D(1, 3).eval()
    >>> net(torch.zeros(1, 1, 100, 77)).shape
    torch.Size([1, 3, 100, 77])
    >>> feats = net.encode(torch.zeros(1, 1, 100, 77))
    >>> net.decode(feats, (100, 77)).shape
    torch.Size([1, 3, 100, 77])
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 3,
        *,
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.1,
        batchnorm: bool = True,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 1:
            raise ValueError("in_channels and n_classes must be >= 1")
        if base < 1:
            raise ValueError("base must be >= 1")
        if not 1 <= depth <= 12:  # 2**12 = 4096-pixel multiple; a crafted 10**7 would hang here
            raise ValueError(f"depth={depth} is out of range (1 to 12)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if upsample not in ("bilinear", "transposed"):
            raise ValueError("upsample must be 'bilinear' or 'transposed'")
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.base = int(base)
        self.depth = int(depth)
        self.dropout_p = float(dropout)
        self.batchnorm = bool(batchnorm)
        self.upsample = str(upsample)
        self.multiple = 2**self.depth

        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for w in widths[:-1]:
            self.down.append(_conv_block(c_prev, w, batchnorm))
            c_prev = w
        self.bottleneck = _conv_block(widths[-2], widths[-1], batchnorm)
        self.dropout = nn.Dropout2d(dropout)
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], batchnorm, upsample) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(base, n_classes, 1)

    # -- configuration ------------------------------------------------------------------
    def architecture(self) -> dict:
        """Return the architecture dictionary stored in ``ModelMeta.architecture``.

        Returns
        -------
        dict
            ``{"name": "unet2d", **init kwargs}``; ``build_model`` of this
            dictionary creates an identical (untrained) network.
        """
        return {
            "name": "unet2d",
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "base": self.base,
            "depth": self.depth,
            "dropout": self.dropout_p,
            "batchnorm": self.batchnorm,
            "upsample": self.upsample,
        }

    # -- parameter groups ---------------------------------------------------------------
    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the encoder (down-sampling path and bottleneck)."""
        return chain(self.down.parameters(), self.bottleneck.parameters())

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the decoder (up-sampling path and the 1x1 head)."""
        return chain(self.up.parameters(), self.head.parameters())

    def reset_head(self, n_classes: int) -> None:
        """Replace the final 1x1 convolution for a new number of classes.

        The new head is freshly initialised, on the old head's device and
        dtype; everything else keeps its (pretrained) weights.

        Parameters
        ----------
        n_classes : int
            Number of output classes of the new head.
        """
        if n_classes < 1:
            raise ValueError("n_classes must be >= 1")
        old = self.head
        self.head = nn.Conv2d(old.in_channels, int(n_classes), 1).to(
            device=old.weight.device, dtype=old.weight.dtype
        )
        self.n_classes = int(n_classes)

    # -- forward ------------------------------------------------------------------------
    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        if ph == 0 and pw == 0:
            return x
        top, left = ph // 2, pw // 2
        bottom, right = ph - top, pw - left
        # reflect needs the pad to be smaller than the image; tiny inputs replicate
        mode = "reflect" if (max(top, bottom) < h and max(left, right) < w) else "replicate"
        return F.pad(x, [left, right, top, bottom], mode=mode)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the encoder.

        Parameters
        ----------
        x : torch.Tensor, shape (B, C, Y, X)
            Normalised float input of any spatial size.

        Returns
        -------
        list of torch.Tensor
            ``depth`` skip feature maps (full resolution first) followed by
            the bottleneck features, computed on the padded input.
        """
        x = self._pad(x)
        feats: list[Tensor] = []
        for block in self.down:
            x = block(x)
            feats.append(x)
            x = F.max_pool2d(x, 2)
        feats.append(self.bottleneck(x))
        return feats

    def decode(self, features: list[Tensor], out_shape: list[int]) -> Tensor:
        """Run the decoder on :meth:`encode` features.

        Parameters
        ----------
        features : list of torch.Tensor
            The output of :meth:`encode` (possibly cached).
        out_shape : sequence of int
            ``(Y, X)`` of the original, unpadded input.

        Returns
        -------
        torch.Tensor, shape (B, n_classes, Y, X)
            Class logits on the input grid.
        """
        n = len(features) - 1
        x = self.dropout(features[n])
        for i, up in enumerate(self.up):
            x = up(x, features[n - 1 - i])
        x = self.head(x)
        h, w = int(out_shape[0]), int(out_shape[1])
        top = (x.shape[-2] - h) // 2
        left = (x.shape[-1] - w) // 2
        return x[:, :, top : top + h, left : left + w]

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, n_classes, Y, X)`` of ``x`` (as in :meth:`encode`).

        Apply a softmax over dim 1 for probabilities.
        """
        return self.decode(self.encode(x), [x.shape[-2], x.shape[-1]])
