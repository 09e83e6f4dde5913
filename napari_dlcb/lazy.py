"""Lazy package exports: a name is imported from its submodule on first use.

The packages whose ``__init__`` must stay cheap to import (no torch) list their
public names in a table, name -> submodule, and take their module-level
``__getattr__`` and ``__dir__`` (PEP 562) from :func:`lazy_exports`. Like
:mod:`napari_dlcb.errors`, this module sits below every layer and imports
nothing from the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], *, cache: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for a package's lazy names.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping of str to str
        Public name -> the submodule of ``package`` that defines it, or a
        module's full name (``"napari_dlcb.data.labels"``) for a name that moved.
    cache : bool
        Store a name in the package once loaded, so later look-ups skip
        ``__getattr__``.

    Returns
    -------
    __getattr__, __dir__ : callable
        To assign at the package's top level.

    Examples
    --------
    >>> getattr_, dir_ = lazy_exports("napari_dlcb", {"DlcbError": "errors"})
    >>> getattr_("DlcbError").__name__
    'DlcbError'
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        full = module if module.startswith("napari_dlcb.") else f"{package}.{module}"
        value = getattr(importlib.import_module(full), name)
        if cache:
            setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
