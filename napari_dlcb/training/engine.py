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
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.state import state_to_cpu
from napari_dlcb.training.checkpoint import load_checkpoint, write_checkpoint
from napari_dlcb.training.events import (
    Checkpoint,
    EpochEnd,
    Finished,
    Preview,
    Progress,
    Started,
    TrainEvent,
    Warning,
)
from napari_dlcb.training.losses import LossFn, masked_loss
from napari_dlcb.training.metrics import accuracy_metric

__all__ = ["accuracy_metric", "fit", "fit_to_end", "masked_loss", "seed_everything"]

MetricsFn = Callable[[list[torch.Tensor], list[torch.Tensor]], dict[str, float]]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loading."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device, channels_last) for o in obj)
    return obj


def _batch_size_of(x: Any) -> int:
    return int((x[0] if isinstance(x, (list, tuple)) else x).shape[0])


def _forward(model: nn.Module, x: Any) -> torch.Tensor:
    return model(*x) if isinstance(x, (list, tuple)) else model(x)


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


def _count(trainable: list[Any]) -> int:
    if trainable and isinstance(trainable[0], dict):
        return sum(p.numel() for g in trainable for p in g["params"])
    return sum(p.numel() for p in trainable)


@dataclass
class _Options:
    loss_fn: LossFn
    metrics: MetricsFn | None
    monitor: str
    epochs: int
    batch_size: int
    lr_patience: int
    lr_factor: float
    early_stopping: int | None
    amp: bool
    seed: int
    checkpoint_dir: Path | None
    resume: bool
    preview: Callable[[nn.Module], Any] | None
    preview_interval: float
    stop: threading.Event | None
    max_time: float | None
    steps_per_epoch: int | None
    epoch_seconds: float | None
    divergence_factor: float
    overfit_patience: int
    channels_last: bool
    validate_start: bool


@dataclass
class _Best:
    """The best scored weights so far (``epoch`` -1: the starting weights)."""

    score: float
    epoch: int = -2  # -2: nothing scored yet
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    label: str = ""


