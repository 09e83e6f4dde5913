"""Training checkpoints: weights and optimiser moments as safetensors, state as JSON.

Every file is written to a temporary sibling and renamed into place, so a kill
at any moment leaves the previous checkpoint or the new one, never half of one.
No pickle is involved, so a checkpoint folder cannot run code when loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.state import state_to_cpu

__all__ = ["load_checkpoint", "save_safetensors", "write_checkpoint"]

LAST = "last.safetensors"
BEST = "best.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "trainer_state.json"


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint(
    ckdir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
) -> list[tuple[str, Path]]:
    """Write ``last`` (weights, optimiser, trainer state) and, if given, ``best``.

    Returns ``[(kind, path), ...]`` of what was written. The trainer state is
    written last, so a resume always finds weights at least as new as the
    state that points at them.
    """
    written = []
    save_safetensors(state_to_cpu(model), ckdir / LAST)
    tensors, opt_meta = _optimizer_tensors(opt)
    save_safetensors(tensors, ckdir / OPTIMIZER)
    tmp = ckdir / f".{STATE}.tmp"
    tmp.write_text(json.dumps({**state, "optimizer": opt_meta}, default=float))
    tmp.replace(ckdir / STATE)
    written.append(("last", ckdir / LAST))
    if best_state is not None:
        save_safetensors(best_state, ckdir / BEST)
        written.append(("best", ckdir / BEST))
    return written


def load_checkpoint(
    ckdir: Path | None, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load ``last`` into ``model`` and ``opt``; return the trainer state and ``best`` weights."""
    from safetensors.torch import load_file

    if ckdir is None or not (ckdir / LAST).exists() or not (ckdir / STATE).exists():
        raise DlcbError("cannot resume: no checkpoint 'last.safetensors' in checkpoint_dir")
    try:
        model.load_state_dict(load_file(str(ckdir / LAST), device=str(device)))
        st = json.loads((ckdir / STATE).read_text())
        if (ckdir / OPTIMIZER).exists():
            _load_optimizer(
                opt, load_file(str(ckdir / OPTIMIZER), device=str(device)), st["optimizer"]
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise DlcbError(
            f"cannot resume from {ckdir}: the checkpoint is unreadable ({err})"
        ) from err
    best = load_file(str(ckdir / BEST)) if (ckdir / BEST).exists() else None
    return st, best
