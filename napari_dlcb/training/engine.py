"""The training engine: one generator shared by images, cells and DNA.

``fit`` yields :mod:`~napari_dlcb.training.events` while it trains. Every
``yield`` is a point where the caller may pause (by not pulling), cancel (by
closing the generator or setting ``stop``), or update a GUI. Whatever ends the
run, the model is left holding the best weights seen, on its original device
and in its original train/eval mode.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
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

__all__ = ["fit", "fit_to_end", "resolve_device", "masked_loss", "seed_everything"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None`` into cuda, then mps, then cpu; validate the rest.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DlcbError("device 'cuda' was requested but no CUDA GPU is available")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DlcbError("device 'mps' was requested but Apple MPS is not available")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loading."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def masked_loss(kind: str) -> LossFn:
    """Return a loss that ignores unlabelled targets.

    Parameters
    ----------
    kind : {"cross_entropy", "bce"}
        ``"cross_entropy"``: logits (B, C, ...) and int64 targets (B, ...) where
        ``-1`` marks unlabelled positions (sparse scribbles). ``"bce"``: logits
        and float targets of the same shape where NaN marks a missing label
        (multitask DNA).

    Returns
    -------
    callable
        ``loss(logits, targets) -> scalar``; 0 (with a gradient) when nothing
        in the batch is labelled.
    """
    if kind == "cross_entropy":

        def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            target = target.long()
            per = nn.functional.cross_entropy(logits, target, ignore_index=-1, reduction="none")
            n = (target >= 0).sum()
            return per.sum() / n.clamp_min(1)

        return ce
    if kind == "bce":

        def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            target = target.to(logits.dtype).reshape(logits.shape)
            valid = ~torch.isnan(target)
            per = nn.functional.binary_cross_entropy_with_logits(
                logits, torch.where(valid, target, torch.zeros_like(target)), reduction="none"
            )
            return (per * valid).sum() / valid.sum().clamp_min(1)

        return bce
    raise DlcbError(f"unknown loss {kind!r}; use 'cross_entropy', 'bce' or a callable")


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


def _state_to_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


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


def fit(  # noqa: C901 - one readable loop beats many tiny functions here
    model: nn.Module,
    train: torch.utils.data.Dataset,
    val: torch.utils.data.Dataset | None = None,
    *,
    loss: str | LossFn = "cross_entropy",
    metrics: Callable[[list[torch.Tensor], list[torch.Tensor]], dict[str, float]] | None = None,
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
    params: Iterable[nn.Parameter] | None = None,
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
    divergence_factor: float = 1e3,
    overfit_patience: int = 3,
    channels_last: bool | None = None,
) -> Iterator[TrainEvent]:
    """Train ``model`` and yield progress events.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place. On exit it holds the best weights (by ``monitor``
        on the validation set, or the last weights without one), on its
        original device and in its original train/eval mode.
    train, val : torch.utils.data.Dataset
        Items are ``(x, y)``; ``x`` may be a tuple of tensors (``model(*x)``).
    loss : {"cross_entropy", "bce"} or callable
        See :func:`masked_loss`; a callable gets ``(logits, targets)``.
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
    params : iterable of Parameter, optional
        What to train (e.g. only a decoder); default all with ``requires_grad``.
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
        trainer state go after every epoch.
    resume : bool
        Continue from ``checkpoint_dir``'s last checkpoint (weights, optimiser
        moments, epoch counter, best score).
    preview : callable, optional
        ``preview(model)`` runs in eval mode without gradients at most every
        ``preview_interval`` seconds; its result is yielded as :class:`Preview`.
    stop : threading.Event, optional
        Set it from any thread to end training cleanly at the next step.
    max_time : float, optional
        Wall-clock budget in seconds.
    steps_per_epoch : int, optional
        Cap the number of optimisation steps per epoch.
    divergence_factor : float
        Training stops (reason "diverged") when the loss is non-finite or
        exceeds this multiple of the first epoch's loss.
    overfit_patience : int
        Emit an "overfitting" warning when validation loss has risen for this
        many epochs while training loss kept falling.
    channels_last : bool, optional
        Train 2-D convolutional models in channels-last memory format (about
        1.4x faster on CPUs with oneDNN). Off by default: oneDNN crashes in the
        backward pass of some layer combinations (seen with adaptive pooling on
        tiny inputs), so callers opt in for architectures they have tested (the
        segmentation trainer does for the U-Net). The model is handed back in
        the default memory format.

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
    loss_fn: LossFn = masked_loss(loss) if isinstance(loss, str) else loss
    dev = resolve_device(device)
    use_amp = bool(amp) and dev.type == "cuda"
    gen = seed_everything(seed)
    orig_training = model.training
    try:
        orig_device = next(model.parameters()).device
    except StopIteration:
        orig_device = torch.device("cpu")
    model.to(dev)
    if channels_last is None:
        channels_last = False
    if channels_last:
        model.to(memory_format=torch.channels_last)
    source = params if params is not None else model.parameters()
    trainable = [p for p in source if p.requires_grad]
    if not trainable:
        raise DlcbError("the model has no trainable parameters")
    opt = _make_optimizer(optimizer, trainable, lr, weight_decay, momentum)
    minimise = monitor == "val_loss" or "loss" in monitor or "error" in monitor
    if val is None and monitor != "val_loss":
        monitor, minimise = "train_loss", True
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min" if minimise else "max", factor=lr_factor, patience=lr_patience
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.float16))
        if use_amp
        else (lambda: nullcontext())
    )
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen if sampler is None else None,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=len(train) > batch_size,  # type: ignore[arg-type]
        pin_memory=dev.type == "cuda",
    )
    val_loader = (
        torch.utils.data.DataLoader(
            val, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=0
        )
        if val is not None and len(val) > 0  # type: ignore[arg-type]
        else None
    )
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckdir is not None:
        ckdir.mkdir(parents=True, exist_ok=True)

    best_score = math.inf if minimise else -math.inf
    best_epoch = -1
    best_state = _state_to_cpu(model)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        if ckdir is None or not (ckdir / "last.safetensors").exists():
            raise DlcbError("cannot resume: no checkpoint 'last.safetensors' in checkpoint_dir")
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckdir / "last.safetensors"), device=str(dev)))
        st = json.loads((ckdir / "trainer_state.json").read_text())
        opt_file = ckdir / "optimizer.safetensors"
        if opt_file.exists():
            _load_optimizer(opt, load_file(str(opt_file), device=str(dev)), st["optimizer"])
        start_epoch, best_score, best_epoch = st["epoch"] + 1, st["best_score"], st["best_epoch"]
        history = st.get("history", [])
        if (ckdir / "best.safetensors").exists():
            best_state = load_file(str(ckdir / "best.safetensors"))

    n_params = sum(p.numel() for p in model.parameters())
    yield Started(
        device=str(dev),
        amp=use_amp,
        n_train=len(train),  # type: ignore[arg-type]
        n_val=len(val) if val is not None else 0,  # type: ignore[arg-type]
        n_params=n_params,
        n_trainable=sum(p.numel() for p in trainable),
        start_epoch=start_epoch,
    )
    t_start = time.perf_counter()
    last_preview = -math.inf
    first_loss: float | None = None
    bad_epochs = 0
    overfit_run = 0
    overfit_warned = False
    reason = "completed"
    epoch = start_epoch - 1
    global_step = 0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def run_preview(ep: int, step: int) -> Preview | None:
        nonlocal last_preview
        if preview is None:
            return None
        now = time.perf_counter()
        if now - last_preview < preview_interval:
            return None
        was = model.training
        model.eval()
        try:
            with torch.inference_mode():
                data = preview(model)
        finally:
            model.train(was)
        last_preview = time.perf_counter()
        return Preview(epoch=ep, step=step, data=data) if data is not None else None

    try:
        for epoch in range(start_epoch, start_epoch + epochs):
            model.train()
            t0 = time.perf_counter()
            total, count, seen = 0.0, 0, 0
            steps = len(loader) if steps_per_epoch is None else min(steps_per_epoch, len(loader))
            diverged = False
            for step, (x, y) in enumerate(loader):
                if step >= steps or stopped():
                    break
                x, y = _to_device(x, dev, channels_last), _to_device(y, dev)
                opt.zero_grad(set_to_none=True)
                with autocast():
                    out = _forward(model, x)
                    batch_loss = loss_fn(out.float(), y)
                if not torch.isfinite(batch_loss):
                    diverged = True
                    break
                scaler.scale(batch_loss).backward()
                scaler.step(opt)
                scaler.update()
                lv = float(batch_loss.detach())
                bs = _batch_size_of(x)
                total += lv * bs
                count += bs
                seen += bs
                global_step += 1
                yield Progress(epoch=epoch, step=step, steps=steps, loss=lv)
                pv = run_preview(epoch, step)
                if pv is not None:
                    yield pv
                if max_time is not None and time.perf_counter() - t_start > max_time:
                    break
            train_loss = total / max(count, 1)
            if first_loss is None and count:
                first_loss = train_loss
            if diverged or (
                first_loss is not None
                and (not math.isfinite(train_loss) or train_loss > divergence_factor * first_loss)
            ):
                reason = "diverged"
                yield Warning(
                    kind="diverged",
                    message=f"loss diverged in epoch {epoch}; restoring the best weights. "
                    "Try a lower learning rate.",
                    epoch=epoch,
                )
                break
            if stopped():
                reason = "cancelled"
                break
            val_loss, mets = math.nan, {}
            if val_loader is not None:
                val_loss, mets = _evaluate(
                    model, val_loader, loss_fn, metrics, dev, autocast, bool(channels_last)
                )
            seconds = time.perf_counter() - t0
            score = {"val_loss": val_loss, "train_loss": train_loss, **mets}.get(monitor, val_loss)
            if val_loader is None:
                score = train_loss
            improved = (score < best_score) if minimise else (score > best_score)
            if improved or best_epoch < 0:
                best_score, best_epoch, bad_epochs = float(score), epoch, 0
                best_state = _state_to_cpu(model)
            else:
                bad_epochs += 1
            lr_before = opt.param_groups[0]["lr"]
            if math.isfinite(score):
                sched.step(score)
            lr_now = opt.param_groups[0]["lr"]
            rec = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr_now}
            rec.update(mets)
            history.append(rec)
            yield EpochEnd(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                metrics=mets,
                lr=lr_before,
                seconds=seconds,
                samples_per_s=seen / max(seconds, 1e-9),
                is_best=improved,
            )
            if lr_now < lr_before:
                yield Warning(
                    kind="lr_decay",
                    message=f"validation plateau: learning rate {lr_before:.2g} -> {lr_now:.2g}",
                    epoch=epoch,
                )
            if len(history) >= 2 and math.isfinite(val_loss):
                prev = history[-2]
                if val_loss > prev["val_loss"] and train_loss <= prev["train_loss"]:
                    overfit_run += 1
                else:
                    overfit_run, overfit_warned = 0, False
                if overfit_run >= overfit_patience and not overfit_warned:
                    overfit_warned = True
                    yield Warning(
                        kind="overfitting",
                        message=f"validation loss rose for {overfit_run} epochs while training "
                        "loss fell: the model is overfitting (more labels, more augmentation "
                        "or earlier stopping help)",
                        epoch=epoch,
                    )
            if ckdir is not None:
                yield from _checkpoint(
                    ckdir,
                    model,
                    best_state,
                    opt,
                    epoch,
                    improved,
                    {
                        "epoch": epoch,
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "history": history,
                        "monitor": monitor,
                    },
                )
            pv = run_preview(epoch, -1)
            if pv is not None:
                yield pv
            if early_stopping is not None and bad_epochs >= early_stopping:
                reason = "early_stopping"
                break
            if max_time is not None and time.perf_counter() - t_start > max_time:
                reason = "time_limit"
                break
            if stopped():
                reason = "cancelled"
                break
    except GeneratorExit:
        reason = "cancelled"
        _restore(
            model,
            best_state,
            val_loader is not None or reason == "diverged",
            orig_device,
            orig_training,
        )
        raise
    except BaseException:
        _restore(model, best_state, True, orig_device, orig_training)
        raise
    keep_best = val_loader is not None or reason == "diverged"
    _restore(model, best_state, keep_best, orig_device, orig_training)
    yield Finished(
        reason=reason,
        best_epoch=best_epoch,
        best_score=float(best_score),
        epochs_run=len(history),
        history=history,
    )


