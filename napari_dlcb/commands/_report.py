"""One way for every ``napari-dlcb train ...`` command to print training events."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["say", "describe_event"]


def say(msg: str, *, stream: TextIO | None = None) -> None:
    """Print one progress line and flush (stdout unless ``stream`` is given)."""
    from napari_dlcb.device import data_parallel_rank

    if data_parallel_rank()[0] > 0:  # under torchrun only rank 0 reports
        return
    out = sys.stdout if stream is None else stream
    out.write(msg + "\n")
    out.flush()


def describe_event(
    ev: Any, *, epochs: int, t0: float, rate_unit: str | None = None, cpu0: float | None = None
) -> str | None:
    """The line to print for an ``EpochEnd``, ``Warning`` or ``Finished`` event.

    Parameters
    ----------
    ev : TrainEvent
        An event from :func:`napari_dlcb.training.engine.fit`.
    epochs : int
        Epochs requested (for ``epoch i/N``).
    t0 : float
        ``time.perf_counter()`` when training started.
    rate_unit : str, optional
        Name of a sample ("patches", "images") to print the throughput.
    cpu0 : float, optional
        ``time.process_time()`` at the start, to also report CPU seconds.

    Returns
    -------
    str or None
        None for events that are not reported line by line.
    """
    from napari_dlcb.training.events import EpochEnd, Finished, Warning

    if isinstance(ev, EpochEnd):
        mets = "".join(f" {k} {v:.4f}" for k, v in ev.metrics.items())
        rate = f" ({ev.samples_per_s:.1f} {rate_unit}/s)" if rate_unit else ""
        return (
            f"epoch {ev.epoch + 1}/{epochs} train_loss {ev.train_loss:.4f} "
            f"val_loss {ev.val_loss:.4f}{mets} lr {ev.lr:.2g} {ev.seconds:.1f}s{rate}"
            f"{' *' if ev.is_best else ''}"
        )
    if isinstance(ev, Warning):
        return f"warning: {ev.message}"
    if isinstance(ev, Finished):
        cpu = f" ({time.process_time() - cpu0:.0f} CPU-s)" if cpu0 is not None else ""
        return (
            f"finished ({ev.reason}) after {ev.epochs_run} epochs in "
            f"{time.perf_counter() - t0:.0f}s{cpu}; best epoch {ev.best_epoch + 1}, "
            f"best score {ev.best_score:.4f}" + (f"; the model holds {ev.kept}" if ev.kept else "")
        )
    return None
