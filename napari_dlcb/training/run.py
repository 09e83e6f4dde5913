"""One training run: the loop behind :func:`~napari_dlcb.training.engine.fit`.

:class:`TrainingRun` holds the model, data, optimiser and schedule of one run and
yields its events (epochs, validation, previews, checkpoints, Stop, divergence);
:class:`RunOptions` are ``fit``'s options after checking. What the model holds when
the run ends is described in :mod:`napari_dlcb.training.engine`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_dlcb.models.state import state_to_cpu
from napari_dlcb.training.batches import batch_size_of, forward, seed_everything, to_device
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
from napari_dlcb.training.losses import LossFn

__all__ = ["MetricsFn", "RunOptions", "TrainingRun"]

MetricsFn = Callable[[list[torch.Tensor], list[torch.Tensor]], dict[str, float]]


def _count(trainable: list[Any]) -> int:
    if trainable and isinstance(trainable[0], dict):
        return sum(p.numel() for g in trainable for p in g["params"])
    return sum(p.numel() for p in trainable)


@dataclass
class RunOptions:
    """The options of :func:`~napari_dlcb.training.engine.fit`, checked."""

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


class TrainingRun:
    """One training run; :meth:`events` is the generator that :func:`fit` returns."""

    def __init__(self, model: nn.Module, train: Any, val: Any, opts: RunOptions, setup: dict):
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
        """Mixed precision on CUDA when asked for, else a no-op context."""
        return torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()

    def stopped(self) -> bool:
        """Whether Stop was pressed (the ``stop`` event is set)."""
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
        """Whether ``max_time`` seconds have passed since the run started."""
        return self.o.max_time is not None and time.perf_counter() - self.t_start > self.o.max_time

    def better(self, score: float) -> bool:
        """Whether ``score`` beats the best scored weights so far."""
        if not math.isfinite(score):
            return False
        if self.best.epoch == -2:
            return True
        return score < self.best.score if self.minimise else score > self.best.score

    def take_best(self, score: float, epoch: int, label: str) -> None:
        """Remember the current weights (on the CPU) as the best."""
        self.best = _Best(float(score), epoch, state_to_cpu(self.model), label)

    def score_of(self, train_loss: float, val_loss: float, mets: dict[str, float]) -> float:
        """The monitored score of an epoch (the train loss without validation data)."""
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
                x, y = to_device(x, self.dev, cl), to_device(y, self.dev)
                with self.autocast():
                    out = forward(model, x).float()
                bs = batch_size_of(x)
                total += float(self.o.loss_fn(out, y)) * bs
                count += bs
                if self.o.metrics is not None:
                    outs.append(out.cpu())
                    tgts.append(to_device(y, torch.device("cpu")))
        model.train()
        self.steps_since_eval = 0
        mets = self.o.metrics(outs, tgts) if self.o.metrics is not None else {}
        return total / max(count, 1), {k: float(v) for k, v in mets.items()}

    def run_preview(self, epoch: int, step: int) -> Preview | None:
        """A :class:`Preview` of the current weights, at most every ``preview_interval`` s."""
        o = self.o
        if o.preview is None or o.preview_interval == math.inf:  # inf: never, not once
            return None
        if time.perf_counter() - self.last_preview < o.preview_interval:
            return None
        if self.stopped():  # after Stop no preview: it would only delay handing the model back
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
        """Score the starting weights if asked, and say what the run trains on."""
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
            x, y = to_device(x, self.dev, o.channels_last), to_device(y, self.dev)
            self.opt.zero_grad(set_to_none=True)
            with self.autocast():
                batch_loss = o.loss_fn(forward(self.net, x).float(), y)
            if self.agree(not bool(torch.isfinite(batch_loss))):
                totals["diverged"] = 1
                break
            self.scaler.scale(batch_loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.steps_since_eval += 1
            lv, bs = float(batch_loss.detach()), batch_size_of(x)
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
        """Whether the loss became non-finite or grew past the divergence factor."""
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
        """A warning when validation loss rises while training loss falls."""
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
        """Why the run ended: stopped, early stopping, time limit, or completed."""
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
        """Load ``state`` (if any) and give the model back its original mode."""
        if state:
            self.model.load_state_dict(state)
        self.model.to(self.orig_device, memory_format=torch.contiguous_format)
        self.model.train(self.orig_training)

    def finish(self, reason: str) -> Finished:
        """Restore the best scored weights and build the :class:`Finished` event."""
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
        """One sentence on which weights the model now holds (for status lines)."""
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
