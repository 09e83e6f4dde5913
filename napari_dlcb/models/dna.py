"""DNA sequence models: DeepBind, Basset, DeepSEA (CNNs) and DanQ (CNN + bidirectional LSTM).

All take float one-hot ``(B, 4, L)`` (A, C, G, T) and return logits ``(B, T)``,
are plain :class:`torch.nn.Sequential` stacks and script with TorchScript.
:func:`napari_dlcb.interpret.mutation_map` takes its fast receptive-field-local
path on the CNNs; DanQ's LSTM sees the whole sequence, so its mutation maps are
computed by exact batched ISM. Basset, DeepSEA and DanQ flatten position-wise
features into a dense layer, so they take one input length (``length``);
DeepBind takes any length.

References: Alipanahi et al. 2015 (DeepBind); Kelley et al. 2016 (Basset);
Zhou & Troyanskaya 2015 (DeepSEA); Quang & Xie 2016 (DanQ).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from napari_dlcb.errors import DlcbError

__all__ = [
    "ARCHITECTURES",
    "Basset",
    "BiLSTM",
    "DanQ",
    "DeepBind",
    "DeepSEA",
    "GlobalMaxAvgPool",
    "build_dna_model",
    "is_recurrent",
]


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
        batch_norm: bool = False,
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
        conv: list[nn.Module] = [nn.Conv1d(4, filters, kernel_size, padding=kernel_size // 2)]
        if batch_norm:
            conv.append(nn.BatchNorm1d(filters))
        super().__init__(*conv, nn.ReLU(), *tail)
        self.config = _config("deepbind", self, locals())


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
        dropouts = [0.0] * len(filters)
        layers, c_in, out_length = _conv_blocks(filters, kernels, pools, dropouts, basset=True)
        L = _checked_length("Basset", length, out_length, pools)
        layers.append(nn.Flatten())
        n_in = c_in * L
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.ReLU(), nn.Dropout(dropout)]
            n_in = h
        layers.append(nn.Linear(n_in, n_tasks))
        super().__init__(*layers)
        self.config = _config("basset", self, locals())


def _config(name: str, model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    """The architecture's name and constructor arguments, as JSON (``model.config``).

    ``args`` is the constructor's ``locals()``; the names come from its
    signature, so a new argument is recorded without a second list here.
    Sequences become lists and whole numbers ints, so that
    ``build_dna_model(**config)`` (less the name) builds the same network.
    """
    names = list(inspect.signature(type(model).__init__).parameters)[1:]  # not self
    return {"name": name, **{k: _plain(args[k]) for k in names}}


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, (str, float)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return list(value) if isinstance(value, Iterable) else value


def _conv_blocks(
    filters: Sequence[int],
    kernels: Sequence[int],
    pools: Sequence[int],
    dropouts: Sequence[float],
    *,
    basset: bool = False,
) -> tuple[list[nn.Module], int, Callable[[int], int]]:
    """Conv (``k // 2`` padding), ReLU, max-pool (if > 1), dropout; and the length map.

    Parameters
    ----------
    filters, kernels, pools, dropouts : sequence
        Per block (dropout 0: none).
    basset : bool
        Basset's blocks: a batch norm between conv and ReLU, and a max-pool
        even of size 1 (the layer indices of saved Basset weights).

    Returns
    -------
    layers : list of torch.nn.Module
        The blocks' layers.
    channels : int
        Channels out of the last block.
    out_length : callable
        Input length in bp -> output length.
    """
    layers: list[nn.Module] = []
    c_in = 4
    for f, k, p, d in zip(filters, kernels, pools, dropouts):
        layers.append(nn.Conv1d(c_in, f, k, padding=k // 2))
        layers += [nn.BatchNorm1d(f), nn.ReLU()] if basset else [nn.ReLU()]
        if p > 1 or basset:
            layers.append(nn.MaxPool1d(p))
        if d:
            layers.append(nn.Dropout(d))
        c_in = f

    def out_length(L: int) -> int:
        for k, p in zip(kernels, pools):
            L = (L + 2 * (k // 2) - k + 1) // max(p, 1)
        return L

    return layers, c_in, out_length


def _checked_length(
    name: str, length: int, out_length: Callable[[int], int], pools: int | Sequence[int]
) -> int:
    """The length after the conv blocks, refused when the windows are too short for them.

    Parameters
    ----------
    name : str
        The architecture, for the message.
    length : int
        Input length in bp.
    out_length : callable
        The blocks' length map (from :func:`_conv_blocks`).
    pools : int or sequence of int
        The blocks' pools (one int: a single pool), for the message.

    Returns
    -------
    int
        ``out_length(length)``, at least 1.
    """
    L = out_length(int(length))
    if L < 1:
        too_short = (
            f"is shorter than pool {pools}"
            if isinstance(pools, int)
            else f"is too short for pools {tuple(pools)}"
        )
        raise DlcbError(f"{name} needs longer windows: {length} bp {too_short}")
    return L


class DeepSEA(nn.Sequential):
    """DeepSEA-style CNN: 3 conv layers (max-pooling and dropout after the first two), a dense layer.

    Defaults are DeepSEA's published sizes (conv 320, 480, 960 filters of
    8 bp; max-pool 4 after the first two; dropout 0.2, 0.2, 0.5; dense 925).
    Convolutions are zero-padded (``k // 2``) so that short windows such as
    101 bp fit; DeepSEA itself used 1,000 bp without padding.

    Parameters
    ----------
    n_tasks : int
        Number of outputs (919 chromatin features in DeepSEA).
    length : int
        Input length in bp (sets the flattened size).
    filters, kernels, pools, dropouts : sequence of int / float
        Per conv layer (pool 1 = none).
    hidden : int
        Dense layer size.

    Examples
    --------
    >>> m = DeepSEA(2, length=101, filters=(8, 8, 8), hidden=16)
    >>> m(torch.zeros(3, 4, 101)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        n_tasks: int = 1,
        *,
        length: int = 1000,
        filters: Sequence[int] = (320, 480, 960),
        kernels: Sequence[int] = (8, 8, 8),
        pools: Sequence[int] = (4, 4, 1),
        dropouts: Sequence[float] = (0.2, 0.2, 0.5),
        hidden: int = 925,
    ):
        if not len(filters) == len(kernels) == len(pools) == len(dropouts):
            raise DlcbError("DeepSEA needs as many kernels, pools and dropouts as filters")
        layers, c, out_length = _conv_blocks(filters, kernels, pools, dropouts)
        L = _checked_length("DeepSEA", length, out_length, pools)
        super().__init__(
            *layers,
            nn.Flatten(),
            nn.Linear(c * L, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_tasks),
        )
        self.config = _config("deepsea", self, locals())


class BiLSTM(nn.Module):
    """A bidirectional LSTM along the length axis: ``(B, C, L) -> (B, 2 * hidden, L)``.

    Examples
    --------
    >>> BiLSTM(8, 5)(torch.zeros(2, 8, 7)).shape
    torch.Size([2, 10, 7])
    """

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(in_channels, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out, _ = self.lstm(x.transpose(1, 2))
        return out.transpose(1, 2)


class DanQ(nn.Sequential):
    """DanQ-style hybrid: a convolution (motif scanners), max-pool, a bidirectional LSTM, dense layers.

    Defaults are DanQ's published sizes (320 filters of 26 bp, max-pool 13,
    dropout 0.2, BiLSTM 2 x 320, dropout 0.5, dense 925). The LSTM reads the
    pooled motif activations in both directions, so it can learn the grammar
    (order, spacing) of motifs; its receptive field is the whole sequence.

    Parameters
    ----------
    n_tasks : int
        Number of outputs (919 in DanQ).
    length : int
        Input length in bp (sets the flattened size).
    filters, kernel_size, pool : int
        First-layer filters, their width in bp, and the max-pool size.
    lstm : int
        LSTM units per direction.
    hidden : int
        Dense layer size.
    dropout : tuple of float
        After the pooling and after the LSTM.

    Examples
    --------
    >>> m = DanQ(2, length=101, filters=8, kernel_size=9, pool=5, lstm=4, hidden=8)
    >>> m(torch.zeros(3, 4, 101)).shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        n_tasks: int = 1,
        *,
        length: int = 1000,
        filters: int = 320,
        kernel_size: int = 26,
        pool: int = 13,
        lstm: int = 320,
        hidden: int = 925,
        dropout: Sequence[float] = (0.2, 0.5),
    ):
        layers, c, out_length = _conv_blocks([filters], [kernel_size], [pool], [dropout[0]])
        L = _checked_length("DanQ", length, out_length, pool)
        super().__init__(
            *layers,
            BiLSTM(c, lstm),
            nn.Dropout(dropout[1]),
            nn.Flatten(),
            nn.Linear(2 * lstm * L, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_tasks),
        )
        self.config = _config("danq", self, locals())


def is_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` holds a recurrent layer (its receptive field is the whole sequence).

    Examples
    --------
    >>> is_recurrent(DanQ(1, length=50, filters=4, kernel_size=5, pool=5, lstm=2, hidden=4))
    True
    >>> is_recurrent(DeepBind(1))
    False
    """
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


ARCHITECTURES = {"deepbind": DeepBind, "basset": Basset, "deepsea": DeepSEA, "danq": DanQ}


def build_dna_model(name: str, **kwargs) -> nn.Module:
    """Build a DNA model by architecture name (``"deepbind"``, ``"basset"``, ``"deepsea"``, ``"danq"``).

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
