"""Crash-safe writes: build beside the destination, then rename into place.

A file or folder written here is never seen half-written at its destination:
it is built under a temporary sibling name and moved onto the destination with
``os.replace`` (atomic on one file system) only when complete. Used by the
OME-Zarr writer, the annotation store and the saved-model format.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.paths import is_zarr_path

__all__ = ["PendingDir", "atomic_write", "fsync_dir", "fsync_tree"]


class PendingDir:
    """A folder built at a temporary sibling of ``dest``, renamed onto it when complete.

    Parameters
    ----------
    dest : str or path-like
        The final folder.
    overwrite : bool
        Replace an existing ``dest`` on :meth:`commit` (else refuse it now).
    zarr_only : bool
        Replace only a Zarr store, never another folder or a file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> pending = PendingDir(pathlib.Path(tempfile.mkdtemp()) / "out.zarr")
    >>> _ = (pending.path / "sub").mkdir(parents=True)
    >>> pending.commit().name, pending.path.exists()
    ('out.zarr', False)
    """

    def __init__(
        self, dest: str | os.PathLike, *, overwrite: bool = True, zarr_only: bool = True
    ) -> None:
        dest = Path(dest)
        if dest.exists():
            if not overwrite:
                raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
            if zarr_only and not (dest.is_dir() and is_zarr_path(dest)):
                kind = "folder" if dest.is_dir() else "file"
                raise DlcbError(
                    f"refusing to overwrite '{dest.name}': it is a {kind}, not a Zarr store"
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._token = uuid.uuid4().hex[:8]
        self.dest = dest
        self.path = dest.with_name(f".{dest.name}.tmp-{self._token}")

    def commit(self) -> Path:
        """Move the finished folder onto ``dest`` (replacing what was there); return ``dest``."""
        if self.dest.exists() or self.dest.is_symlink():
            old = self.dest.with_name(f".{self.dest.name}.old-{self._token}")
            os.replace(self.dest, old)
            os.replace(self.path, self.dest)
            _remove(old)
        else:
            os.replace(self.path, self.dest)
        return self.dest

    def discard(self) -> None:
        """Delete the unfinished folder."""
        _remove(self.path)

    def __enter__(self) -> PendingDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write(file: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a file via a temporary file in the same folder, then rename it over ``file``.

    The result gets the permissions a plain ``open()`` gives under the current
    umask (some writers, e.g. safetensors, create owner-only files), and a
    crash never leaves a half-written ``file``.

    Parameters
    ----------
    file : str or path-like
        The destination.
    write : callable
        ``write(tmp)`` writes the content to the temporary path ``tmp``.

    Returns
    -------
    pathlib.Path
        ``file``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "a.txt", lambda t: t.write_text("hi"))
    >>> f.read_text()
    'hi'
    """
    file = Path(file)
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb"):
            pass
        mode = stat.S_IMODE(tmp.stat().st_mode)
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, file)
    finally:
        if tmp.exists():
            tmp.unlink()
    return file


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk (power-loss safety)."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op on Windows."""
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
