"""Model weights as safetensors files (no pickle), written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import atomic_write
from napari_dlcb.models.meta import one_line

__all__ = ["load_weights", "read_safetensors", "save_weights"]


def save_weights(
    model: nn.Module | Mapping[str, torch.Tensor],
    file: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's state dict to a safetensors file, atomically.

    Parameters
    ----------
    model : torch.nn.Module or mapping of str to torch.Tensor
        The model (its ``state_dict()`` is saved) or a state dict.
    file : str or path-like
        Destination ``.safetensors`` file.
    dtype : torch.dtype, optional
        Store floating-point tensors in this dtype (e.g. ``torch.float16`` to
        halve the file); :func:`load_weights` casts back to the model's dtype.
    metadata : mapping of str to str, optional
        Free-form text stored in the safetensors header.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {}
    for k, v in state.items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous().clone()  # clone: no shared storage in safetensors
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": "pt", **({k: str(v) for k, v in (metadata or {}).items()})}
    atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return file


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, on the CPU (no pickle involved)."""
    from safetensors.torch import load_file

    if not file.is_file():
        raise DlcbError(f"model weights not found: {file}")
    try:
        return load_file(str(file), device="cpu")
    except Exception as err:  # safetensors raises its own Rust-side error types
        raise DlcbError(
            f"cannot read weights {file} (corrupt or truncated?): {one_line(err)}"
        ) from err


def load_weights(model: nn.Module, file: str | os.PathLike) -> nn.Module:
    """Load a safetensors state dict into ``model`` (in place), strictly.

    Floating-point tensors are cast to the dtype of the model's own tensors,
    so weights stored in float16 load into a float32 model.

    Parameters
    ----------
    model : torch.nn.Module
        The network to fill (eager or TorchScript).
    file : str or path-like
        A ``.safetensors`` file.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    DlcbError
        If the file is missing, unreadable, has non-finite values, or its
        tensor names or shapes do not match the model.
    """
    file = Path(file)
    state = read_safetensors(file)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                f"file, {tuple(expected[k].shape)} expected)"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise DlcbError(f"weights {file.name} do not match the model: {'; '.join(parts)}")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise DlcbError(f"weights {file.name} contain NaN or infinite values ({k})")
        target = expected[k]
        if v.dtype != target.dtype and v.is_floating_point() and target.is_floating_point():
            state[k] = v.to(target.dtype)
    model.load_state_dict(state, strict=True)
    return model
