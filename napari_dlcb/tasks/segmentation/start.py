"""The model training starts from: resolve it, adapt it, decide what trains how fast.

Transfer learning from a pretrained segmentation network on a few strokes
should adjust what the model knew, not overwrite it. Three rules, each
standard practice in fine-tuning:

- **new layers learn fast, pretrained ones slowly**: a re-initialised head or
  first convolution trains at ``lr``, pretrained layers at ``lr x
  pretrained_lr_factor`` (:func:`param_groups`);
- **pretrained normalisation statistics are kept** when the batches are crops
  around sparse strokes or cached features (:class:`TrainNet`), because such
  batches do not have the image's statistics;
- the caller scores the starting weights first (``validate_start``), so the
  result never validates worse than the base.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from napari_dlcb.errors import DlcbError

__all__ = [
    "SCRATCH",
    "TrainNet",
    "adapt_model",
    "freeze_norm_stats",
    "n_outputs",
    "param_groups",
    "resolve_start",
]

SCRATCH = "scratch"


def resolve_start(base: Any) -> tuple[nn.Module, Any, str]:
    """``(model, meta, parent)`` for a base name, a path or a ``(model, meta)`` pair.

    ``parent`` is what the trained model's metadata records as its origin
    ("builtin:unet2d-nuclei", a resolved path, "scratch" or "in-memory").
    """
    from napari_dlcb.models.saved import ModelMeta

    if isinstance(base, tuple):
        model, meta = base
        return model, meta, meta.parent or "in-memory"
    if base == SCRATCH:
        from napari_dlcb.models.unet import UNet2D

        model = UNet2D(1, 3)
        meta = ModelMeta(
            task="segmentation",
            architecture=model.architecture(),
            classes=["background", "interior", "boundary"],
            normalization={"mode": "percentile"},
        )
        return model, meta, SCRATCH
    from napari_dlcb.models.registry import resolve_base

    model, meta = resolve_base(str(base))
    if not str(base).startswith("builtin"):
        return model, meta, str(base)
    return model, meta, str((meta.extra or {}).get("source") or meta.parent or base)


def n_outputs(meta: Any) -> int:
    """Output channels of a model: one for sigmoid models, else one per class."""
    if getattr(meta, "output_activation", "softmax") == "sigmoid":
        return 1
    return len(meta.classes)


def adapt_model(
    model: nn.Module, meta: Any, n_classes: int, in_channels: int
) -> tuple[nn.Module, list[nn.Parameter]]:
    """Give the model the right head and input channels; return it and its new parameters.

    A new first convolution starts from the mean of the pretrained filters
    over the old channels (so a grey model sees an RGB image as grey).
    """
    if getattr(meta, "task", "segmentation") != "segmentation":
        raise DlcbError(f"the base model is a {meta.task} model, not a segmentation model")
    new: list[nn.Parameter] = []
    if hasattr(model, "reset_head") and getattr(model, "n_classes", n_classes) != n_classes:
        model.reset_head(n_classes)
        new += list(model.head.parameters()) if hasattr(model, "head") else []
    have = int(getattr(meta, "in_channels", 1))
    if have != in_channels:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or not hasattr(model, "in_channels"):
            raise DlcbError(
                f"the base model expects {have} channel(s) but the images have {in_channels}"
            )
        conv = nn.Conv2d(
            in_channels,
            first.out_channels,
            first.kernel_size,
            first.stride,
            first.padding,
            bias=first.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(
                first.weight.mean(1, keepdim=True).expand_as(conv.weight) * have / in_channels
            )
            if first.bias is not None:
                conv.bias.copy_(first.bias)
        _replace_module(model, first, conv)
        model.in_channels = in_channels
        new += list(conv.parameters())
    return model, new


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for mod in root.modules():
        for child_name, child in mod.named_children():
            if child is old:
                setattr(mod, child_name, new)
                return
    raise RuntimeError("module to replace not found")  # pragma: no cover


def param_groups(
    params: Iterable[nn.Parameter],
    *,
    new: Iterable[nn.Parameter],
    lr: float,
    pretrained_factor: float,
    pretrained: bool,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: new layers at ``lr``, pretrained ones slower.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> groups = param_groups(net.parameters(), new=net[1].parameters(), lr=1e-3,
    ...                       pretrained_factor=0.1, pretrained=True)
    >>> [(len(g["params"]), g["lr"]) for g in groups]
    [(2, 0.001), (2, 0.0001)]
    """
    params = list(params)
    if not pretrained:
        return [{"params": params, "lr": lr, "name": "all"}]
    fresh = {id(p) for p in new}
    groups = [
        {"params": [p for p in params if id(p) in fresh], "lr": lr, "name": "new"},
        {
            "params": [p for p in params if id(p) not in fresh],
            "lr": lr * pretrained_factor,
            "name": "pretrained",
        },
    ]
    return [g for g in groups if g["params"]]


def freeze_norm_stats(module: nn.Module) -> None:
    """Put every batch-norm layer of ``module`` in eval mode (running statistics fixed)."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    for m in module.modules():
        if isinstance(m, norms):
            m.eval()


class TrainNet(nn.Module):
    """The network as the engine trains it, with its normalisation statistics fixed.

    ``train()`` leaves batch-norm layers in eval mode, so they normalise with
    the pretrained running statistics and do not update them from batches of
    crops around strokes. The affine parameters still train.

    Parameters
    ----------
    model : torch.nn.Module
        The network (``forward`` is called as is).
    frozen_stats : bool
        Keep batch-norm statistics fixed (False: an ordinary wrapper).
    """

    def __init__(self, model: nn.Module, *, frozen_stats: bool = True) -> None:
        super().__init__()
        self.model = model
        self.frozen_stats = bool(frozen_stats)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output."""
        return self.model(*x)

    def train(self, mode: bool = True) -> TrainNet:
        """Training mode, except batch-norm layers when the statistics are fixed."""
        super().train(mode)
        if mode and self.frozen_stats:
            freeze_norm_stats(self)
        return self
