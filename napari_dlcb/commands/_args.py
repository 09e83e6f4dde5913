"""argparse types that check a number's range at the edge, with one-line messages.

Options that a task config covers are checked by the config
(:meth:`~napari_dlcb.tasks.base.TaskConfig.validate`, the same for the CLI and
the docks); these types cover the rest (tile sides, block sizes...). argparse
prints ``argument --tile: must be a whole number from 32 to 16384, got '0'``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["add_crop_training_options", "add_device", "device_name", "int_in", "positive_float"]


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]``.

    Examples
    --------
    >>> int_in(1, 4)("3")
    3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, got {text!r}"
            )
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(high: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite number > 0 (and <= ``high``).

    Examples
    --------
    >>> positive_float()("0.5")
    0.5
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= high):
            upper = f" and at most {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(f"must be a finite number > 0{upper}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def device_name(text: str) -> str:
    """An argparse type: a device name (auto, cpu, cuda, cuda:N, mps), spelling checked.

    Whether this machine has the device is checked later, when the command runs,
    by :func:`napari_dlcb.device.resolve_device` (one-line error, exit 2).

    Examples
    --------
    >>> device_name("cuda:1")
    'cuda:1'
    """
    from napari_dlcb.device import DEVICE_CHOICES

    name = text.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from auto, cpu, cuda, cuda:N, mps)"
        )  # argparse's own wording for a bad choice
    return name


def add_device(parser: argparse.ArgumentParser) -> None:
    """Add the one ``--device`` option every verb shares (default ``auto``)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=device_name,
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="where to run: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps",
    )


def add_crop_training_options(parser: argparse.ArgumentParser, *, cpu_help: str) -> None:
    """Add the budget, augmentation, device and seed options of the crop-classifier verbs.

    ``--early-stopping``, ``--max-minutes``, ``--max-cpu-minutes``, ``--no-augment``,
    ``--device`` and ``--seed``, in this order (``train classification`` and
    ``pretrain classification``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's parser.
    cpu_help : str
        The help of ``--max-cpu-minutes``.
    """
    parser.add_argument("--early-stopping", type=int, default=None, help="patience in epochs")
    parser.add_argument(
        "--max-minutes", type=positive_float(), default=None, help="wall-clock budget"
    )
    parser.add_argument("--max-cpu-minutes", type=positive_float(), default=None, help=cpu_help)
    parser.add_argument("--no-augment", action="store_true")
    add_device(parser)
    parser.add_argument("--seed", type=int, default=0)
