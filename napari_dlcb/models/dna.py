"""DNA sequence CNNs: a DeepBind-size model and a Basset-style multitask model.

Both take float one-hot ``(B, 4, L)`` (A, C, G, T) and return logits ``(B, T)``.
Both are plain :class:`torch.nn.Sequential` stacks, so
:func:`napari_dlcb.interpret.mutation_map` takes its fast receptive-field-local
path on them, and both script with TorchScript.

References: Alipanahi et al. 2015 (DeepBind); Kelley et al. 2016 (Basset).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from napari_dlcb.errors import DlcbError

__all__ = ["Basset", "DeepBind", "GlobalMaxAvgPool", "build_dna_model", "ARCHITECTURES"]


class GlobalMaxAvgPool(nn.Module):
    """Global max and mean over length, concatenated: ``(B, C, L) -> (B, 2C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)


class DeepBind(nn.Sequential):
    """DeepBind-size CNN: one wide convolution, global max+mean pool, a small dense layer.

    Parameters
    ----------
    n_tasks : int
        Number of outputs (logits).
    filters : int
        Convolution filters (motif detectors); DeepBind used 16.
    kernel_size : int
        Filter width in bp; DeepBind used 24.
    hidden : int
        Dense hidden units (0 = linear read-out, as DeepBind's smallest model).
    dropout : float
        Dropout before the read-out.

    Examples
    --------
    >>> m = DeepBind(2)
    >>> m(torch.zeros(3, 4, 101)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        n_tasks: int = 1,
        *,
        filters: int = 16,
        kernel_size: int = 24,
        hidden: int = 32,
        dropout: float = 0.5,
    ):
        tail: list[nn.Module] = [GlobalMaxAvgPool(), nn.Dropout(dropout)]
        if hidden:
            tail += [
                nn.Linear(2 * filters, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_tasks),
            ]
        else:
            tail += [nn.Linear(2 * filters, n_tasks)]
        super().__init__(
            nn.Conv1d(4, filters, kernel_size, padding=kernel_size // 2), nn.ReLU(), *tail
        )
        self.config = {
            "name": "deepbind",
            "n_tasks": n_tasks,
            "filters": filters,
            "kernel_size": kernel_size,
            "hidden": hidden,
            "dropout": dropout,
        }


class Basset(nn.Sequential):
    """Basset-style multitask CNN: 3 conv blocks (conv, BN, ReLU, max-pool), 2 dense layers.

    Defaults are Basset's published sizes (conv 300x19, 200x11, 200x7; pools
    3/4/4; dense 1000, 1000), which need L >= 600 bp in spirit but work for any
    L with ``L // 48 >= 1``.

    Parameters
    ----------
    n_tasks : int
        Number of outputs (164 cell types in Basset).
    length : int
        Input length in bp (sets the flattened size).
    filters, kernels, pools : sequence of int
        Per conv block.
    hidden : sequence of int
        Dense layer sizes.
    dropout : float
        Dropout after each dense layer.

    Examples
    --------
    >>> m = Basset(3, length=200, filters=(16, 16, 16), hidden=(32, 32))
    >>> m(torch.zeros(2, 4, 200)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        n_tasks: int = 1,
        *,
        length: int = 600,
        filters: Sequence[int] = (300, 200, 200),
        kernels: Sequence[int] = (19, 11, 7),
        pools: Sequence[int] = (3, 4, 4),
        hidden: Sequence[int] = (1000, 1000),
        dropout: float = 0.3,
    ):
        layers: list[nn.Module] = []
        c_in, L = 4, int(length)
        for f, k, p in zip(filters, kernels, pools):
            layers += [
                nn.Conv1d(c_in, f, k, padding=k // 2),
                nn.BatchNorm1d(f),
                nn.ReLU(),
                nn.MaxPool1d(p),
            ]
            L = (L + 2 * (k // 2) - k + 1) // p
            c_in = f
        if L < 1:
            raise DlcbError(
                f"Basset needs longer windows: {length} bp is too short for pools {tuple(pools)}"
            )
        layers.append(nn.Flatten())
        n_in = c_in * L
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.ReLU(), nn.Dropout(dropout)]
            n_in = h
        layers.append(nn.Linear(n_in, n_tasks))
        super().__init__(*layers)
        self.config = {
            "name": "basset",
            "n_tasks": n_tasks,
            "length": int(length),
            "filters": list(filters),
            "kernels": list(kernels),
            "pools": list(pools),
            "hidden": list(hidden),
            "dropout": dropout,
        }


ARCHITECTURES = {"deepbind": DeepBind, "basset": Basset}


def build_dna_model(name: str, **kwargs) -> nn.Module:
    """Build a DNA model by architecture name (``"deepbind"`` or ``"basset"``).

    Examples
    --------
    >>> build_dna_model("deepbind", n_tasks=1).config["name"]
    'deepbind'
    """
    if name not in ARCHITECTURES:
        raise DlcbError(
            f"unknown DNA architecture {name!r}; choose from {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name](**kwargs)


def _register() -> None:
    """Register the architectures with the saved-model registry when it exists."""
    try:
        from napari_dlcb.models import saved
    except ImportError:  # pragma: no cover - saved.py not written yet
        return
    reg = getattr(saved, "register_architecture", None)
    if reg is None:  # pragma: no cover
        return
    for name, cls in ARCHITECTURES.items():
        reg(name, f"{__name__}:{cls.__name__}", overwrite=True)


_register()
