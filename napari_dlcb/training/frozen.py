"""The frozen-backbone mode, under one name for every task: ``mode="quick"`` (torch-free import).

Transfer learning on a CPU (the paper's advice for small data): keep the
pretrained backbone fixed, compute its features once, and train only the head
on them. What the head is depends on the task: the U-Net's decoder for
segmentation, the linear read-out for cells and DNA. ``mode="full"``
fine-tunes every layer instead.

- :func:`check_mode` normalises the mode name (``"linear"`` and ``"frozen"``,
  earlier names of the same thing, are accepted);
- :func:`frozen_except` freezes everything but the head for the duration of a
  ``with`` block and restores ``requires_grad`` afterwards (the model is handed
  back unchanged);
- :func:`cached_features` runs the backbone once over the inputs in batches,
  in eval mode without gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # pragma: no cover - torch is imported where a model is touched
    import torch
    from torch import nn

__all__ = ["FULL", "MODES", "QUICK", "cached_features", "check_mode", "frozen_except"]

QUICK = "quick"
FULL = "full"
MODES = (QUICK, FULL)
_ALIASES = {"linear": QUICK, "frozen": QUICK, "head": QUICK, "finetune": FULL}


def check_mode(mode: str) -> str:
    """The canonical mode name (``"quick"`` or ``"full"``), else a one-line error.

    Examples
    --------
    >>> check_mode("linear")
    'quick'
    """
    name = _ALIASES.get(str(mode).strip().lower(), str(mode).strip().lower())
    if name not in MODES:
        raise DlcbError(
            f"unknown training mode {mode!r}; use 'quick' (frozen pretrained backbone, "
            "train the head) or 'full' (fine-tune every layer)"
        )
    return name


@contextlib.contextmanager
def frozen_except(model: nn.Module, head: nn.Module | Iterable[nn.Parameter]) -> Iterator[list]:
    """Freeze every parameter of ``model`` except the head's; restore on exit.

    Parameters
    ----------
    model : torch.nn.Module
        The whole network.
    head : torch.nn.Module or iterable of Parameter
        What stays trainable.

    Yields
    ------
    list of Parameter
        The head's parameters (what to pass to ``fit(params=...)``).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    >>> with frozen_except(net, net[1]) as params:
    ...     [p.requires_grad for p in net.parameters()]
    [False, False, True, True]
    >>> all(p.requires_grad for p in net.parameters())
    True
    """
    from torch import nn

    before = {id(p): p.requires_grad for p in model.parameters()}
    params = list(head.parameters()) if isinstance(head, nn.Module) else list(head)
    keep = {id(p) for p in params}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for p in model.parameters():
            p.requires_grad_(before.get(id(p), True))


def cached_features(
    encode: Callable[[torch.Tensor], Any],
    inputs: Iterable[torch.Tensor],
    *,
    module: nn.Module | None = None,
    to_cpu: bool = True,
) -> list[Any]:
    """Run ``encode`` over batches once, in eval mode without gradients.

    Parameters
    ----------
    encode : callable
        The frozen backbone (a tensor in, a tensor or list of tensors out).
    inputs : iterable of Tensor
        Batches, already on the backbone's device.
    module : torch.nn.Module, optional
        The module whose train/eval mode to switch (and restore).
    to_cpu : bool
        Move the features to the CPU (they are kept for many epochs).

    Returns
    -------
    list
        One output per batch.
    """
    import torch

    was = module.training if module is not None else None
    if module is not None:
        module.eval()
    out: list[Any] = []
    try:
        with torch.no_grad():
            for x in inputs:
                f = encode(x)
                if to_cpu:
                    f = [t.cpu() for t in f] if isinstance(f, (list, tuple)) else f.cpu()
                out.append(f)
    finally:
        if module is not None and was is not None:
            module.train(was)
    return out
