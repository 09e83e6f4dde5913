"""The on-disk layout of an annotation store: version pointers, metadata, checks.

An annotation store (:class:`napari_dlcb.io.project.AnnotationStore`) keeps each
layer in ``layers/<name>/`` as immutable version folders and a small ``CURRENT``
JSON pointer naming the current one. This module reads and checks those pieces;
the store itself (locking, saving, the cache fallback) lives in ``project``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.jsonable import json_default

__all__ = [
    "CURRENT",
    "LABEL_KINDS",
    "VERSION",
    "AnnotationStoreWarning",
    "clean_metadata",
    "is_shipped",
    "last_saved",
    "read_pointer",
    "remove_path",
    "warn_pointer",
]

LOGGER = logging.getLogger("napari_dlcb.io.project")
LABEL_KINDS = ("scribbles", "classes", "instances")
#: the pointer file naming a layer's current version folder
CURRENT = "CURRENT"
#: a version folder's name
VERSION = re.compile(r"^v[0-9a-f]{1,20}-[0-9a-f]{8}$")


class AnnotationStoreWarning(UserWarning):
    """Something in an annotation store was ignored or moved (shown by napari as a notification)."""


def is_shipped(image_path: Path) -> bool:
    """Whether the image is a sample file inside the package (or the repo's copy)."""
    import napari_dlcb

    package = Path(napari_dlcb.__file__).resolve().parent
    try:
        resolved = image_path.resolve()
    except OSError:
        return False
    return any(resolved.is_relative_to(d) for d in (package, package.parent / "sample_data"))


def clean_metadata(name: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A layer's metadata as plain JSON values (label kind checked, scale/translate floats)."""
    md = dict(metadata or {})
    kind = md.get("label_kind")
    if kind is not None and kind not in LABEL_KINDS:
        raise DlcbError(
            f"annotation '{name}': label_kind must be one of {', '.join(LABEL_KINDS)}, not {kind!r}"
        )
    for key in ("scale", "translate"):
        if key in md and md[key] is not None:
            md[key] = [float(v) for v in np.asarray(md[key], dtype=float).ravel()]
    try:
        return json.loads(json.dumps(md, default=json_default))
    except (TypeError, ValueError) as exc:
        raise DlcbError(f"annotation '{name}': metadata is not JSON-serialisable") from exc


def read_pointer(layer: Path) -> dict[str, Any] | None:
    """The layer's ``CURRENT`` pointer, or None; a pointer out of its layer is ignored."""
    path = layer / CURRENT
    try:
        if path.stat().st_size > 64 * 1024:  # a pointer is ~100 bytes
            raise ValueError("too large")
        ptr = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        warn_pointer(layer, "is unreadable")
        return None
    if not isinstance(ptr, dict) or not isinstance(ptr.get("name"), str):
        warn_pointer(layer, "is not a napari-dlcb pointer")
        return None
    version = ptr.get("version")
    if not isinstance(version, str) or not VERSION.match(version):
        warn_pointer(layer, f"points outside its layer ({str(version)[:60]!r})")
        return None
    return ptr


def warn_pointer(layer: Path, what: str) -> None:
    """Warn (napari shows it) that a layer's ``CURRENT`` pointer was ignored."""
    message = f"annotation store {layer.parent.parent.name}: {layer.name}/{CURRENT} {what}; ignored"
    warnings.warn(message, AnnotationStoreWarning, stacklevel=3)
    LOGGER.warning(message)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, whichever ``path`` is (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def last_saved(store: Path) -> float:
    """When a layer of ``store`` was last saved (mtime of the newest ``CURRENT``), else 0."""
    try:
        return max((p.stat().st_mtime for p in store.glob(f"layers/*/{CURRENT}")), default=0.0)
    except OSError:
        return 0.0
