"""A compact residual CNN for classifying small image crops (cells, patches).

The design follows ResNet (He et al. 2016) scaled down for 28-64 px crops, as
used for whole-cell classification by Pärnamaa & Parts (2017): a 3x3 stem,
three stages of basic residual blocks (batch norm, ReLU; stride 2 between
stages), global average pooling, dropout and a linear head. Any number of
input channels and any crop size work; the crop size the model was trained
with is stored in the model metadata (``extra["input_size"]``).

The network is split so it can serve as a frozen feature extractor::

    f = model.features(x)        # (B, F) pooled features
    logits = model.head(model.dropout(f))   # == model(x)

``model.feature_maps(x)`` returns the last convolutional maps (for Grad-CAM
and per-object embeddings). The module is TorchScript-compatible.

:func:`load_base` makes the network a task starts from (the built-in
pretrained weights, a saved classifier, or a random initialisation), adapted
to the task's channels and classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_dlcb.errors import DlcbError

__all__ = ["ARCH_NAME", "CellClassifier", "adapt_in_channels", "load_base"]

ARCH_NAME = "cellclf"


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CellClassifier(nn.Module):
    """Residual CNN classifier for small crops.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a nuclear stain, 3 for RGB, ...).
    n_classes : int
        Output classes.
    width : int
        Channels of the first stage; stages have ``width``, ``2*width``, ``4*width``.
    blocks : tuple of int
        Residual blocks per stage.
    dropout : float
        Dropout before the linear head.

    Examples
    --------
    >>> import torch
    >>> net = CellClassifier(3, 8, width=8)
    >>> net(torch.zeros(2, 3, 28, 28)).shape
    torch.Size([2, 8])
    >>> net.features(torch.zeros(2, 3, 40, 33)).shape
    torch.Size([2, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        width: int = 32,
        blocks: tuple[int, ...] | list[int] = (2, 2, 2),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 1:
            raise ValueError("in_channels and n_classes must be >= 1")
        if width < 1 or not blocks or min(blocks) < 1:
            raise ValueError("width and every entry of blocks must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.width = int(width)
        self.blocks = [int(b) for b in blocks]
        self.dropout_p = float(dropout)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        c_prev = width
        for i, n in enumerate(self.blocks):
            c = width * 2**i
            layers = [_BasicBlock(c_prev, c, 1 if i == 0 else 2)]
            layers += [_BasicBlock(c, c, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_prev = c
        self.stages = nn.Sequential(*stages)
        self.n_features = c_prev
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_prev, n_classes)

    def architecture(self) -> dict:
        """Return ``{"name": "cellclf", **init kwargs}`` for ``ModelMeta.architecture``."""
        return {
            "name": ARCH_NAME,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "width": self.width,
            "blocks": list(self.blocks),
            "dropout": self.dropout_p,
        }

    def feature_maps(self, x: Tensor) -> Tensor:
        """Last convolutional feature maps, shape (B, F, Y/2^(s-1), X/2^(s-1))."""
        return self.stages(self.stem(x))

    def features(self, x: Tensor) -> Tensor:
        """Globally average-pooled features, shape (B, F)."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, shape (B, n_classes)."""
        return self.head(self.dropout(self.features(x)))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of everything except the linear head."""
        return list(self.stem.parameters()) + list(self.stages.parameters())

    def reset_head(self, n_classes: int) -> None:
        """Replace the linear head with a fresh one for ``n_classes`` outputs."""
        self.n_classes = int(n_classes)
        self.head = nn.Linear(self.n_features, self.n_classes).to(self.head.weight.device)


def adapt_in_channels(model: CellClassifier, in_channels: int) -> CellClassifier:
    """Change the number of input channels of a pretrained classifier in place.

    The first convolution's weights are averaged over the old channels and
    repeated for the new ones, scaled so that a grey image copied into every
    channel gives the same activations (the usual grey-to-RGB transfer).

    Parameters
    ----------
    model : CellClassifier
        A (pretrained) classifier.
    in_channels : int
        The new channel count.

    Returns
    -------
    CellClassifier
        ``model``, modified.

    Examples
    --------
    >>> import torch
    >>> net = CellClassifier(1, 2, width=4).eval()
    >>> x = torch.rand(1, 1, 16, 16)
    >>> y1 = net(x)
    >>> _ = adapt_in_channels(net, 3)
    >>> torch.allclose(net(x.repeat(1, 3, 1, 1)), y1, atol=1e-5)
    True
    """
    if in_channels == model.in_channels:
        return model
    conv: nn.Conv2d = model.stem[0]
    w = conv.weight.detach()
    new_w = w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (w.shape[1] / in_channels)
    new = nn.Conv2d(in_channels, conv.out_channels, 3, padding=1, bias=False).to(w.device)
    with torch.no_grad():
        new.weight.copy_(new_w)
    model.stem[0] = new
    model.in_channels = int(in_channels)
    return model


def load_base(
    base: str | Path | None,
    *,
    in_channels: int,
    n_classes: int,
    width: int = 32,
    blocks: Sequence[int] = (2, 2, 2),
    seed: int = 0,
) -> tuple[CellClassifier, str | None, dict[str, Any]]:
    """Create the network to fine-tune.

    Parameters
    ----------
    base : {"builtin", "none"} or path or None
        ``"builtin"`` (or ``"builtin:<name>"``): the shipped pretrained
        weights; a path: a saved classification model directory;
        ``"none"``/None: random initialisation.
    in_channels, n_classes : int
        What the new task needs; the first convolution and the head are adapted.
    width : int
        Width of a newly initialised network.
    blocks : sequence of int
        Residual blocks per stage of a newly initialised network.
    seed : int
        Seed of the random initialisation (new networks and new heads), so
        runs are reproducible whatever the global RNG state.

    Returns
    -------
    model : CellClassifier
    parent : str or None
        What to record as ``ModelMeta.parent``.
    info : dict
        ``input_size`` and ``classes`` of the base, where known, and
        ``encoder_only`` (pretrained without labels: no head worth keeping).

    Examples
    --------
    >>> model, parent, info = load_base("none", in_channels=2, n_classes=3, width=4)
    >>> model.in_channels, model.n_classes, parent
    (2, 3, None)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if base is None or str(base).lower() in ("none", "scratch", ""):
            model = CellClassifier(in_channels, n_classes, width=width, blocks=tuple(blocks))
            return model, None, {}
        model, meta, parent = _load_pretrained(base)
        adapt_in_channels(model, in_channels)
        if model.n_classes != n_classes:
            model.reset_head(n_classes)
        return (
            model,
            parent,
            {
                "input_size": meta.extra.get("input_size"),
                "classes": list(meta.classes),
                "encoder_only": bool(meta.extra.get("encoder_only")),
            },
        )


def _load_pretrained(base: str | Path) -> tuple[CellClassifier, Any, str]:
    """The built-in or saved classifier ``base`` names, its metadata and its provenance."""
    if str(base) == "builtin" or str(base).startswith("builtin:"):
        from napari_dlcb.models.registry import load_builtin

        name = str(base).partition(":")[2] or "cellclf-nuclei"
        model, meta = load_builtin(name)
        if not isinstance(model, CellClassifier):
            raise DlcbError(f"built-in model {name!r} is not a cell classifier")
        return model, meta, f"builtin:{name}"
    from napari_dlcb.models.saved import load_model

    model, meta = load_model(base)
    if not isinstance(model, CellClassifier):
        raise DlcbError(f"{base} is not a napari-dlcb cell classifier (task {meta.task!r})")
    return model, meta, str(base)


def _register() -> None:
    try:
        from napari_dlcb.models.saved import register_architecture
    except ImportError:  # pragma: no cover - saved.py arrives with the foundation
        return
    register_architecture(ARCH_NAME, "napari_dlcb.models.classifier:CellClassifier")
    # the multiple-instance classifier is built on this backbone: loadable wherever cells are
    register_architecture("cellmil", "napari_dlcb.models.mil:MILClassifier")


_register()
