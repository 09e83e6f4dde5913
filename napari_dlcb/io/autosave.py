"""Save annotation layers shortly after the user stops drawing (no Qt).

:class:`DebouncedSaver` batches a layer's edits and saves a snapshot to an
:class:`~napari_dlcb.io.project.AnnotationStore` from one background thread;
whatever is still pending when the interpreter exits is flushed then.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.project import AnnotationStore

__all__ = ["DebouncedSaver"]

LOGGER = logging.getLogger(__name__)


class DebouncedSaver:
    """Save annotation layers shortly after the user stops drawing.

    Each :meth:`mark_dirty` (re)starts a ``delay``-second countdown for that layer;
    when it runs out, one background thread takes a snapshot via ``get_array()``
    and saves it to the store. While the user keeps drawing without pause, a save
    still happens at least every ``max_delay`` seconds. No Qt is involved; the
    callbacks run on the saver's thread.

    Parameters
    ----------
    store : AnnotationStore
        Where to save.
    delay : float
        Quiet time in seconds before a save.
    max_delay : float, optional
        Longest time a change stays unsaved while edits keep coming (None = no
        limit; raised to ``delay`` if smaller).
    on_saved : callable, optional
        ``on_saved(name)`` after each successful save.
    on_error : callable, optional
        ``on_error(name, exception)`` when a background save fails; default logs
        a warning. The change stays unsaved until the next mark or flush.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> store = AnnotationStore(pathlib.Path(tempfile.mkdtemp()) / "img.tif")
    >>> labels = np.zeros((4, 4), np.uint8)
    >>> with DebouncedSaver(store, delay=0.5) as saver:
    ...     labels[1, 1] = 2
    ...     saver.mark_dirty("scribbles", lambda: labels, {"label_kind": "scribbles"})
    >>> int(store.load("scribbles")[1, 1])  # closing flushed it
    2
    """

    def __init__(
        self,
        store: AnnotationStore,
        *,
        delay: float = 1.0,
        max_delay: float | None = 10.0,
        on_saved: Callable[[str], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        if delay < 0:
            raise DlcbError(f"autosave delay must be >= 0 s, not {delay}")
        self.store = store
        self.delay = float(delay)
        self.max_delay = None if max_delay is None else max(float(max_delay), self.delay)
        self.on_saved = on_saved
        self.on_error = on_error
        self.saves = 0
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        # name -> [get_array, metadata, due, first_marked]
        self._pending: dict[str, list[Any]] = {}
        self._in_flight = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        _register_exit_flush()
        _LIVE_SAVERS.add(self)

    @property
    def pending(self) -> list[str]:
        """Names of layers with unsaved changes."""
        with self._cond:
            return list(self._pending)

    def mark_dirty(
        self,
        name: str,
        get_array: Callable[[], Any] | Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that a layer changed; it is saved ``delay`` s after the last mark.

        Parameters
        ----------
        name : str
            Layer name.
        get_array : callable or array
            Returns the current labels when called (or the array itself, read at
            save time).
        metadata : mapping, optional
            Passed to :meth:`AnnotationStore.save`.

        Raises
        ------
        DlcbError
            The saver is closed.
        """
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise DlcbError("autosave is closed")
            first = self._pending[name][3] if name in self._pending else now
            self._pending[name] = [get_array, dict(metadata or {}), now + self.delay, first]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="napari-dlcb-autosave", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, name: str | None = None) -> None:
        """Save pending changes now and wait for saves already running.

        Parameters
        ----------
        name : str, optional
            Only this layer (default: all).

        Raises
        ------
        Exception
            The first error of the saves done by this call.
        """
        with self._cond:
            names = [n for n in self._pending if name is None or n == name]
            jobs = [(n, *self._pending.pop(n)[:2]) for n in names]
            self._in_flight += 1
        try:
            errors = self._do(jobs, raise_errors=True)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()
                # from a callback on the saver's own thread, waiting would deadlock
                if threading.current_thread() is not self._thread:
                    while self._in_flight > 0:
                        self._cond.wait()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop accepting marks, save what is pending and stop the thread (idempotent)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        try:
            self.flush()
        finally:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
            _LIVE_SAVERS.discard(self)

    def __enter__(self) -> DebouncedSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _due(self, entry: list[Any]) -> float:
        due = entry[2]
        if self.max_delay is not None:
            due = min(due, entry[3] + self.max_delay)
        return due

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed or not self._pending:
                        # idle threads exit; the next mark starts a new one
                        self._thread = None
                        return
                    now = time.monotonic()
                    dues = {n: self._due(e) for n, e in self._pending.items()}
                    ready = [n for n, d in dues.items() if d <= now]
                    if ready:
                        break
                    self._cond.wait(min(dues.values()) - now)
                jobs = [(n, *self._pending.pop(n)[:2]) for n in ready]
                self._in_flight += 1
            try:
                self._do(jobs, raise_errors=False)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _do(
        self, jobs: list[tuple[str, Any, dict[str, Any]]], *, raise_errors: bool
    ) -> list[BaseException]:
        errors: list[BaseException] = []
        # one save at a time: the later snapshot is always the one left on disk
        with self._save_lock:
            for name, get_array, metadata in jobs:
                try:
                    array = get_array() if callable(get_array) else get_array
                    self.store.save(name, array, metadata=metadata)
                except Exception as exc:  # noqa: BLE001 - reported, never kills the thread
                    errors.append(exc)
                    if not raise_errors:
                        self._report(name, exc)
                    continue
                self.saves += 1
                if self.on_saved is not None:
                    try:
                        self.on_saved(name)
                    except Exception as exc:  # noqa: BLE001 - a bad callback must not stop autosave
                        LOGGER.warning("autosave on_saved callback failed: %s", exc)
        return errors

    def _report(self, name: str, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(name, exc)
        else:
            LOGGER.warning("autosave of '%s' to %s failed: %s", name, self.store.path, exc)


_LIVE_SAVERS: weakref.WeakSet[DebouncedSaver] = weakref.WeakSet()
_EXIT_HOOK = []


def _register_exit_flush() -> None:
    """Save pending changes when the interpreter exits without ``close()``.

    zarr writes through a thread pool, and ``concurrent.futures`` refuses new
    work once its own exit hook (a *threading* exit hook, run before ``atexit``)
    has run. So the flush is registered as a threading exit hook too, after zarr
    and the pool are imported: those hooks run last-in first-out, so ours runs
    while zarr can still write. ``atexit`` is the fallback where that hook
    does not exist.
    """
    if _EXIT_HOOK:
        return
    import concurrent.futures.thread  # noqa: F401 - its exit hook must come first

    import zarr  # noqa: F401

    register = getattr(threading, "_register_atexit", atexit.register)
    register(_flush_at_exit)
    _EXIT_HOOK.append(True)


def _flush_at_exit() -> None:
    for saver in list(_LIVE_SAVERS):
        try:
            saver.close()
        except Exception as exc:  # noqa: BLE001 - exiting; log and carry on
            LOGGER.warning("autosave at exit failed: %s", exc)
