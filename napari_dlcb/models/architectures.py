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
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.meta import one_line

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "ARCHITECTURES",
    "MAX_PARAMETERS",
    "build_model",
    "count_parameters",
    "register_architecture",
    "resolve_builder",
]

#: the most parameters a network described by metadata may have (1.6 GB of float32):
#: ten times the largest network napari-dlcb ships, far below what would exhaust memory
MAX_PARAMETERS = 400_000_000
#: the largest number in an architecture's arguments (channels, lengths, depths...)
_MAX_ARGUMENT = 2**24
#: the most sub-modules a network described by metadata may register while it is built
#: (the built-in networks have under 200): ``blocks=[100000]`` is refused, not built for hours
MAX_MODULES = 5_000

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
    "ensemble": "napari_dlcb.models.ensemble:Ensemble",
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
    name, kwargs = _checked(architecture)
    count_parameters(architecture)  # refuses absurd sizes before anything is allocated
    try:
        return resolve_builder(name)(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DlcbError(f"cannot build architecture {name!r}: {one_line(err)}") from err


def _checked(architecture: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name and arguments of an architecture dict, with absurd numbers refused."""
    if not isinstance(architecture, Mapping):
        raise DlcbError("architecture must be a dict with a 'name'")
    kwargs = dict(architecture)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise DlcbError("architecture has no 'name'")
    if name == "torchscript":
        raise DlcbError("a 'torchscript' architecture has no builder: load its model.pt")
    for key, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if len(values) > 10_000 or any(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > _MAX_ARGUMENT
            for v in values
        ):
            raise DlcbError(
                f"architecture {name!r}: {key}={str(value)[:40]} is out of range (model "
                "metadata from an untrusted source?)"
            )
    return name, kwargs


@contextmanager
def _module_budget(name: str) -> Iterator[None]:
    """Refuse, in this thread, a build that registers more than :data:`MAX_MODULES` modules."""
    from torch.nn.modules.module import register_module_module_registration_hook

    me, count = threading.get_ident(), [0]

    def hook(module: Any, key: str, sub: Any) -> None:
        if threading.get_ident() != me:
            return
        count[0] += 1
        if count[0] > MAX_MODULES:
            raise DlcbError(
                f"architecture {name!r} has more than {MAX_MODULES:,} layers (model metadata "
                "from an untrusted source?)"
            )

    handle = register_module_module_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def count_parameters(architecture: Mapping[str, Any]) -> int:
    """The number of parameters the architecture has, found without allocating them.

    The network is built on PyTorch's ``meta`` device (shapes only, no memory),
    so ``{"name": "unet2d", "base": 4096}`` from a crafted ``metadata.json`` is
    refused in milliseconds instead of allocating gigabytes.

    Parameters
    ----------
    architecture : mapping
        As for :func:`build_model`.

    Returns
    -------
    int

    Raises
    ------
    DlcbError
        More than :data:`MAX_PARAMETERS`, or arguments the builder rejects.

    Examples
    --------
    >>> count_parameters({"name": "unet2d", "in_channels": 1, "n_classes": 2, "base": 4, "depth": 2})
    7720
    >>> count_parameters({"name": "unet2d", "in_channels": 1, "n_classes": 2, "base": 4096})
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: architecture 'unet2d' has 128,498,249,748 parameters, more than the 400,000,000 napari-dlcb builds (model metadata from an untrusted source?)
    """
    import torch

    name, kwargs = _checked(architecture)
    builder = resolve_builder(name)
    try:
        with torch.device("meta"), _module_budget(name):
            net = builder(**kwargs)
        n = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    except DlcbError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, NotImplementedError) as err:
        raise DlcbError(f"cannot build architecture {name!r}: {one_line(err)}") from err
    if n > MAX_PARAMETERS:
        raise DlcbError(
            f"architecture {name!r} has {n:,} parameters, more than the {MAX_PARAMETERS:,} "
            "napari-dlcb builds (model metadata from an untrusted source?)"
        )
    return n
