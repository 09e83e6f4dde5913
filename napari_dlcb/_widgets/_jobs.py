"""One job runner for every dock: worker thread, activity-dock progress, Stop, one error path.

Every long action of a dock (train, predict, saliency, embedding, mutation map,
motif scan, model loading) is a *job*: a core function or generator that runs
in a napari worker thread. :class:`JobRunner` is the only code that starts
them, so every job behaves the same way:

- **Off the GUI thread.** The click handler only builds arguments and calls
  :meth:`JobRunner.run`; it returns at once.
- **Progress in napari's activity dock** (``napari.utils.progress``) and in
  the dock's own status line, from :class:`~napari_dlcb.training.events.JobProgress`,
  ``Progress`` and ``EpochEnd`` events, or any object with ``done``/``total``.
- **Stop always works.** :meth:`JobRunner.cancel` sets the job's
  ``threading.Event`` (core generators that accept ``stop=`` end cleanly at
  their next step and keep what they learnt) and then closes the generator in
  the worker thread at its next ``yield``, so its ``finally`` blocks run there.
- **One error path.** A :class:`~napari_dlcb.errors.DlcbError` (a user error)
  becomes a one-line notification plus the same line in the dock's status, no
  console traceback; any other exception is logged with its traceback and
  shown the same way. The dock is handed back idle (``on_done``).

A job function gets the stop event as keyword ``stop`` if its signature has
one. Results are delivered on the main thread through ``on_yield`` (each
yielded item) and ``on_return`` (the function's return value).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qtpy.QtCore import QObject

from napari_dlcb.device import leave_a_core_for_the_viewer

from ._common import notify_error

__all__ = ["Job", "JobRunner", "progress_of"]

logger = logging.getLogger(__name__)


#: seconds between redraws of a job's activity-dock progress bar
PBAR_INTERVAL = 0.5


def set_progress(bar: Any, value: int) -> None:
    """Set a ``QProgressBar``'s value without its immediate repaint.

    ``QProgressBar.setValue`` repaints synchronously whenever the shown percentage
    changes; with a GL canvas in the window each repaint composites the whole
    window at once (~0.1-0.2 s in software OpenGL). With updates off meanwhile,
    the change joins the next ordinary, coalesced repaint instead.
    """
    bar.setUpdatesEnabled(False)
    try:
        bar.setValue(int(value))
    finally:
        bar.setUpdatesEnabled(True)  # schedules the ordinary repaint


def progress_of(item: Any) -> tuple[int, int | None, str] | None:
    """``(done, total, text)`` of a yielded event, or None if it carries no progress."""
    name = type(item).__name__
    if name == "Progress" and hasattr(item, "steps"):
        return int(item.step) + 1, int(item.steps), f"batch {item.step + 1}/{item.steps}"
    if hasattr(item, "done") and hasattr(item, "total"):
        total = item.total
        return (
            int(item.done),
            (None if total is None else int(total)),
            str(getattr(item, "message", "") or ""),
        )
    return None


def _accepts_stop(func: Callable[..., Any]) -> bool:
    """Whether ``func`` names a ``stop`` parameter.

    A ``**kwargs`` catch-all does not count: it may hand everything on to
    something that refuses ``stop``.
    """
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "stop" in params


@dataclass
class Job:
    """A running job: its worker, stop event, activity-dock progress bar and outcome."""

    name: str
    kind: str
    worker: Any
    stop: threading.Event
    started: float = field(default_factory=time.perf_counter)
    pbar: Any = None
    #: when the activity-dock bar was last redrawn (it is redrawn at most twice a second)
    pbar_drawn: float = 0.0
    cancelled: bool = False
    #: the function takes ``stop=`` and ends cleanly when stopped (its result is kept)
    takes_stop: bool = False
    error: str | None = None
    finished: bool = False
    #: starts the same job again (after the user agreed to run a model's code)
    restart: Callable[[], Any] | None = None
    #: the job stopped on an untrusted model, the user agreed to run it: it is
    #: started again when it finishes (it has no error message, yet it did not succeed)
    retry: bool = False

    @property
    def failed(self) -> bool:
        """Whether the job ended without a usable result (an error, or a trust retry)."""
        return self.error is not None or self.retry

    @property
    def seconds(self) -> float:
        """Seconds since the job started."""
        return time.perf_counter() - self.started


class JobRunner(QObject):
    """Runs a dock's jobs (one per ``kind`` at a time) in napari worker threads.

    Parameters
    ----------
    set_status : callable
        ``set_status(text)`` writes the dock's status line (main thread).
    on_busy : callable, optional
        ``on_busy(busy)`` whenever the first job starts or the last one ends,
        e.g. to enable the dock's Stop button.
    parent : QObject, optional
        Qt parent.
    """

    def __init__(
        self,
        set_status: Callable[[str], None],
        *,
        on_busy: Callable[[bool], None] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._set_status = set_status
        self._on_busy = on_busy
        self.jobs: dict[str, Job] = {}
        self.last_error: str | None = None

    # ------------------------------------------------------------------ queries
    def busy(self, kind: str | None = None) -> bool:
        """Whether a job (of ``kind``) is running."""
        return bool(self.jobs) if kind is None else kind in self.jobs

    def job(self, kind: str) -> Job | None:
        """The running job of ``kind``, if any."""
        return self.jobs.get(kind)

    def worker(self, kind: str) -> Any:
        """The worker of the running job of ``kind``, or None."""
        job = self.jobs.get(kind)
        return None if job is None else job.worker

    # ------------------------------------------------------------------ start
    def run(
        self,
        name: str,
        func: Callable[..., Any],
        *args: Any,
        kind: str = "main",
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_done: Callable[[Job], None] | None = None,
        total: int | None = None,
        replace: bool = False,
        status: str | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """Start ``func(*args, **kwargs)`` in a worker thread.

        Parameters
        ----------
        name : str
            What the user sees in the activity dock and status line ("Training").
        func : callable
            A core function or generator function. It gets ``stop=`` (a
            ``threading.Event``) if its signature accepts it.
        kind : str
            Jobs of the same kind never run twice at once.
        on_yield, on_return : callable, optional
            Main-thread callbacks for each yielded item / the return value.
        on_done : callable, optional
            Called once, on the main thread, however the job ends (finished,
            cancelled or failed), with the :class:`Job`.
        total : int, optional
            Steps for the progress bar when the items do not say.
        replace : bool
            Cancel a running job of the same kind first (otherwise refuse).
        status : str, optional
            Status line while it runs (default "<name>…").
        **kwargs
            Passed to ``func``.

        Returns
        -------
        Job or None
            None if a job of this kind is running and ``replace`` is False.
        """
        from napari.qt.threading import create_worker

        if kind in self.jobs:
            if not replace:
                return None
            self.cancel(kind)
            self.jobs.pop(kind, None)
        again = {"kind": kind, "on_yield": on_yield, "on_return": on_return, "on_done": on_done}
        again |= {"total": total, "status": status}
        restart_kwargs = dict(kwargs)
        stop = threading.Event()
        if _accepts_stop(func):
            kwargs["stop"] = stop
        body = _job_body(func, args, kwargs, stop)
        worker = create_worker(body, _start_thread=False, _ignore_errors=True)
        job = Job(name=name, kind=kind, worker=worker, stop=stop, takes_stop="stop" in kwargs)
        # in the click: added later, the bar's repaint (~0.15 s) joined the first draw
        # of the job's layers in one longer stall (benchmarks/RESULTS.md)
        job.pbar = self._progress_bar(name, total)
        job.restart = lambda: self.run(name, func, *args, **again, **restart_kwargs)
        worker.yielded.connect(lambda item, j=job: self._yielded(j, item, on_yield))
        worker.returned.connect(lambda value, j=job: self._returned(j, value, on_return))
        worker.errored.connect(lambda err, j=job: self._errored(j, err))
        worker.finished.connect(lambda j=job: self._finished(j, on_done))
        first = not self.jobs
        self.jobs[kind] = job
        self._set_status(status if status is not None else f"{name}…")
        if first and self._on_busy is not None:
            self._on_busy(True)
        worker.start()
        return job

    @staticmethod
    def _progress_bar(name: str, total: int | None) -> Any:
        try:
            from napari.utils import progress
        except ImportError:  # pragma: no cover - napari is a dependency
            return None
        return progress(total=total, desc=name)

    def report(self, err: BaseException | str) -> str:
        """The one error path for what fails outside a job (e.g. checking a dock's fields).

        A one-line notification and the same line in the dock's status; returns the line.
        """
        message = notify_error(err)
        self.last_error = message
        self._set_status(message)
        return message

    # ------------------------------------------------------------------ stop
    def cancel(self, kind: str | None = None) -> bool:
        """Ask the job of ``kind`` (default: all jobs) to stop; True if one was running.

        The job's stop event is set at once; the generator is closed in the
        worker thread at its next yield. Core training generators validate and
        keep what they learnt before they end.
        """
        kinds = list(self.jobs) if kind is None else [kind]
        hit = False
        for k in kinds:
            job = self.jobs.get(k)
            if job is None:
                continue
            job.cancelled = True
            job.stop.set()
            hit = True
        return hit

    def cancel_all_and_wait(self, timeout: float = 10.0) -> None:
        """Stop every job and wait for the threads (a dock being closed)."""
        self.cancel()
        deadline = time.perf_counter() + timeout
        for job in list(self.jobs.values()):
            try:
                job.worker.quit()
                job.worker.await_workers(max(int(1000 * (deadline - time.perf_counter())), 1))
            except (RuntimeError, AttributeError):  # pragma: no cover - already gone
                pass

    # ------------------------------------------------------------------ slots
    def _yielded(self, job: Job, item: Any, on_yield: Callable[[Any], None] | None) -> None:
        prog = progress_of(item)
        if prog is not None and job.pbar is not None:
            done, total, _ = prog
            if total is not None and job.pbar.total != total:
                job.pbar.total = total
            job.pbar.n = min(done, job.pbar.total) if job.pbar.total else done
            now = time.perf_counter()
            # every redraw of a bar repaints the window at once (software OpenGL: ~0.1 s)
            if now - job.pbar_drawn >= PBAR_INTERVAL or done == job.pbar.total:
                job.pbar_drawn = now
                job.pbar.refresh()
        if on_yield is not None and not job.finished:
            self._guard(job, on_yield, item)

    def _returned(self, job: Job, value: Any, on_return: Callable[[Any], None] | None) -> None:
        # a job that takes ``stop=`` ends by itself when stopped: its result is what
        # it kept (e.g. the trained model after Stop), so it is still delivered
        if on_return is not None and (not job.cancelled or job.takes_stop):
            self._guard(job, on_return, value)

    def _guard(self, job: Job, callback: Callable[[Any], None], value: Any) -> None:
        """Run a main-thread callback; an error in it goes down the one error path."""
        try:
            callback(value)
        except Exception as err:  # noqa: BLE001 - shown as one line, logged in full
            self._errored(job, err)

    def _errored(self, job: Job, err: BaseException) -> None:
        if job.failed:
            return
        from napari_dlcb.models.trust import UntrustedModelError, trust

        if isinstance(err, UntrustedModelError) and job.restart is not None:
            if ask_to_trust(err):  # the user agreed: remember the file, run the job again
                trust(err.path, sha256=err.sha256, note=err.what)
                job.retry = True
                self._set_status(f"Trusted {err.path.name}; {job.name} again…")
                return
        message = notify_error(err)
        job.error = message
        self.last_error = message
        self._set_status(f"{job.name} failed: {message}")

    def _finished(self, job: Job, on_done: Callable[[Job], None] | None) -> None:
        if job.finished:
            return
        job.finished = True
        if job.pbar is not None:
            job.pbar.close()
        if self.jobs.get(job.kind) is job:
            del self.jobs[job.kind]
        if not job.failed and job.cancelled:
            self._set_status(f"{job.name} stopped.")
        if on_done is not None:
            try:
                on_done(job)
            except Exception as err:  # noqa: BLE001 - one error path
                self._errored(job, err)
        if job.retry and job.restart is not None:
            job.restart()
        if not self.jobs and self._on_busy is not None:
            self._on_busy(False)


def ask_to_trust(err: Any) -> bool:
    """Ask, in a dialog, whether to run a code-carrying model file (main thread).

    Says plainly what running it means; the answer is remembered by the file's
    sha256, so the same file is not asked about again.
    """
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(
        QMessageBox.Icon.Warning,
        "Run this model's code?",
        f"{err.path.name} is {err.what}: opening it runs code that came with the file, "
        "and that code can read or change files on this computer.\n\n"
        "Run it only if you trust where it came from. napari-dlcb will remember this "
        f"exact file (sha256 {err.sha256[:12]}…).",
    )
    box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    box.setDefaultButton(QMessageBox.StandardButton.No)
    box.button(QMessageBox.StandardButton.Yes).setText("Trust and run")
    box.button(QMessageBox.StandardButton.No).setText("Cancel")
    return box.exec() == QMessageBox.StandardButton.Yes


def _job_body(
    func: Callable[..., Any], args: tuple, kwargs: dict, stop: threading.Event
) -> Callable[[], Any]:
    """A generator function around ``func`` for napari's ``GeneratorWorker``.

    A plain function's return value is delivered as the worker's result. A
    generator (returned by ``func`` or ``func`` itself) is iterated; when the
    job is stopped and the generator does not take ``stop=`` itself, it is
    closed in the worker thread, so its ``finally`` blocks run there.
    """
    takes_stop = "stop" in kwargs

    def body() -> Any:
        leave_a_core_for_the_viewer()  # in the worker: torch is imported here, not in the GUI
        result = func(*args, **kwargs)
        if not inspect.isgenerator(result):
            return result
        try:
            while True:
                try:
                    item = next(result)
                except StopIteration as done:
                    return done.value
                yield item
                if stop.is_set() and not takes_stop:
                    return None
        finally:
            result.close()  # GeneratorExit in the worker thread: the core cleans up here

    return body
