"""Batches for the training loop: seeding, moving to a device, one forward call."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["batch_size_of", "forward", "seed_everything", "to_device"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loading."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """A tensor, or a list/tuple of them, on ``device`` (4-D images channels-last if asked)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device, channels_last) for o in obj)
    return obj


def batch_size_of(x: Any) -> int:
    """Samples in a batch (its first tensor's first dimension)."""
    return int((x[0] if isinstance(x, (list, tuple)) else x).shape[0])


def forward(model: nn.Module, x: Any) -> torch.Tensor:
    """``model(x)``, or ``model(*x)`` when a batch carries several inputs."""
    return model(*x) if isinstance(x, (list, tuple)) else model(x)
