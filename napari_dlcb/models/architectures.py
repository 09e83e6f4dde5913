"""The architecture registry: build an untrained network from its name and arguments.

Other modules plug their own networks in with one line::

    register_architecture("deepbind", "napari_dlcb.models.dna:DeepBind")

after which ``build_model({"name": "deepbind", **kwargs})`` and
:func:`napari_dlcb.models.saved.load_model` work for them. Builders may be
callables or lazy ``"module:attribute"`` strings (imported on first use,
keeping imports cheap).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.meta import one_line

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["ARCHITECTURES", "build_model", "register_architecture", "resolve_builder"]

#: Architecture name -> builder (a callable taking the architecture's keyword
#: arguments, or a lazy ``"module:attribute"`` string). Append one entry for a new
#: network, or call :func:`register_architecture`.
ARCHITECTURES: dict[str, Callable[..., nn.Module] | str] = {
    "unet2d": "napari_dlcb.models.unet:UNet2D",
    "deepbind": "napari_dlcb.models.dna:DeepBind",
    "basset": "napari_dlcb.models.dna:Basset",
    "deepsea": "napari_dlcb.models.dna:DeepSEA",
    "danq": "napari_dlcb.models.dna:DanQ",
    "cellclf": "napari_dlcb.models.classifier:CellClassifier",
}
_RESOLVED: dict[str, Callable[..., nn.Module]] = {}  # "module:attribute" -> object


def register_architecture(
    name: str, builder: Callable[..., nn.Module] | str, *, overwrite: bool = False
) -> None:
    """Make an architecture buildable by name (and loadable by :func:`load_model`).

    Parameters
    ----------
    name : str
        The ``architecture["name"]`` stored in model metadata.
    builder : callable or str
        Called with the architecture's other keys as keyword arguments; or a
        ``"package.module:attribute"`` string resolved lazily on first use.
    overwrite : bool
        Allow replacing an existing registration with a different builder.

    Raises
    ------
    ValueError
        If ``name`` is reserved or already registered to another builder.

    Examples
    --------
    >>> register_architecture("unet2d", "napari_dlcb.models.unet:UNet2D")  # already there
    """
    if name == "torchscript":
        raise ValueError("'torchscript' is reserved for TorchScript-only models")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise ValueError("builder must be a callable or a 'module:attribute' string")
    old = ARCHITECTURES.get(name)
    if old is not None and not overwrite and _builder_key(old) != _builder_key(builder):
        raise ValueError(f"architecture {name!r} is already registered to {old!r}")
    ARCHITECTURES[name] = builder


def _builder_key(builder: Callable[..., nn.Module] | str) -> str:
    if isinstance(builder, str):
        return builder
    return f"{getattr(builder, '__module__', '')}:{getattr(builder, '__qualname__', repr(builder))}"


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered for ``name``, importing a lazy ``"module:attribute"`` once."""
    builder = ARCHITECTURES.get(name)
    if builder is None:
        known = ", ".join(sorted(ARCHITECTURES)) or "none"
        raise DlcbError(f"unknown model architecture {name!r} (known: {known}, torchscript)")
    if isinstance(builder, str):
        if builder not in _RESOLVED:
            module_name, _, attr = builder.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as err:
                raise DlcbError(f"architecture {name!r} is unavailable: {one_line(err)}") from err
            _RESOLVED[builder] = obj
        return _RESOLVED[builder]
    return builder


def build_model(architecture: Mapping[str, Any]) -> nn.Module:
    """Build an untrained network from an architecture dictionary.

    Parameters
    ----------
    architecture : mapping
        ``{"name": <registered name>, **keyword arguments of its builder}``.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    DlcbError
        If the name is unknown, or ``"torchscript"`` (which has no builder),
        or the keyword arguments are rejected.

    Examples
    --------
    >>> net = build_model({"name": "unet2d", "in_channels": 1, "n_classes": 2})
    >>> type(net).__name__
    'UNet2D'
    """
    kwargs = dict(architecture)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise DlcbError("architecture has no 'name'")
    if name == "torchscript":
        raise DlcbError("a 'torchscript' architecture has no builder: load its model.pt")
    builder = resolve_builder(name)
    try:
        return builder(**kwargs)
    except (TypeError, ValueError) as err:
        raise DlcbError(f"cannot build architecture {name!r}: {one_line(err)}") from err
