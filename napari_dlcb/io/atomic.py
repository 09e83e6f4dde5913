"""Crash-safe writes: build beside the destination, then rename into place.

A file or folder written here is never seen half-written at its destination:
it is built under a temporary sibling name and moved onto the destination with
``os.replace`` (atomic on one file system) only when complete. Used by the
OME-Zarr writer, the annotation store, the saved-model format and every CLI
verb's output.

Temporary siblings carry the writer's process id (``.<name>.tmp-<pid>-<id>``),
so :func:`sweep_stale` can tell the leftovers of a killed run from the work of
one still running, and every temporary path in use is kept in a registry
(:func:`pending_paths`, :func:`discard_pending`) that the CLI's ``--timeout``
watchdog empties before it ends the process.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.filelock import pid_alive
from napari_dlcb.io.paths import is_zarr_path

__all__ = [
    "PendingDir",
    "atomic_write",
    "discard_pending",
    "fsync_dir",
    "fsync_tree",
    "pending_paths",
    "sweep_stale",
]

_PENDING: set[Path] = set()
_PENDING_LOCK = threading.Lock()
#: ``.<name>.tmp-<pid>-<hex>`` / ``.<name>.old-<pid>-<hex>`` / ``.<name>.<pid>-<hex>.tmp``
_SIBLING = re.compile(
    r"^\.(?P<name>.+)\.(?:(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+|(?P<fpid>\d+)-[0-9a-f]+\.tmp)$"
)


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _register(path: Path) -> None:
    with _PENDING_LOCK:
        _PENDING.add(path)


def _unregister(path: Path) -> None:
    with _PENDING_LOCK:
        _PENDING.discard(path)


def pending_paths() -> list[Path]:
    """Temporary files and folders this process is writing right now (not yet renamed)."""
    with _PENDING_LOCK:
        return sorted(_PENDING)


def discard_pending() -> list[Path]:
    """Delete every temporary file or folder this process is writing; return them.

    Called by the CLI's ``--timeout`` watchdog just before it ends the process,
    so an interrupted run leaves the previous state (or nothing), never a
    temporary sibling. Destinations are not touched.
    """
    with _PENDING_LOCK:
        paths = sorted(_PENDING)
        _PENDING.clear()
    for p in paths:
        _remove(p)
    return paths


def sweep_stale(dest: str | os.PathLike) -> list[Path]:
    """Clear what a killed writer left beside ``dest``; return what was removed or restored.

    Temporary siblings (``.<name>.tmp-<pid>-*``) of processes that no longer
    exist are deleted. A previous version set aside during a replace
    (``.<name>.old-<pid>-*``) is renamed back onto ``dest`` when ``dest`` is
    missing (the writer was killed between its two renames), else deleted.
    Siblings of live processes are left alone.

    Parameters
    ----------
    dest : str or path-like
        A file or folder that this module writes.

    Returns
    -------
    list of pathlib.Path
        The siblings that were removed or restored.
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        return []
    done = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = _SIBLING.match(entry.name)
        if m is None or m["name"] != dest.name:
            continue
        pid = int(m["pid"] or m["fpid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if m["kind"] == "old" and not (dest.exists() or dest.is_symlink()):
                os.replace(entry, dest)
            else:
                _remove(entry)
        except OSError:
            continue
        done.append(entry)
    return done


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
        self._token = _token()
        self.dest = dest
        self.path = dest.with_name(f".{dest.name}.tmp-{self._token}")
        _register(self.path)

    def commit(self) -> Path:
        """Move the finished folder onto ``dest`` (replacing what was there); return ``dest``."""
        if self.dest.exists() or self.dest.is_symlink():
            old = self.dest.with_name(f".{self.dest.name}.old-{self._token}")
            os.replace(self.dest, old)
            os.replace(self.path, self.dest)
            _remove(old)
        else:
            os.replace(self.path, self.dest)
        _unregister(self.path)
        return self.dest

    def discard(self) -> None:
        """Delete the unfinished folder."""
        _remove(self.path)
        _unregister(self.path)

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
    tmp = file.with_name(f".{file.name}.{_token()}.tmp")
    _register(tmp)
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
        _unregister(tmp)
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
