"""The ``napari-dlcb`` command.

``napari-dlcb`` alone opens napari with the plugin docked on the sample
session. Sub-commands train and apply models headlessly; each task registers
its own verbs from :mod:`napari_dlcb.commands`. Bad input ends with one line on
stderr and exit status 2. Importing this module is cheap (no torch, no Qt).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from napari_dlcb import __version__
from napari_dlcb.errors import DlcbError

__all__ = ["main", "build_parser"]

#: modules under ``napari_dlcb.commands`` that add sub-commands
COMMAND_MODULES = ("segmentation", "sequence", "classification", "tune", "export")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every task's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="napari-dlcb",
        description="Deep learning for computational biology in napari. Without a command, "
        "opens napari with the plugin on the sample session. --trust-model (anywhere on the "
        "line) agrees to run code-carrying model files (TorchScript) that this installation "
        "did not write.",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--trust-model" in argv:  # consent to run code-carrying model files, anywhere on the line
        from napari_dlcb.models.trust import trust_this_session

        argv = [a for a in argv if a != "--trust-model"]
        trust_this_session(True)
    if not argv:
        argv = ["gui"]
    args = parser.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # started by torchrun
        from napari_dlcb.training.distributed import init_from_env

        init_from_env(getattr(args, "device", "auto"))
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DlcbError as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        print("napari-dlcb: interrupted", file=sys.stderr)
        return 130
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
