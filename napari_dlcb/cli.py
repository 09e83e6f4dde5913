"""The ``napari-dlcb`` command.

``napari-dlcb`` alone opens napari with the plugin docked on the sample
session. Sub-commands train and apply models headlessly; each task registers
its own verbs from :mod:`napari_dlcb.commands`. Bad input (an option out of
range, an unreadable file, an output that would overwrite something) ends
with one line on stderr and exit status 2, never a traceback. Two options work
anywhere on the line: ``--trust-model`` (consent to run code-carrying model
files) and ``--timeout SECONDS`` (end the run cleanly, status 2, after that
long, leaving no temporary files behind). Importing this module is cheap (no
torch, no Qt).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from napari_dlcb import __version__
from napari_dlcb.errors import DlcbError

__all__ = ["main", "build_parser"]

#: modules under ``napari_dlcb.commands`` that add sub-commands
COMMAND_MODULES = (
    "segmentation",
    "sequence",
    "sequence_interpret",
    "classification",
    "tune",
    "export",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``napari-dlcb: error: <command>: <message>`` and exit with status 2."""
        where = self.prog.removeprefix("napari-dlcb").strip()
        hint = f" (napari-dlcb {where} --help)" if where else " (napari-dlcb --help)"
        _fail(f"{where + ': ' if where else ''}{message}{hint}", 2)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every task's sub-commands."""
    parser = _Parser(
        prog="napari-dlcb",
        description="Deep learning for computational biology in napari. Without a command, "
        "opens napari with the plugin on the sample session. Anywhere on the line: "
        "--trust-model agrees to run code-carrying model files (TorchScript) that this "
        "installation did not write; --timeout SECONDS ends the run cleanly after that long "
        "(exit status 2, no temporary files left behind).",
    )
    parser.add_argument("--version", action="version", version=f"napari-dlcb {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = top.add_parser("train", help="train or fine-tune a model").add_subparsers(
        dest="task", metavar="TASK", required=True
    )
    predict = top.add_parser("predict", help="apply a saved model").add_subparsers(
        dest="task", metavar="TASK", required=True
    )
    gui = top.add_parser("gui", help="open napari with the plugin (the default)")
    gui.add_argument("--no-sample", action="store_true", help="start without the sample session")
    gui.add_argument("paths", nargs="*", help="files to open")
    gui.set_defaults(func=_run_gui)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"napari_dlcb.commands.{name}")
        except ModuleNotFoundError as err:  # a task that is not installed in this build
            if err.name != f"napari_dlcb.commands.{name}":
                raise
            continue
        mod.register(train, predict, top)
    return parser


def _run_gui(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-dlcb")
    if args.paths:
        viewer.open(args.paths, plugin="napari-dlcb")
    elif not args.no_sample:
        viewer.open_sample("napari-dlcb", "session")
    viewer.window.add_plugin_dock_widget("napari-dlcb", "Segmentation")
    napari.run()
    return 0


def _pop_timeout(argv: list[str]) -> tuple[list[str], float | None]:
    """Take ``--timeout SECONDS`` / ``--timeout=SECONDS`` from anywhere on the line."""
    rest: list[str] = []
    value: str | None = None
    it = iter(argv)
    for a in it:
        if a == "--timeout":
            value = next(it, None)
            if value is None:
                raise DlcbError("--timeout needs a number of seconds")
        elif a.startswith("--timeout="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
    if value is None:
        return rest, None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= 7 * 24 * 3600):
        raise DlcbError(f"--timeout must be a number of seconds in (0, 604800], got {value!r}")
    return rest, seconds


class _Watchdog:
    """Ends the process cleanly at a deadline, whatever the main thread is doing.

    At the deadline it deletes the run's temporary files and folders (every
    output is written beside its destination and renamed when complete, see
    :mod:`napari_dlcb.io.atomic`), prints one line and leaves with status 2
    through ``os._exit``: a model stuck in a loop cannot hold it up.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="napari-dlcb-timeout", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._done.wait(self.seconds):
            return
        from napari_dlcb.io.atomic import discard_pending

        try:
            discard_pending()
        finally:
            _fail(
                f"timed out after {self.seconds:g} s (--timeout); the run was stopped and "
                "nothing half-written was left",
                2,
            )
            sys.stderr.flush()
            os._exit(2)

    def cancel(self) -> None:
        self._done.set()


class _Terminated(Exception):
    """SIGTERM: unwind (temporary outputs are removed on the way) and exit."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--trust-model" in argv:  # consent to run code-carrying model files, anywhere on the line
        from napari_dlcb.models.trust import trust_this_session

        argv = [a for a in argv if a != "--trust-model"]
        trust_this_session(True)
    try:
        argv, timeout = _pop_timeout(argv)
    except DlcbError as err:
        return _fail(str(err), 2)
    if not argv:
        argv = ["gui"]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, already printed)
        return int(exc.code or 0) if isinstance(exc.code, (int, type(None))) else 2
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # started by torchrun
        from napari_dlcb.training.distributed import init_from_env

        init_from_env(getattr(args, "device", "auto"))
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    watchdog = _Watchdog(timeout) if timeout is not None else None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command; every exception becomes one line and an exit status."""
    try:
        return int(args.func(args) or 0)
    except DlcbError as err:
        return _fail(str(err), 2)
    except (KeyboardInterrupt, _Terminated) as err:
        from napari_dlcb.io.atomic import discard_pending

        discard_pending()
        term = isinstance(err, _Terminated)
        print(f"napari-dlcb: {'terminated' if term else 'interrupted'}", file=sys.stderr)
        return 143 if term else 130
    except MemoryError:
        return _fail("not enough memory for this request (try smaller tiles, batches or images)", 2)
    except OSError as err:  # disk full, permission denied, a file vanished mid-run
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        return _fail(f"{err.strerror or err}{where}", 2)
    except Exception as err:  # noqa: BLE001 - a bug: one line here, the traceback on request
        if os.environ.get("NAPARI_DLCB_DEBUG"):
            raise
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return _fail(
            f"unexpected {type(err).__name__}{': ' + detail if detail else ''} "
            "(a bug: please report it; NAPARI_DLCB_DEBUG=1 shows the traceback)",
            1,
        )


def _fail(message: str, status: int) -> int:
    """Print one line on stderr and return the exit status."""
    line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"napari-dlcb: error: {line}", file=sys.stderr)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
