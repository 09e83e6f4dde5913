"""Multiple-instance image classification over a convolutional feature map.

Kraus et al. (2016, Bioinformatics) classify whole microscopy images from
image-level labels only: a fully convolutional network scores every location
of its last feature map (each location is an *instance*, a patch of the
image), and a multiple-instance pooling layer turns the instance scores into
one prediction per image. The instance scores, upsampled to the image, then
localise the cells responsible, without any segmentation.

:class:`MILClassifier` uses the cell classifier's backbone
(:class:`~napari_dlcb.models.classifier.CellClassifier`: stem and residual
stages, so a pretrained or autoencoder-pretrained encoder can be the start),
a 1x1 convolution that embeds every location, and one of two poolings:

- ``"attention"``: gated attention (Ilse, Tomczak & Welling 2018,
  "Attention-based deep multiple instance learning"): a weight per location,
  softmax-normalised over the image, a weighted mean of the embeddings, and a
  linear classifier. The localisation map is the attention, scaled so that 1
  is the uniform weight (``weight x number of locations``).
- ``"noisy-and"``: per-class instance probabilities pooled by Kraus et al.'s
  noisy-AND, ``P_k = (s(a (mean_i p_ik - b_k)) - s(-a b_k)) / (s(a (1 - b_k)) - s(-a b_k))``
  with slope ``a = 10`` and a learnt threshold ``b_k`` in (0, 1). The
  localisation map of class ``k`` is ``p_ik``. The returned logits are
  ``log P_k``, so a softmax gives the normalised image-level probabilities.

The module is TorchScript-compatible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.classifier import CellClassifier, load_base

__all__ = [
    "MIL_ARCH_NAME",
    "POOLINGS",
    "GatedAttentionPool",
    "MILClassifier",
    "NoisyAndPool",
    "load_mil_base",
]

MIL_ARCH_NAME = "cellmil"
POOLINGS = ("attention", "noisy-and")


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) over (B, D, h, w) embeddings."""

    def __init__(self, dim: int, n_classes: int, attention_dim: int) -> None:
        super().__init__()
        self.v = nn.Conv2d(dim, attention_dim, 1)
        self.u = nn.Conv2d(dim, attention_dim, 1)
        self.w = nn.Conv2d(attention_dim, 1, 1)
        self.classify = nn.Linear(dim, n_classes)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, K) and relative attention maps (B, 1, h, w) (1 = uniform)."""
        b, d, hh, ww = h.shape
        score = self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))  # (B, 1, h, w)
        att = torch.softmax(score.reshape(b, -1), dim=1)
        z = torch.bmm(h.reshape(b, d, -1), att.unsqueeze(2)).squeeze(2)  # (B, D)
        return self.classify(z), (att * float(hh * ww)).reshape(b, 1, hh, ww)


class NoisyAndPool(nn.Module):
    """Per-class instance probabilities pooled by noisy-AND (Kraus et al. 2016)."""

    def __init__(self, dim: int, n_classes: int, slope: float = 10.0) -> None:
        super().__init__()
        self.instance = nn.Conv2d(dim, n_classes, 1)
        self.b_logit = nn.Parameter(torch.full((n_classes,), -1.0))  # b = 0.27 at the start
        self.slope = float(slope)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``log P`` (B, K) and instance probability maps (B, K, h, w)."""
        p = torch.sigmoid(self.instance(h))
        mean = p.mean(dim=(2, 3))
        a = self.slope
        b = torch.sigmoid(self.b_logit)[None]
        lo = torch.sigmoid(-a * b)
        hi = torch.sigmoid(a * (1.0 - b))
        pooled = (torch.sigmoid(a * (mean - b)) - lo) / (hi - lo)
        return torch.log(pooled.clamp(min=1e-6)), p


