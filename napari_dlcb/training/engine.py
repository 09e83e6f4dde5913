"""The training engine: one generator shared by images, cells and DNA.

``fit`` yields :mod:`~napari_dlcb.training.events` while it trains. Every
``yield`` is a point where the caller may pause (by not pulling), cancel (by
closing the generator or setting ``stop``), or update a GUI.

What the model holds when the run ends
--------------------------------------
Whatever ends the run, the model is left on its original device, in its
original train/eval mode, holding the best weights *that were scored*:

- with validation data, weights are scored on it at the end of every epoch,
  and also when the run is stopped part-way through an epoch (so a Stop
  before the first epoch ends keeps what was learnt if it validates better);
  with ``validate_start`` the starting weights are scored first, so
  fine-tuning never hands back a model that validates worse than its base;
- without validation data, the last weights are kept;
- after divergence, the best scored weights (or the starting ones).

:attr:`Finished.kept` says in one sentence which weights the model now holds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.training.batches import seed_everything
from napari_dlcb.training.events import (
    Finished,
    TrainEvent,
)
from napari_dlcb.training.losses import LossFn, masked_loss
from napari_dlcb.training.metrics import accuracy_metric
from napari_dlcb.training.run import MetricsFn, RunOptions, TrainingRun

__all__ = ["accuracy_metric", "fit", "fit_to_end", "masked_loss", "seed_everything"]


def _make_optimizer(
    name: str, params: list, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name in ("sgd", "sgd_momentum"):
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay
        )
    raise DlcbError(f"unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'")


def _trainable(model: nn.Module, params: Iterable[Any] | None) -> list[Any]:
    """Parameters (or parameter groups, dicts with their own ``lr``) that require grad."""
    source = list(params) if params is not None else list(model.parameters())
    if source and isinstance(source[0], dict):
        groups = []
        for g in source:
            ps = [p for p in g["params"] if p.requires_grad]
            if ps:
                groups.append({**g, "params": ps})
        return groups
    return [p for p in source if p.requires_grad]


# over 80 lines only by its signature and docstring (36 documented options)
def fit(
    model: nn.Module,
    train: torch.utils.data.Dataset,
    val: torch.utils.data.Dataset | None = None,
    *,
    loss: str | LossFn = "cross_entropy",
    metrics: MetricsFn | None = None,
    monitor: str = "val_loss",
    epochs: int = 50,
    batch_size: int = 8,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    lr_patience: int = 3,
    lr_factor: float = 0.5,
    early_stopping: int | None = 10,
    params: Iterable[Any] | None = None,
    device: str | torch.device | None = "auto",
    amp: bool = True,
    seed: int = 0,
    sampler: torch.utils.data.Sampler | None = None,
    collate_fn: Callable | None = None,
    num_workers: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    preview: Callable[[nn.Module], Any] | None = None,
    preview_interval: float = 1.0,
    stop: threading.Event | None = None,
    max_time: float | None = None,
    steps_per_epoch: int | None = None,
    epoch_seconds: float | None = None,
    divergence_factor: float = 1e3,
    overfit_patience: int = 3,
    channels_last: bool | None = None,
    validate_start: bool = False,
) -> Iterator[TrainEvent]:
    """Train ``model`` and yield progress events.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place. On exit it holds the best scored weights (see the
        module docstring), on its original device and in its original mode.
    train, val : torch.utils.data.Dataset
        Items are ``(x, y)``; ``x`` may be a tuple of tensors (``model(*x)``).
    loss : {"cross_entropy", "bce", "mse"} or callable
        See :func:`~napari_dlcb.training.losses.masked_loss`; a callable gets
        ``(logits, targets)``.
    metrics : callable, optional
        ``metrics(logits_list, targets_list) -> dict`` on validation outputs.
    monitor : str
        ``"val_loss"`` (minimised) or a metric name (maximised unless it
        contains "loss" or "error").
    epochs, batch_size, optimizer, lr, weight_decay, momentum
        The usual; ``optimizer`` is "adam" (default), "adamw" or "sgd"
        (with Nesterov momentum).
    lr_patience, lr_factor : int, float
        Multiply the learning rate by ``lr_factor`` after ``lr_patience``
        epochs without improvement of ``monitor``.
    early_stopping : int or None
        Stop after this many epochs without improvement; None disables.
    params : iterable of Parameter or of dict, optional
        What to train (e.g. only a decoder), or parameter groups with their
        own ``lr`` (e.g. a smaller one for pretrained layers); default all
        parameters with ``requires_grad``.
    device : str
        "auto" (cuda, then mps, then cpu), "cpu", "cuda", "mps".
    amp : bool
        Mixed precision; only ever used on CUDA.
    seed : int
        Seeds Python, NumPy, torch and the data order.
    sampler, collate_fn, num_workers
        Passed to the training ``DataLoader`` (``sampler`` replaces shuffling,
        e.g. a ``WeightedRandomSampler`` for class imbalance).
    checkpoint_dir : path, optional
        Where ``best.safetensors``, ``last.safetensors`` and the optimiser and
        trainer state go after every epoch (atomically).
    resume : bool
        Continue from ``checkpoint_dir``'s last checkpoint (weights, optimiser
        moments, epoch counter, best weights and score, learning-rate
        schedule) for ``epochs`` more epochs (0: just hand back its best weights).
    preview : callable, optional
        ``preview(model)`` runs in eval mode without gradients at most every
        ``preview_interval`` seconds; its result is yielded as :class:`Preview`.
    stop : threading.Event, optional
        Set it from any thread to end training cleanly at the next step; the
        partial epoch is then validated and kept if it scores best.
    max_time : float, optional
        Wall-clock budget in seconds.
    steps_per_epoch : int, optional
        Cap the number of optimisation steps per epoch.
    epoch_seconds : float, optional
        End each epoch's optimisation after this many seconds (at least one
        step), so the learning curve moves at a steady pace on any machine.
    divergence_factor : float
        Training stops (reason "diverged") when the loss is non-finite or
        exceeds this multiple of the first epoch's loss.
    overfit_patience : int
        Emit an "overfitting" warning when validation loss has risen for this
        many epochs while training loss kept falling.
    channels_last : bool, optional
        Train 2-D convolutional models in channels-last memory format (about
        1.4x faster on CPUs with oneDNN). Off by default: oneDNN crashes in the
        backward pass of some layer combinations, so callers opt in for
        architectures they have tested. The model is handed back in the
        default memory format.
    validate_start : bool
        Score the starting weights on the validation set first; they are kept
        if no later epoch beats them (fine-tuning never makes a model worse
        on held-out annotation). :attr:`Started.baseline` carries the scores.

    Yields
    ------
    TrainEvent
        ``Started``, then ``Progress`` per step, ``Preview`` when due,
        ``EpochEnd``, ``Checkpoint``, ``Warning`` as they happen, and finally
        ``Finished``.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> x = torch.randn(32, 3); y = (x[:, 0] > 0).long()
    >>> net = torch.nn.Linear(3, 2)
    >>> events = list(fit(net, TensorDataset(x, y), epochs=2, device="cpu"))
    >>> type(events[-1]).__name__
    'Finished'
    """
    if len(train) == 0:  # type: ignore[arg-type]
        raise DlcbError("there is no training data (no labelled samples)")
    _check_numbers(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, resume=resume
    )
    dev = resolve_device(device)
    trainable = _trainable(model, params)
    if not trainable:
        raise DlcbError("the model has no trainable parameters")
    opt = _make_optimizer(optimizer, trainable, lr, weight_decay, momentum)
    if val is None and monitor != "val_loss":
        monitor = "train_loss"
    opts = RunOptions(
        loss_fn=masked_loss(loss) if isinstance(loss, str) else loss,
        metrics=metrics,
        monitor=monitor,
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr_patience=lr_patience,
        lr_factor=lr_factor,
        early_stopping=early_stopping,
        amp=amp,
        seed=seed,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        resume=resume,
        preview=preview,
        preview_interval=preview_interval,
        stop=stop,
        max_time=max_time,
        steps_per_epoch=steps_per_epoch,
        epoch_seconds=epoch_seconds,
        divergence_factor=divergence_factor,
        overfit_patience=overfit_patience,
        channels_last=bool(channels_last),
        validate_start=validate_start,
    )
    if opts.checkpoint_dir is not None:
        opts.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    return _fit_events(
        model, train, val, opts, dev, opt, trainable, sampler, collate_fn, num_workers
    )


def _check_numbers(
    *, epochs: int, batch_size: int, lr: float, weight_decay: float, resume: bool = False
) -> None:
    if int(epochs) < (0 if resume else 1):  # resume with 0 more epochs: the checkpoint's best
        raise DlcbError(f"epochs must be at least 1, got {epochs}")
    if int(batch_size) < 1:
        raise DlcbError(f"batch size must be at least 1, got {batch_size}")
    if not (math.isfinite(lr) and lr > 0):
        raise DlcbError(f"learning rate must be a positive finite number, got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise DlcbError(f"weight decay must be a finite number >= 0, got {weight_decay}")


def _fit_events(
    model: nn.Module,
    train: Any,
    val: Any,
    opts: RunOptions,
    dev: torch.device,
    opt: torch.optim.Optimizer,
    trainable: list[Any],
    sampler: Any,
    collate_fn: Any,
    num_workers: int,
) -> Iterator[TrainEvent]:
    """The generator half of :func:`fit` (arguments are checked before the first ``next``)."""
    from napari_dlcb.device import model_device
    from napari_dlcb.training import distributed

    orig = {"orig_training": model.training, "orig_device": model_device(model) or dev}
    ctx = distributed.context()
    if ctx is not None:
        if sampler is not None:
            raise DlcbError(
                "a class-balancing sampler cannot be combined with torchrun; "
                "use loss weighting instead"
            )
        dev = distributed.device_for(ctx, dev)
    model.to(dev)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx is not None:
        orig["net"] = distributed.wrap(model, ctx, dev)
        orig["dist"] = ctx
    setup = {
        "device": dev,
        "optimizer": opt,
        "trainable": trainable,
        "sampler": sampler,
        "collate_fn": collate_fn,
        "num_workers": num_workers,
        **orig,
    }
    run = TrainingRun(model, train, val, opts, setup)
    yield from run.events()


def fit_to_end(events: Iterator[TrainEvent], *, on_event: Callable | None = None) -> Finished:
    """Drain a ``fit`` generator and return its :class:`Finished` event.

    Parameters
    ----------
    events : iterator of TrainEvent
        What :func:`fit` returned.
    on_event : callable, optional
        Called with every event (e.g. to print progress).
    """
    last: TrainEvent | None = None
    for ev in events:
        if on_event is not None:
            on_event(ev)
        last = ev
    if not isinstance(last, Finished):  # pragma: no cover - fit always finishes
        raise RuntimeError("training ended without a Finished event")
    return last