class _Run:
    """One training run; :meth:`events` is the generator that :func:`fit` returns."""

    def __init__(self, model: nn.Module, train: Any, val: Any, opts: _Options, setup: dict):
        self.model, self.train, self.val, self.o = model, train, val, opts
        self.net: nn.Module = setup.get("net", model)  # DistributedDataParallel under torchrun
        self.dist = setup.get("dist")
        self.dev: torch.device = setup["device"]
        self.opt: torch.optim.Optimizer = setup["optimizer"]
        self.trainable = setup["trainable"]
        self.use_amp = bool(opts.amp) and self.dev.type == "cuda"
        self.gen = seed_everything(opts.seed)
        self.orig_training: bool = setup["orig_training"]
        self.orig_device: torch.device = setup["orig_device"]
        self.minimise = opts.monitor == "val_loss" or any(
            k in opts.monitor for k in ("loss", "error")
        )
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt,
            mode="min" if self.minimise else "max",
            factor=opts.lr_factor,
            patience=opts.lr_patience,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        sampler = setup["sampler"]
        if self.dist is not None:
            from napari_dlcb.training import distributed

            sampler = distributed.sampler(train, self.dist, opts.seed)
        self.sampler = sampler
        self.loader = torch.utils.data.DataLoader(
            train,
            batch_size=opts.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=self.gen if sampler is None else None,
            collate_fn=setup["collate_fn"],
            num_workers=setup["num_workers"],
            drop_last=len(train) > opts.batch_size,
            pin_memory=self.dev.type == "cuda",
        )
        self.val_loader = (
            torch.utils.data.DataLoader(
                val, batch_size=opts.batch_size, shuffle=False, collate_fn=setup["collate_fn"]
            )
            if val is not None and len(val) > 0
            else None
        )
        self.best = _Best(math.inf if self.minimise else -math.inf)
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.first_loss: float | None = None
        self.bad_epochs = self.overfit_run = 0
        self.overfit_warned = False
        self.steps_since_eval = 0
        self.last_preview = -math.inf
        self.t_start = time.perf_counter()

    # ------------------------------------------------------------------ helpers
    def autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()

    def stopped(self) -> bool:
        return self.o.stop is not None and self.o.stop.is_set()

    def agree(self, flag: bool) -> bool:
        """Under torchrun, True if any process says True (all processes then act alike)."""
        if self.dist is None:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def out_of_time(self) -> bool:
        return self.o.max_time is not None and time.perf_counter() - self.t_start > self.o.max_time

    def better(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if self.best.epoch == -2:
            return True
        return score < self.best.score if self.minimise else score > self.best.score

    def take_best(self, score: float, epoch: int, label: str) -> None:
        self.best = _Best(float(score), epoch, state_to_cpu(self.model), label)

    def score_of(self, train_loss: float, val_loss: float, mets: dict[str, float]) -> float:
        if self.val_loader is None:
            return train_loss
        return {"val_loss": val_loss, "train_loss": train_loss, **mets}.get(
            self.o.monitor, val_loss
        )

    def evaluate(self) -> tuple[float, dict[str, float]]:
        """Validation loss and metrics of the current weights (eval mode, no grad)."""
        model, cl = self.model, self.o.channels_last
        model.eval()
        total, count = 0.0, 0
        outs: list[torch.Tensor] = []
        tgts: list[torch.Tensor] = []
        with torch.inference_mode():
            for x, y in self.val_loader:
                x, y = _to_device(x, self.dev, cl), _to_device(y, self.dev)
                with self.autocast():
                    out = _forward(model, x).float()
                bs = _batch_size_of(x)
                total += float(self.o.loss_fn(out, y)) * bs
                count += bs
                if self.o.metrics is not None:
                    outs.append(out.cpu())
                    tgts.append(_to_device(y, torch.device("cpu")))
        model.train()
        self.steps_since_eval = 0
        mets = self.o.metrics(outs, tgts) if self.o.metrics is not None else {}
        return total / max(count, 1), {k: float(v) for k, v in mets.items()}

    def run_preview(self, epoch: int, step: int) -> Preview | None:
        o = self.o
        if o.preview is None or time.perf_counter() - self.last_preview < o.preview_interval:
            return None
        was = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                data = o.preview(self.model)
        finally:
            self.model.train(was)
        self.last_preview = time.perf_counter()
        return Preview(epoch=epoch, step=step, data=data) if data is not None else None

    # ------------------------------------------------------------------ the loop
    def start(self) -> Started:
        o = self.o
        baseline: dict[str, Any] | None = None
        if o.resume:
            st, best = load_checkpoint(o.checkpoint_dir, self.model, self.opt, self.dev)
            self.start_epoch = st["epoch"] + 1
            self.history = st.get("history", [])
            self.best = _Best(st["best_score"], st["best_epoch"], best or {}, "")
            self.bad_epochs = int(st.get("bad_epochs", 0))
            self.first_loss = st.get("first_loss")
            if st.get("scheduler"):
                self.sched.load_state_dict(st["scheduler"])
        elif o.validate_start and self.val_loader is not None:
            val_loss, mets = self.evaluate()
            score = self.score_of(math.nan, val_loss, mets)
            if math.isfinite(score):
                self.take_best(score, -1, "the starting weights")
            baseline = {"val_loss": val_loss, **mets}
        return Started(
            device=str(self.dev),
            amp=self.use_amp,
            n_train=len(self.train),
            n_val=len(self.val) if self.val is not None else 0,
            n_params=sum(p.numel() for p in self.model.parameters()),
            n_trainable=_count(self.trainable),
            start_epoch=self.start_epoch,
            baseline=baseline,
        )

    def train_epoch(self, epoch: int, totals: dict[str, float]) -> Iterator[TrainEvent]:
        """One epoch of optimisation steps; fills ``totals`` (loss sum, samples)."""
        o = self.o
        self.net.train()
        t0 = time.perf_counter()
        steps = len(self.loader)
        if o.steps_per_epoch is not None:
            steps = min(o.steps_per_epoch, steps)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(self.loader):
            if step >= steps or self.agree(self.stopped()):
                break
            x, y = _to_device(x, self.dev, o.channels_last), _to_device(y, self.dev)
            self.opt.zero_grad(set_to_none=True)
            with self.autocast():
                batch_loss = o.loss_fn(_forward(self.net, x).float(), y)
            if self.agree(not bool(torch.isfinite(batch_loss))):
                totals["diverged"] = 1
                break
            self.scaler.scale(batch_loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.steps_since_eval += 1
            lv, bs = float(batch_loss.detach()), _batch_size_of(x)
            totals["loss"] += lv * bs
            totals["seen"] += bs
            yield Progress(epoch=epoch, step=step, steps=steps, loss=lv)
            pv = self.run_preview(epoch, step)
            if pv is not None:
                yield pv
            epoch_over = o.epoch_seconds is not None and time.perf_counter() - t0 >= o.epoch_seconds
            if self.agree(self.out_of_time() or epoch_over):
                break

    def diverged(self, train_loss: float, totals: dict[str, float]) -> bool:
        if totals.get("diverged"):
            return True
        if self.first_loss is None:
            return not math.isfinite(train_loss)
        return (
            not math.isfinite(train_loss) or train_loss > self.o.divergence_factor * self.first_loss
        )

    def end_epoch(
        self, epoch: int, train_loss: float, seen: int, seconds: float, partial: bool
    ) -> Iterator[TrainEvent]:
        """Score the epoch, keep the best weights, decay the LR, warn, checkpoint."""
        val_loss, mets = self.evaluate() if self.val_loader is not None else (math.nan, {})
        score = self.score_of(train_loss, val_loss, mets)
        improved = self.better(score) or (self.val_loader is None and self.best.epoch < 0)
        if improved:
            self.take_best(score, epoch, f"epoch {epoch + 1}")
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        lr_before = self.opt.param_groups[0]["lr"]
        if math.isfinite(score) and not partial:
            self.sched.step(score)
        lr_now = self.opt.param_groups[0]["lr"]
        rec = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr_now}
        self.history.append({**rec, **mets})
        yield EpochEnd(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            metrics=mets,
            lr=lr_before,
            seconds=seconds,
            samples_per_s=seen / max(seconds, 1e-9),
            is_best=improved,
            partial=partial,
        )
        if lr_now < lr_before:
            yield Warning(
                kind="lr_decay",
                message=f"validation plateau: learning rate {lr_before:.2g} -> {lr_now:.2g}",
                epoch=epoch,
            )
        yield from self.overfitting(epoch, train_loss, val_loss)
        if self.o.checkpoint_dir is not None and (self.dist is None or self.dist.is_writer):
            state = {
                "epoch": epoch,
                "best_score": self.best.score,
                "best_epoch": self.best.epoch,
                "history": self.history,
                "monitor": self.o.monitor,
                "bad_epochs": self.bad_epochs,
                "first_loss": self.first_loss,
                "scheduler": self.sched.state_dict(),
            }
            # one file holds weights, optimiser, best weights and state: a kill never mixes epochs
            for kind, path in write_checkpoint(
                self.o.checkpoint_dir,
                self.model,
                self.opt,
                state,
                self.best.state,
                best_is_model=self.best.epoch == epoch,
                best_changed=improved,
            ):
                yield Checkpoint(path=str(path), kind=kind, epoch=epoch)

    def overfitting(self, epoch: int, train_loss: float, val_loss: float) -> Iterator[Warning]:
        if len(self.history) < 2 or not math.isfinite(val_loss):
            return
        prev = self.history[-2]
        if val_loss > prev["val_loss"] and train_loss <= prev["train_loss"]:
            self.overfit_run += 1
        else:
            self.overfit_run, self.overfit_warned = 0, False
        if self.overfit_run >= self.o.overfit_patience and not self.overfit_warned:
            self.overfit_warned = True
            yield Warning(
                kind="overfitting",
                message=f"validation loss rose for {self.overfit_run} epochs while training "
                "loss fell: the model is overfitting (more labels, more augmentation "
                "or earlier stopping help)",
                epoch=epoch,
            )

    def events(self) -> Iterator[TrainEvent]:
        """The run: ``Started``, epochs, ``Finished``; cleans up however it ends."""
        reason, epoch = "completed", self.start_epoch - 1
        try:
            yield self.start()
            for epoch in range(self.start_epoch, self.start_epoch + self.o.epochs):
                t0 = time.perf_counter()
                totals = {"loss": 0.0, "seen": 0}
                yield from self.train_epoch(epoch, totals)
                train_loss = totals["loss"] / max(totals["seen"], 1)
                if self.diverged(train_loss, totals):
                    reason = "diverged"
                    yield Warning(
                        kind="diverged",
                        message=f"loss diverged in epoch {epoch + 1}; restoring the best "
                        "weights. Try a lower learning rate.",
                        epoch=epoch,
                    )
                    break
                if self.first_loss is None and totals["seen"]:
                    self.first_loss = train_loss
                partial = self.stopped() or (self.out_of_time() and self.steps_since_eval > 0)
                if self.stopped() and totals["seen"] == 0:
                    reason = "cancelled"
                    break
                seconds = time.perf_counter() - t0
                yield from self.end_epoch(epoch, train_loss, totals["seen"], seconds, partial)
                pv = self.run_preview(epoch, -1)
                if pv is not None:
                    yield pv
                reason = self.reason_to_stop()
                if reason != "completed":
                    break
        except GeneratorExit:
            self.close_quietly()
            raise
        except BaseException:
            self.restore(self.best.state)
            raise
        yield self.finish(reason)

    def reason_to_stop(self) -> str:
        if self.stopped():
            return "cancelled"
        if self.o.early_stopping is not None and self.bad_epochs >= self.o.early_stopping:
            return "early_stopping"
        if self.out_of_time():
            return "time_limit"
        return "completed"

    def close_quietly(self) -> None:
        """The generator was closed mid-run: score what was learnt, keep the better."""
        if self.steps_since_eval and self.val_loader is not None:
            val_loss, mets = self.evaluate()
            score = self.score_of(math.nan, val_loss, mets)
            if self.better(score):
                self.take_best(score, len(self.history) + self.start_epoch, "the stopped weights")
        keep_last = self.val_loader is None
        self.restore(None if keep_last else self.best.state)

    def restore(self, state: dict[str, torch.Tensor] | None) -> None:
        if state:
            self.model.load_state_dict(state)
        self.model.to(self.orig_device, memory_format=torch.contiguous_format)
        self.model.train(self.orig_training)

    def finish(self, reason: str) -> Finished:
        if reason == "diverged" or self.val_loader is not None:
            self.restore(self.best.state)
            kept = self.kept_sentence(reason)
        else:
            self.restore(None)
            kept = "the last weights (there is no validation data to choose others)"
        return Finished(
            reason=reason,
            best_epoch=self.best.epoch if self.best.epoch >= -1 else -1,
            best_score=float(self.best.score),
            epochs_run=len(self.history),
            history=self.history,
            kept=kept,
        )

    def kept_sentence(self, reason: str) -> str:
        b = self.best
        if b.epoch == -2 or not b.state:
            return "the starting weights (nothing was scored)"
        score = f"{self.o.monitor if self.val_loader is not None else 'train_loss'} {b.score:.4g}"
        if b.epoch == -1:
            return f"the starting weights ({score}): training did not beat them on validation"
        last = self.history[-1] if self.history else {}
        when = b.label or f"epoch {b.epoch + 1}"
        if last.get("epoch") == b.epoch and reason == "cancelled":
            when = f"the weights at Stop ({when})"
        return f"{when} ({score})"


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
    opts = _Options(
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
    opts: _Options,
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
    run = _Run(model, train, val, opts, setup)
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