class MILClassifier(nn.Module):
    """Image classifier trained from image-level labels, with localisation maps.

    Parameters
    ----------
    in_channels : int
        Input channels.
    n_classes : int
        Image classes.
    width, blocks
        Size of the backbone (see :class:`CellClassifier`); ignored with ``encoder``.
    pooling : {"attention", "noisy-and"}
        Multiple-instance pooling (see the module docstring).
    attention_dim : int
        Channels of the instance embedding and of the attention network.
    encoder : CellClassifier, optional
        A (pretrained) classifier whose backbone to use.

    Examples
    --------
    >>> net = MILClassifier(3, 2, width=8, blocks=(1, 1, 1), attention_dim=16).eval()
    >>> net(torch.zeros(2, 3, 56, 56)).shape
    torch.Size([2, 2])
    >>> net.heatmap(torch.zeros(2, 3, 56, 56), 1).shape
    torch.Size([2, 56, 56])
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        width: int = 32,
        blocks: tuple[int, ...] | list[int] = (2, 2, 2),
        pooling: str = "attention",
        attention_dim: int = 64,
        encoder: CellClassifier | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if n_classes < 2:
            raise ValueError("a MIL classifier needs at least 2 classes")
        if encoder is None:
            encoder = CellClassifier(in_channels, 1, width=width, blocks=tuple(blocks))
        self.encoder = encoder
        self.in_channels = int(encoder.in_channels)
        self.n_classes = int(n_classes)
        self.pooling = str(pooling)
        self.attention_dim = int(attention_dim)
        self.embed = nn.Sequential(
            nn.Conv2d(encoder.n_features, attention_dim, 1), nn.ReLU(inplace=True)
        )
        self.pool: nn.Module = (
            GatedAttentionPool(attention_dim, n_classes, attention_dim)
            if pooling == "attention"
            else NoisyAndPool(attention_dim, n_classes)
        )

    def architecture(self) -> dict:
        """``{"name": "cellmil", **init kwargs}`` for ``ModelMeta.architecture``."""
        return {
            "name": MIL_ARCH_NAME,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "width": self.encoder.width,
            "blocks": list(self.encoder.blocks),
            "pooling": self.pooling,
            "attention_dim": self.attention_dim,
        }

    def localise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, K) and the pooling's maps on the feature grid (B, 1 or K, h, w)."""
        return self.pool(self.embed(self.encoder.feature_maps(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Image-level logits (B, K)."""
        return self.localise(x)[0]

    def heatmap(self, x: Tensor, target: int) -> Tensor:
        """Localisation maps (B, Y, X) on the input grid (bilinear upsampling).

        Attention pooling: the relative attention (class-independent);
        noisy-AND: the instance probability of class ``target``.
        """
        _, maps = self.localise(x)
        m = maps[:, :1] if maps.shape[1] == 1 else maps[:, target : target + 1]
        size = (x.shape[-2], x.shape[-1])
        return F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]


def load_mil_base(
    base: str | Path | None,
    *,
    in_channels: int,
    n_classes: int,
    width: int = 32,
    blocks: Sequence[int] = (2, 2, 2),
    pooling: str = "attention",
    attention_dim: int = 64,
    seed: int = 0,
) -> tuple[MILClassifier, str | None, dict[str, Any]]:
    """Create the MIL network to train.

    ``base`` is a saved MIL model (trained further; its pooling is kept, its
    classifier replaced if the class count differs) or anything
    :func:`~napari_dlcb.models.classifier.load_base` accepts (``"builtin"``,
    a saved classifier or autoencoder-pretrained encoder, ``"none"``), whose
    backbone becomes the MIL network's.

    Returns
    -------
    model : MILClassifier
    parent : str or None
        What to record as ``ModelMeta.parent``.
    info : dict
        ``input_size`` (and ``classes``) of the base, where known.

    Examples
    --------
    >>> net, parent, _ = load_mil_base("none", in_channels=3, n_classes=2, width=4, blocks=(1,))
    >>> net.pooling, parent
    ('attention', None)
    """
    from napari_dlcb.models.meta import load_meta

    is_dir = base is not None and Path(str(base)).expanduser().is_dir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_dir and load_meta(base).architecture.get("name") == MIL_ARCH_NAME:
            from napari_dlcb.models.saved import load_model

            model, meta = load_model(base)
            if model.in_channels != in_channels:
                raise DlcbError(
                    f"{base} takes {model.in_channels} channel(s); these images have {in_channels}"
                )
            if model.n_classes != n_classes:
                model.n_classes = int(n_classes)
                dim = model.attention_dim
                model.pool = (
                    GatedAttentionPool(dim, n_classes, dim)
                    if model.pooling == "attention"
                    else NoisyAndPool(dim, n_classes)
                )
            info = {"input_size": meta.extra.get("input_size"), "classes": list(meta.classes)}
            return model, str(base), info
        encoder, parent, info = load_base(
            base, in_channels=in_channels, n_classes=1, width=width, blocks=blocks, seed=seed
        )
        model = MILClassifier(
            n_classes=n_classes, pooling=pooling, attention_dim=attention_dim, encoder=encoder
        )
        return model, parent, info
