"""Hand a model back exactly as it was received (STYLE.md rule 6): the one model-state guard.

Training, prediction and interpretation all change a model for a while: they
switch it to eval mode, move it to a device, turn on gradients and register
hooks. This module is the one place that records and restores that state:

- :func:`preserve_model_state`: everything (mode of every sub-module, devices,
  ``requires_grad``, ``.grad``, hooks), for interpretation methods;
- :func:`inference_mode_on`: eval mode on a device under
  ``torch.inference_mode``, for prediction;
- :func:`state_to_cpu`: a CPU copy of the weights (best-epoch snapshots).

Interpretation functions switch a model to eval mode, move it to a device,
turn on gradients and register hooks. :func:`preserve_model_state` undoes all
of that in a ``finally`` block, as tangermeme's ``_preserve_model_state``
does, and checks, as captum's ``test_hook_removal.py`` does, that no hook was
left behind.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "ModelState",
    "hook_counts",
    "inference_mode_on",
    "preserve_model_state",
    "state_to_cpu",
]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def hook_counts(model: nn.Module) -> dict[str, dict[str, set[int]]]:
    """Return the hook handle ids registered on every sub-module.

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    dict
        ``{module_name: {hook_dict_name: set of handle ids}}`` for modules
        that have at least one hook.

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(2, 2)
    >>> hook_counts(m)
    {}
    """
    out: dict[str, dict[str, set[int]]] = {}
    for name, mod in model.named_modules():
        entry = {}
        for attr in _HOOK_DICTS:
            d = getattr(mod, attr, None)
            if d:
                entry[attr] = set(d.keys())
        if entry:
            out[name] = entry
    return out


@dataclass
class ModelState:
    """A snapshot of everything an interpretation method may change."""

    training: dict[str, bool] = field(default_factory=dict)
    devices: dict[str, torch.device] = field(default_factory=dict)
    requires_grad: dict[str, bool] = field(default_factory=dict)
    grads: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = field(default_factory=dict)
    hooks: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    grad_enabled: bool = True

    @classmethod
    def capture(cls, model: nn.Module) -> ModelState:
        """Snapshot ``model``: per-module mode, tensor devices, grads, hooks."""
        state = cls(grad_enabled=torch.is_grad_enabled())
        state.training = {n: m.training for n, m in model.named_modules()}
        for n, p in model.named_parameters():
            state.devices["p:" + n] = p.device
            state.requires_grad[n] = p.requires_grad
            g = p.grad
            state.grads[n] = (g, None if g is None else g.detach().clone())
        for n, b in model.named_buffers():
            state.devices["b:" + n] = b.device
        state.hooks = hook_counts(model)
        return state

    def restore(self, model: nn.Module) -> list[str]:
        """Put ``model`` back as captured; return the names of removed leftover hooks."""
        modules = dict(model.named_modules())
        for n, mode in self.training.items():
            if n in modules:
                _set_mode(modules[n], mode)
        params = dict(model.named_parameters())
        for n, p in params.items():
            dev = self.devices.get("p:" + n)
            if dev is not None and p.device != dev:
                p.data = p.data.to(dev)
            if n in self.requires_grad:
                p.requires_grad_(self.requires_grad[n])
            if n in self.grads:
                ref, values = self.grads[n]
                if ref is not None and values is not None:
                    ref.data = values.to(ref.device)
                p.grad = ref
        for mod_name, mod in modules.items():
            for bname, buf in list(mod._buffers.items()):
                if buf is None:
                    continue
                full = f"{mod_name}.{bname}" if mod_name else bname
                dev = self.devices.get("b:" + full)
                if dev is not None and buf.device != dev:
                    mod._buffers[bname] = buf.to(dev)
        leftover = []
        for mod_name, mod in modules.items():
            before = self.hooks.get(mod_name, {})
            for attr in _HOOK_DICTS:
                d = getattr(mod, attr, None)
                if not d:
                    continue
                for key in list(d.keys()):
                    if key not in before.get(attr, set()):
                        del d[key]
                        leftover.append(f"{mod_name or '<root>'}.{attr}")
        torch.set_grad_enabled(self.grad_enabled)
        return leftover


def _set_mode(module: nn.Module, mode: bool) -> None:
    # Set only this module's flag: children are restored from their own entries.
    module.training = mode


@contextlib.contextmanager
def preserve_model_state(model: nn.Module, *, strict_hooks: bool = True) -> Iterator[nn.Module]:
    """Restore a model's mode, devices, ``requires_grad``, ``.grad`` and hooks on exit.

    The state of every sub-module and parameter is recorded on entry and put
    back in a ``finally`` block, so the model is handed back unchanged even if
    the body raises. Hooks registered inside the block and not removed are
    deleted on exit; with ``strict_hooks`` that is reported as a
    ``RuntimeError`` (a programming error in the interpretation code) unless
    another exception is already propagating.

    Parameters
    ----------
    model : torch.nn.Module
        The model to protect.
    strict_hooks : bool
        Raise if hooks were left behind (they are removed either way);
        if False, only warn.

    Yields
    ------
    torch.nn.Module
        The same model, for convenience.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).train()
    >>> with preserve_model_state(m):
    ...     _ = m.eval()
    ...     m[0].weight.requires_grad_(False)  # doctest: +ELLIPSIS
    Parameter containing:...
    >>> m.training, m[0].weight.requires_grad
    (True, True)
    """
    state = ModelState.capture(model)
    failed = False
    try:
        yield model
    except BaseException:
        failed = True
        raise
    finally:
        leftover = state.restore(model)
        if leftover and not failed:
            msg = "interpretation left hooks on the model (removed): " + ", ".join(leftover)
            if strict_hooks:
                raise RuntimeError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)


def state_to_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()`` (a snapshot that later steps cannot change)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@contextlib.contextmanager
def inference_mode_on(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Eval mode on ``device`` under ``torch.inference_mode``; hand the model back unchanged.

    The training flag of every sub-module and the original device are restored
    in a ``finally`` block, also when the caller's generator is closed early.

    Examples
    --------
    >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    >>> with inference_mode_on(m, torch.device("cpu")):
    ...     m.training
    False
    >>> m.training
    True
    """
    from napari_dlcb.device import model_device

    modes = [(m, m.training) for m in model.modules()]
    original = model_device(model)
    try:
        model.eval()
        if original is not None and original != device:
            model.to(device)
        with torch.inference_mode():
            yield model
    finally:
        for module, mode in modes:
            module.train(mode)
        if original is not None and model_device(model) != original:
            model.to(original)