def _restore(
    model: nn.Module,
    best_state: dict[str, torch.Tensor],
    use_best: bool,
    device: torch.device,
    training: bool,
) -> None:
    if use_best and best_state:
        model.load_state_dict(best_state)
    model.to(device, memory_format=torch.contiguous_format)
    model.train(training)


def _evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    loss_fn: LossFn,
    metrics: Callable | None,
    dev: torch.device,
    autocast: Callable,
    channels_last: bool = False,
) -> tuple[float, dict[str, float]]:
    model.eval()
    total, count = 0.0, 0
    outs: list[torch.Tensor] = []
    tgts: list[torch.Tensor] = []
    with torch.inference_mode():
        for x, y in loader:
            x, y = _to_device(x, dev, channels_last), _to_device(y, dev)
            with autocast():
                out = _forward(model, x).float()
            bs = _batch_size_of(x)
            total += float(loss_fn(out, y)) * bs
            count += bs
            if metrics is not None:
                outs.append(out.cpu())
                tgts.append(y.cpu())
    model.train()
    mets = {k: float(v) for k, v in metrics(outs, tgts).items()} if metrics is not None else {}
    return total / max(count, 1), mets


def _checkpoint(
    ckdir: Path,
    model: nn.Module,
    best_state: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    epoch: int,
    improved: bool,
    state: dict,
) -> Iterator[TrainEvent]:
    _save_safetensors(_state_to_cpu(model), ckdir / "last.safetensors")
    tensors, opt_meta = _optimizer_tensors(opt)
    _save_safetensors(tensors, ckdir / "optimizer.safetensors")
    tmp = ckdir / "trainer_state.json.tmp"
    tmp.write_text(json.dumps({**state, "optimizer": opt_meta}, default=float))
    tmp.replace(ckdir / "trainer_state.json")
    yield Checkpoint(path=str(ckdir / "last.safetensors"), kind="last", epoch=epoch)
    if improved:
        _save_safetensors(best_state, ckdir / "best.safetensors")
        yield Checkpoint(path=str(ckdir / "best.safetensors"), kind="best", epoch=epoch)


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


def accuracy_metric(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Accuracy over labelled positions (targets ``>= 0``), for ``metrics=``."""
    correct, n = 0, 0
    for o, t in zip(outs, tgts):
        pred = o.argmax(1)
        m = t >= 0
        correct += int((pred[m] == t[m]).sum())
        n += int(m.sum())
    return {"accuracy": correct / max(n, 1)}
