"""Autosave of annotation layers: napari Labels edits -> core ``DebouncedSaver``.

:func:`enable_autosave` connects a Labels layer to the
:class:`~napari_dlcb.io.project.AnnotationStore` of its image, through a
:class:`~napari_dlcb.io.project.DebouncedSaver`, so that painting is written to
disk a moment (``delay`` seconds) after the last edit and a crash loses at most
that much work. Reopening the image with the plugin's reader restores the layer.

Which napari events mean "the annotation changed" (napari 0.9):

- ``paint``: emitted once per finished brush stroke, fill or erase (when the
  edit enters the undo history), also for :meth:`Labels.paint` and
  :meth:`Labels.fill` called from code;
- ``data``: the whole array was replaced (``layer.data = ...``);
- ``set_data``: emitted by ``layer.refresh()``, e.g. after a script wrote into
  ``layer.data`` directly. It also fires on slicing, so it only marks the layer
  dirty when a cheap CRC of the array changed.

``labels_update`` is deliberately not used: it fires for every mouse move of a
stroke, and the stroke ends with a ``paint`` event anyway.

Where the store lives: beside the image file (``image_layer.source.path``).
An image that has no file (made in a script, pasted, a sample generated in
memory) uses a cache fallback: ``$NAPARI_DLCB_CACHE`` (default
``~/.cache/napari-dlcb``) ``/unsaved/<image layer name>``, so annotations on
unsaved images survive a crash too and are found again by the image's name.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    from napari.layers import Image, Labels

__all__ = ["AnnotationAutosave", "cache_dir", "enable_autosave", "store_path_for"]

_CRC_MAX_BYTES = 256 * 1024 * 1024  # beyond this, set_data alone never marks dirty


def cache_dir() -> Path:
    """Root of the plugin's cache (``$NAPARI_DLCB_CACHE`` or ``~/.cache/napari-dlcb``)."""
    env = os.environ.get("NAPARI_DLCB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "napari-dlcb"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def store_path_for(image_layer: Image) -> Path:
    """The image path an :class:`AnnotationStore` is keyed on for ``image_layer``.

    The file the layer was read from, or, for an image without a file, a
    stand-in path in the cache named after the layer.
    """
    path = getattr(image_layer.source, "path", None)
    if path:
        return Path(path)
    return cache_dir() / "unsaved" / _safe_name(image_layer.name)


def _fingerprint(data: Any) -> int | None:
    if not isinstance(data, np.ndarray) or data.nbytes > _CRC_MAX_BYTES:
        return None
    return zlib.crc32(np.ascontiguousarray(data).data)


class AnnotationAutosave:
    """Keeps one Labels layer saved to its image's annotation store.

    Parameters
    ----------
    image_layer : napari.layers.Image
        The annotated image; decides where the store lives.
    labels_layer : napari.layers.Labels
        The annotation; saved under its layer name.
    delay : float
        Seconds of quiet after the last edit before writing.
    """

    def __init__(self, image_layer: Image, labels_layer: Labels, *, delay: float = 1.0) -> None:
        from napari_dlcb.io.project import AnnotationStore, DebouncedSaver

        self.image_layer = image_layer
        self.labels_layer = labels_layer
        self.image_path = store_path_for(image_layer)
        if getattr(image_layer.source, "path", None) is None:
            self.image_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store = AnnotationStore(self.image_path)
        except OSError as err:
            raise DlcbError(f"cannot create the annotation store for {self.image_path}: {err}")
        self.saver = DebouncedSaver(self.store, delay=delay)
        self.n_marked = 0
        self._crc = _fingerprint(labels_layer.data)
        self._name = labels_layer.name
        ev = labels_layer.events
        self._connections = [
            (ev.paint, self._on_edit),
            (ev.data, self._on_edit),
            (ev.set_data, self._on_refresh),
        ]
        for emitter, callback in self._connections:
            emitter.connect(callback)

    # ------------------------------------------------------------------ events
    def _get_array(self) -> np.ndarray:
        # called by the saver (possibly from its timer thread): copy what is there now
        return np.array(self.labels_layer.data, copy=True)

    def _metadata(self) -> dict[str, Any]:
        layer = self.labels_layer
        return {
            "scale": [float(s) for s in layer.scale],
            "translate": [float(t) for t in layer.translate],
            "image": self.image_layer.name,
        }

    def mark_dirty(self) -> None:
        """Tell the saver the layer changed (it writes after ``delay`` s of quiet)."""
        name = self.labels_layer.name
        self.n_marked += 1
        self.saver.mark_dirty(name, self._get_array, metadata=self._metadata())

    def _on_edit(self, event: Any = None) -> None:
        self._crc = _fingerprint(self.labels_layer.data)  # so the next refresh is a no-op
        self.mark_dirty()

    def _on_refresh(self, event: Any = None) -> None:
        crc = _fingerprint(self.labels_layer.data)
        if crc is None or crc == self._crc:
            return
        self._crc = crc
        self.mark_dirty()

    # ------------------------------------------------------------------ control
    def flush(self) -> None:
        """Write pending changes now."""
        self.saver.flush()

    def disconnect(self) -> None:
        """Flush and stop listening to the layer."""
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections = []
        self.saver.flush()
        close = getattr(self.saver, "close", None)
        if callable(close):
            close()


def enable_autosave(
    image_layer: Image, labels_layer: Labels, *, delay: float = 1.0
) -> AnnotationAutosave:
    """Autosave ``labels_layer`` into the annotation store of ``image_layer``.

    Returns the :class:`AnnotationAutosave`; call ``disconnect()`` to stop.
    """
    return AnnotationAutosave(image_layer, labels_layer, delay=delay)
