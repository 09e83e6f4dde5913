"""Training checkpoints: one safetensors file per checkpoint, written atomically.

``last.safetensors`` holds everything a resume needs, in one file so that it
is always consistent: the weights (``model.<name>``), the optimiser moments
(``optimizer.<param>.<name>``), the best weights so far (``best.<name>``, left
out when they are the current ones) and the trainer state (epoch, history,
best score, learning-rate schedule) as JSON in the header. It is written to a
temporary sibling and renamed into place, so a kill at any moment leaves the
previous checkpoint or the new one, never a mix of epochs. ``best.safetensors``
is the best weights alone, for people who want them. No pickle is involved,
so a checkpoint folder cannot run code when loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import atomic_write
from napari_dlcb.models.state import state_to_cpu

__all__ = ["checkpoint_epochs", "load_checkpoint", "save_safetensors", "write_checkpoint"]

LAST = "last.safetensors"
BEST = "best.safetensors"
#: files of the format before one-file checkpoints (still read by :func:`load_checkpoint`)
OPTIMIZER = "optimizer.safetensors"
STATE = "trainer_state.json"
_HEADER = "napari_dlcb_trainer_state"


def save_safetensors(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write tensors atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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
    *,
    best_is_model: bool = False,
    best_changed: bool | None = None,
) -> list[tuple[str, Path]]:
    """Write ``last`` (everything a resume needs, one file) and, if it changed, ``best``.

    Parameters
    ----------
    ckdir : Path
        The checkpoint folder.
    model, opt
        The network and its optimiser.
    state : dict
        JSON-able trainer state (``epoch``, ``history``, ``best_score``...).
    best_state : dict, optional
        The best weights so far; stored in ``last`` (unless ``best_is_model``).
    best_is_model : bool
        The best weights are the current ones (stored once).
    best_changed : bool, optional
        Also write ``best.safetensors`` (default: whenever ``best_state`` is given).

    Returns
    -------
    list of (str, Path)
        ``[(kind, path), ...]`` of what was written.
    """
    current = state_to_cpu(model)
    tensors = {f"model.{k}": v for k, v in current.items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update({f"optimizer.{k}": v for k, v in opt_tensors.items()})
    if best_state and not best_is_model:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    header = {**state, "optimizer": opt_meta, "best_is_model": bool(best_is_model)}
    text = json.dumps(header, default=_json_number)
    save_safetensors(tensors, ckdir / LAST, metadata={_HEADER: text})
    written = [("last", ckdir / LAST)]
    for old in (OPTIMIZER, STATE):  # files of the old format would contradict the new one
        (ckdir / old).unlink(missing_ok=True)
    if best_changed is None:
        best_changed = best_state is not None
    if best_changed and (best_state or best_is_model):
        save_safetensors(current if best_is_model else best_state, ckdir / BEST)
        written.append(("best", ckdir / BEST))
    return written


def _json_number(value: Any) -> Any:
    return float(value)


def _read_header(file: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata() or {}
    text = meta.get(_HEADER)
    return None if text is None else json.loads(text)


def checkpoint_epochs(ckdir: str | Path | None) -> int:
    """How many epochs the checkpoint in ``ckdir`` has finished (0 if there is none).

    Parameters
    ----------
    ckdir : path or None
        A checkpoint folder.

    Returns
    -------
    int
        ``epoch + 1`` of the last checkpoint.

    Raises
    ------
    DlcbError
        The checkpoint cannot be read.
    """
    if ckdir is None or not (Path(ckdir) / LAST).is_file():
        return 0
    ckdir = Path(ckdir)
    try:
        st = _read_header(ckdir / LAST)
        if st is None and (ckdir / STATE).is_file():
            st = json.loads((ckdir / STATE).read_text())
        return 0 if st is None else int(st["epoch"]) + 1
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise DlcbError(f"cannot resume from {ckdir}: the checkpoint is unreadable") from err


def load_checkpoint(
    ckdir: Path | None, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load ``last`` into ``model`` and ``opt``; return the trainer state and the best weights."""
    from safetensors.torch import load_file

    if ckdir is None or not (ckdir / LAST).is_file():
        raise DlcbError("cannot resume: no checkpoint 'last.safetensors' in checkpoint_dir")
    try:
        st = _read_header(ckdir / LAST)
        tensors = load_file(str(ckdir / LAST), device=str(device))
        if st is None:  # the format before one-file checkpoints
            return _load_legacy(ckdir, model, opt, device, tensors)
        parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "best": {}}
        for key, val in tensors.items():
            kind, name = key.split(".", 1)
            parts[kind][name] = val
        model.load_state_dict(parts["model"])
        _load_optimizer(opt, parts["optimizer"], st["optimizer"])
    except DlcbError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors, torch and json raise many types
        raise DlcbError(
            f"cannot resume from {ckdir}: the checkpoint is unreadable or belongs to another "
            f"model ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})"
        ) from err
    if st.get("best_is_model"):
        best = {k: v.detach().cpu().clone() for k, v in parts["model"].items()}
    else:
        best = {k: v.cpu() for k, v in parts["best"].items()} or None
    return st, best


def _load_legacy(
    ckdir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    weights: dict[str, torch.Tensor],
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    from safetensors.torch import load_file

    if not (ckdir / STATE).is_file():
        raise DlcbError(f"cannot resume from {ckdir}: {STATE} is missing")
    model.load_state_dict(weights)
    st = json.loads((ckdir / STATE).read_text())
    if (ckdir / OPTIMIZER).exists():
        _load_optimizer(opt, load_file(str(ckdir / OPTIMIZER), device=str(device)), st["optimizer"])
    best = load_file(str(ckdir / BEST)) if (ckdir / BEST).exists() else None
    return st, best
