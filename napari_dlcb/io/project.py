"""Annotation autosave: a crash-safe Zarr store beside each image.

Scribbles, class and instance labels are saved to ``<image stem>.dlcb.zarr``
in the image's folder (or, when that folder is read-only, to a per-user cache
folder keyed by the image's absolute path). Reopening the image with the
napari-dlcb reader brings the annotation layers back.

Layout of a store::

    cells.dlcb.zarr/
      zarr.json                       group; attributes {"napari_dlcb": {...}}
      layers/<slug>/CURRENT           {"name": ..., "version": "v..."}  (atomic pointer)
      layers/<slug>/v<time>-<id>/     one complete Zarr array per saved version

A save writes a *new* version folder, flushes it to disk, then atomically
replaces the small ``CURRENT`` file that points to it (``os.replace``) and only
then deletes older versions. A process killed at any moment therefore leaves
either the old or the new version current, never a mix.

Several processes (two napari windows) may share a store: a save holds the
layer's lock file (``layers/<slug>/.lock``, created with ``O_EXCL``, so it
works on any OS and file system without ``fcntl``; a lock whose process has
died is taken over), so saves of one layer never interleave and the last
writer wins; a reader re-reads ``CURRENT`` after reading a version and tries
again if it changed meanwhile, so it never sees a half-deleted (zero-filled)
array. ``CURRENT`` is trusted only to name a version folder of its own layer:
anything else (``../other``, an absolute path) is ignored with a warning.
When the store's folder cannot be written (a read-only share), saves go to
the user cache with a warning, and the store that was saved last is the one
found next time. :class:`~napari_dlcb.io.autosave.DebouncedSaver` saves layers
shortly after the user stops drawing.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import fsync_dir, fsync_tree
from napari_dlcb.io.filelock import lock_file
from napari_dlcb.io.paths import image_stem
from napari_dlcb.io.store_layout import (
    CURRENT,
    LABEL_KINDS,
    AnnotationStoreWarning,
    clean_metadata,
    is_shipped,
    last_saved,
    read_pointer,
    remove_path,
)

__all__ = [
    "LABEL_KINDS",
    "STORE_SUFFIX",
    "AnnotationStore",
    "AnnotationStoreWarning",
    "user_cache_dir",
]

LOGGER = logging.getLogger(__name__)

#: Kinds of annotation the store records in each layer's metadata.
#: Suffix of annotation stores: ``cells.tif`` -> ``cells.dlcb.zarr``.
STORE_SUFFIX = ".dlcb.zarr"
_FORMAT = 1
_CHUNK = 1024
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_LOCK = ".lock"
#: how long a save waits for another process's save of the same layer
LOCK_WAIT = 30.0


def user_cache_dir() -> Path:
    """Per-user cache folder of napari-dlcb (not created here).

    Returns
    -------
    pathlib.Path
        ``$NAPARI_DLCB_CACHE`` if set, else ``$XDG_CACHE_HOME/napari-dlcb``,
        else ``~/.cache/napari-dlcb``.
    """
    env = os.environ.get("NAPARI_DLCB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "napari-dlcb"


class AnnotationStore:
    """Crash-safe autosave store of the annotation layers drawn on one image.

    Nothing is created on disk until the first :meth:`save`.

    Parameters
    ----------
    image_path : str or path-like
        The annotated image (file or ``.zarr`` folder). It need not exist.

    Attributes
    ----------
    image_path : pathlib.Path
        Absolute path of the image.
    path : pathlib.Path
        The store folder: ``<image folder>/<stem>.dlcb.zarr``, or
        ``<cache>/annotations/<stem>-<hash>.dlcb.zarr`` when the image folder
        is not writable or the image is one of the shipped sample files (see
        :func:`user_cache_dir`).

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> store = AnnotationStore(pathlib.Path(tempfile.mkdtemp()) / "cells.tif")
    >>> store.save("scribbles", np.eye(3, dtype=np.uint8), metadata={"label_kind": "scribbles"})
    >>> store.names(), store.path.name
    (['scribbles'], 'cells.dlcb.zarr')
    >>> int(store.load("scribbles").sum()), store.metadata("scribbles")["label_kind"]
    (3, 'scribbles')
    """

    def __init__(self, image_path: str | os.PathLike) -> None:
        self.image_path = Path(image_path).expanduser().absolute()
        self._lock = threading.RLock()
        local, cache = self.local_path(self.image_path), self.cache_path(self.image_path)
        if is_shipped(self.image_path):
            self.path = cache
        elif local.exists() and cache.exists():  # saves fell back to the cache once
            self.path = cache if last_saved(cache) > last_saved(local) else local
        elif local.exists() or (
            not cache.exists() and os.access(self.image_path.parent, os.W_OK | os.X_OK)
        ):
            self.path = local
        else:
            self.path = cache

    # ----------------------------------------------------------------- locating

    @staticmethod
    def local_path(image_path: str | os.PathLike) -> Path:
        """Store path beside the image: ``<folder>/<stem>.dlcb.zarr``.

        Parameters
        ----------
        image_path : str or path-like
            The image.

        Returns
        -------
        pathlib.Path
            Where the store lives when the image folder is writable.
        """
        p = Path(image_path).expanduser().absolute()
        return p.parent / f"{image_stem(p)}{STORE_SUFFIX}"

    @staticmethod
    def cache_path(image_path: str | os.PathLike) -> Path:
        """Fallback store path in the user cache, keyed by the image's absolute path.

        Parameters
        ----------
        image_path : str or path-like
            The image.

        Returns
        -------
        pathlib.Path
            ``<cache>/annotations/<stem>-<sha256 of the path, 16 hex>.dlcb.zarr``.
        """
        p = Path(image_path).expanduser().absolute()
        key = hashlib.sha256(os.fsencode(p)).hexdigest()[:16]
        return user_cache_dir() / "annotations" / f"{image_stem(p)}-{key}{STORE_SUFFIX}"

    @classmethod
    def find(cls, image_path: str | os.PathLike) -> AnnotationStore | None:
        """The store of an image if annotations were saved for it, else None.

        Parameters
        ----------
        image_path : str or path-like
            The image.

        Returns
        -------
        AnnotationStore or None
            None when no store exists (nothing is created).
        """
        store = cls(image_path)
        return store if store.exists else None

    @classmethod
    def open_store(cls, store_path: str | os.PathLike) -> AnnotationStore:
        """Open a ``.dlcb.zarr`` folder directly (e.g. one dropped on the viewer).

        Parameters
        ----------
        store_path : str or path-like
            An existing annotation store.

        Returns
        -------
        AnnotationStore
            Bound to ``store_path``; its image is recorded in the store attributes.

        Raises
        ------
        DlcbError
            ``store_path`` is not an annotation store.
        """
        sp = Path(store_path).expanduser().absolute()
        meta = sp / "zarr.json"
        try:
            attrs = json.loads(meta.read_text())["attributes"]["napari_dlcb"]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise DlcbError(f"cannot read '{sp.name}': not a napari-dlcb annotation store") from exc
        image = sp.parent / str(attrs.get("image", image_stem(sp)))
        store = cls.__new__(cls)
        store.image_path = image
        store._lock = threading.RLock()
        store.path = sp
        return store

    @property
    def exists(self) -> bool:
        """Whether the store folder exists (something was saved once)."""
        return (self.path / "zarr.json").is_file()

    # ----------------------------------------------------------------- API

    def save(self, name: str, array: Any, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Save a snapshot of one annotation layer, atomically.

        Parameters
        ----------
        name : str
            Layer name (any string; it is stored verbatim).
        array : array-like
            Integer or boolean labels (a copy is taken immediately).
        metadata : mapping, optional
            JSON-serialisable layer metadata. Recognised keys: ``label_kind``
            (one of :data:`LABEL_KINDS`), ``scale`` and ``translate`` (sequences
            of float). ``saved_at`` (UTC, ISO 8601) is added.

        Raises
        ------
        DlcbError
            Empty name, non-integer data, unknown ``label_kind``, metadata that
            is not JSON-serialisable, or a store that cannot be written.
        """
        if not isinstance(name, str) or not name:
            raise DlcbError("an annotation layer needs a non-empty name")
        data = np.array(array.compute() if hasattr(array, "compute") else array, copy=True)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        if data.dtype.kind not in "iu" or data.ndim < 1 or data.size == 0:
            raise DlcbError(
                f"cannot save annotation '{name}': needs non-empty integer labels, "
                f"got {data.dtype} {data.shape}"
            )
        md = clean_metadata(name, metadata)
        md["saved_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            try:
                self._save(name, data, md)
                return
            except OSError as exc:
                cache = self.cache_path(self.image_path)
                if exc.errno not in _NOT_WRITABLE or self.path == cache:
                    raise DlcbError(
                        f"cannot save annotation '{name}' to '{self.path}': {exc}"
                    ) from exc
            self._move_to_cache(cache)
            try:
                self._save(name, data, md)
            except OSError as exc:
                raise DlcbError(f"cannot save annotation '{name}' to '{self.path}': {exc}") from exc

    def _move_to_cache(self, cache: Path) -> None:
        """Saves go to the user cache from now on, starting from what the store holds."""
        if self.exists and not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex[:8]}")
            shutil.copytree(self.path, tmp, ignore=shutil.ignore_patterns(_LOCK, ".CURRENT.*"))
            os.replace(tmp, cache)
            message = (
                f"{self.path.parent} is read-only: annotations are now saved to {cache} "
                "(napari-dlcb opens them from there)"
            )
            warnings.warn(message, AnnotationStoreWarning, stacklevel=3)
            LOGGER.warning(message)
        else:
            LOGGER.info("%s is not writable; saving annotations to %s", self.path.parent, cache)
        self.path = cache

    def load(self, name: str) -> np.ndarray:
        """Load the last completely saved version of a layer.

        Parameters
        ----------
        name : str
            Layer name.

        Returns
        -------
        numpy.ndarray
            The labels, with the dtype they were saved with.

        Raises
        ------
        DlcbError
            No layer of that name.
        """
        return self._read(name)[0]

    def metadata(self, name: str) -> dict[str, Any]:
        """Metadata saved with a layer (``label_kind``, ``scale``, ``saved_at`` ...).

        Parameters
        ----------
        name : str
            Layer name.

        Returns
        -------
        dict
            The metadata of the current version.
        """
        return self._read(name, data=False)[1]

    def names(self) -> list[str]:
        """Names of the saved layers, oldest first.

        Returns
        -------
        list of str
            Layer names as given to :meth:`save`.
        """
        layers = self.path / "layers"
        if not layers.is_dir():
            return []
        found = []
        for d in layers.iterdir():
            ptr = read_pointer(d)
            if ptr is not None and (d / ptr["version"]).is_dir():
                found.append((ptr.get("created", 0.0), ptr["name"]))
        return [n for _, n in sorted(found)]

    def load_all(self) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """Every saved layer.

        Returns
        -------
        dict
            ``{name: (array, metadata)}`` in :meth:`names` order.
        """
        out = {}
        for name in self.names():
            try:
                out[name] = self._read(name)
            except DlcbError:  # deleted meanwhile
                continue
        return out

    def delete(self, name: str) -> None:
        """Remove a layer from the store (no error if it is absent).

        Parameters
        ----------
        name : str
            Layer name.
        """
        with self._lock:
            d = self._layer_dir(name)
            if not d.is_dir():
                return
            with lock_file(d / _LOCK, what=f"annotation '{name}'", wait=LOCK_WAIT):
                # removing the pointer first makes the deletion atomic
                (d / CURRENT).unlink(missing_ok=True)
                for child in d.iterdir():
                    if child.name != _LOCK:
                        remove_path(child)
            shutil.rmtree(d, ignore_errors=True)

    def __repr__(self) -> str:
        return f"AnnotationStore({str(self.path)!r}, layers={self.names()!r})"

    # ----------------------------------------------------------------- internals

    def _layer_dir(self, name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "layer"
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]  # case-insensitive FS safe
        return self.path / "layers" / f"{slug}-{digest}"

    def _ensure_root(self) -> None:
        import zarr

        if self.exists:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        zarr.open_group(
            self.path,
            mode="a",
            zarr_format=3,
            attributes={
                "napari_dlcb": {
                    "format": _FORMAT,
                    "image": self.image_path.name,
                    "image_path": str(self.image_path),
                }
            },
        )

    def _save(self, name: str, data: np.ndarray, md: dict[str, Any]) -> None:
        self._ensure_root()
        layer = self._layer_dir(name)
        layer.mkdir(parents=True, exist_ok=True)
        with lock_file(
            layer / _LOCK, what=f"annotation '{name}'", wait=LOCK_WAIT
        ):  # another process's save of this layer waits
            self._save_locked(layer, name, data, md)

    def _save_locked(self, layer: Path, name: str, data: np.ndarray, md: dict[str, Any]) -> None:
        import zarr

        old = read_pointer(layer)
        version = f"v{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
        vdir = layer / version
        chunks = tuple(min(n, _CHUNK) for n in data.shape)
        z = zarr.create_array(
            vdir,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            fill_value=0,
            zarr_format=3,
            attributes={"name": name, "metadata": md},
            config={"write_empty_chunks": False},
        )
        z[...] = data
        fsync_tree(vdir)
        pointer = {
            "name": name,
            "version": version,
            "created": old.get("created", time.time()) if old else time.time(),
        }
        tmp = layer / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(pointer, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, layer / CURRENT)  # the commit point
        fsync_dir(layer)
        for child in layer.iterdir():  # old versions and leftovers of killed saves
            if child.name not in (CURRENT, version, _LOCK):
                remove_path(child)

    def _read(self, name: str, *, data: bool = True) -> tuple[Any, dict[str, Any]]:
        import zarr

        layer = self._layer_dir(name)
        attempts = 20
        for attempt in range(attempts):  # a concurrent save may replace the version we read
            ptr = read_pointer(layer)
            if ptr is None or ptr.get("name") != name:
                break
            try:
                z = zarr.open_array(layer / ptr["version"], mode="r", zarr_format=3)
                md = dict(z.attrs.get("metadata", {}))
                out = z[...] if data else None
            except (FileNotFoundError, KeyError, ValueError) as exc:
                if attempt == attempts - 1:
                    raise DlcbError(
                        f"annotation '{name}' in '{self.path.name}' is unreadable"
                    ) from exc
                time.sleep(0.01 * (attempt + 1))
                continue
            # zarr reads a chunk deleted under it as zeros: keep only a read that the
            # pointer still vouches for (a save replaces CURRENT before it deletes)
            after = read_pointer(layer)
            if after is not None and after.get("version") == ptr["version"]:
                return out, md
        raise DlcbError(f"no annotation layer '{name}' in '{self.path.name}'")
