"""The sequence task: train or fine-tune a DNA CNN (DeepBind / Basset) with the shared engine.

What the ``train sequence`` command and the Genome view call; both build the
same :class:`SequenceConfig`::

    seqs, y, tasks = table_training_data("peaks.seq.gz", negatives="dinucleotide-shuffle")
    config = SequenceConfig(arch="deepbind", epochs=20).validate()
    task = SequenceTask(seqs, y, task_names=tasks, config=config)
    for event in task.fit():
        ...
    task.save("model_dir")

Training uses :func:`napari_dlcb.training.engine.fit` with a masked binary
cross-entropy (NaN targets are ignored, so multitask tables may have gaps),
Adam, learning-rate decay on plateau, early stopping on the validation loss,
and reverse-complement augmentation. Predictions (see
:mod:`napari_dlcb.inference.sequence`) average both strands.

Small data (fewer than 5,000 rows, no explicit validation rows) trains K = 5
members by k-fold cross-validation and saves their ensemble
(:mod:`napari_dlcb.tasks.sequence_kfold`; ``folds=1`` trains one model).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.onehot import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import (
    check_sequence_length,
    load_sequence_model,
    predict_sequences,
)
from napari_dlcb.models.dna import ARCHITECTURES, build_dna_model
from napari_dlcb.models.ensemble import Ensemble, member_architecture
from napari_dlcb.models.saved import ModelMeta, save_model
from napari_dlcb.tasks.base import Task
from napari_dlcb.tasks.sequence_config import TASK_TYPES, SequenceConfig
from napari_dlcb.tasks.sequence_data import (
    NEGATIVES,
    OneHotDataset,
    bed_training_data,
    table_training_data,
)
from napari_dlcb.tasks.sequence_kfold import fit_folds, fold_splits, resolve_folds
from napari_dlcb.training.events import TrainEvent

__all__ = [
    "NEGATIVES",
    "TASK_TYPES",
    "OneHotDataset",
    "SequenceConfig",
    "SequenceTask",
    "SequenceTrainer",
    "bed_training_data",
    "table_training_data",
    "train_on_peaks",
]


def _task_type(y: np.ndarray, requested: str) -> str:
    finite = y[np.isfinite(y)]
    binary = bool(np.isin(finite, (0.0, 1.0)).all())
    if requested == "auto":
        return "binary" if binary else "regression"
    if requested == "binary" and not binary:
        raise DlcbError(
            "binary tasks need labels 0 or 1 (NaN = unlabelled); these have other values - "
            "use task_type='regression' for a signal such as a bigWig mean"
        )
    if requested not in ("binary", "regression"):
        raise DlcbError(f"task_type must be auto, binary or regression, not {requested!r}")
    return requested


class SequenceTask(Task):
    """Train or fine-tune a DNA CNN on one-hot windows with the shared engine.

    Parameters
    ----------
    seqs : list of str or numpy.ndarray
        Training sequences (equal length) or their one-hot ``(N, 4, L)``.
    y : numpy.ndarray
        ``(N, T)`` labels; NaN = unlabelled. Binary tasks (0/1) train with
        binary cross-entropy and report AUROC; other values (e.g. a bigWig
        mean) make a regression model: targets are standardised with the
        training rows' mean and SD only (k-fold: all rows, one scale shared by
        the members), the loss is MSE and the metric Pearson's r.
    task_names : list of str, optional
        One name per label column.
    config : SequenceConfig, optional
        Every option (defaults: ``SequenceConfig()``).
    val_index : array of int, optional
        Explicit validation rows (e.g. a held-out chromosome); the default
        rule then trains one model (no k-fold).
    trained_on : str, optional
        Where the data came from, kept in the model's metadata (``extra["trained_on"]``).
    **options
        Any :class:`SequenceConfig` field, overriding ``config``
        (``arch="basset"``, ``device="cpu"``, ...).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> seqs = ["".join(rng.choice(list("ACGT"), 30)) for _ in range(40)]
    >>> y = np.array([[s.count("GATA") > 0] for s in seqs], np.float32)
    >>> t = SequenceTask(seqs, y, model_kwargs={"filters": 4, "kernel_size": 5, "hidden": 0}, folds=1)
    >>> t.run(epochs=1).epochs_run
    1
    """

    kind: ClassVar[str] = "sequence"

    def __init__(
        self,
        seqs: Sequence[str] | np.ndarray,
        y: np.ndarray,
        *,
        task_names: Sequence[str] | None = None,
        config: SequenceConfig | None = None,
        val_index: np.ndarray | None = None,
        trained_on: str | None = None,
        **options: Any,
    ):
        cfg = (config or SequenceConfig()).replace(**options) if options else config
        self.config = (cfg or SequenceConfig()).validate()
        x = seqs if isinstance(seqs, np.ndarray) else one_hot(list(seqs))
        y = np.asarray(y, np.float32)
        if y.ndim == 1:
            y = y[:, None]
        if len(x) != len(y):
            raise DlcbError(f"{len(x)} sequences but {len(y)} label rows")
        if len(x) < 4:
            raise DlcbError(f"need at least 4 labelled sequences to train, got {len(x)}")
        T = y.shape[1]
        self.task_names = (
            list(task_names) if task_names is not None else [f"task{i}" for i in range(T)]
        )
        if len(self.task_names) != T:
            raise DlcbError(f"{len(self.task_names)} task names for {T} label columns")
        self.length = L = x.shape[2]
        self.folds = resolve_folds(
            self.config.folds,
            len(x),
            val_index is not None,
            distributed=int(os.environ.get("WORLD_SIZE", "1") or 1) > 1,
        )
        self.model, self.architecture, parent = self._build_model(L, self.config.seed)
        self.members: list[nn.Module] = []
        self.fold_index: list[tuple[np.ndarray, np.ndarray]] = []
        if self.folds > 1:  # k-fold: every row trains K-1 members and validates one
            self.fold_index = fold_splits(len(x), self.folds, self.config.seed)
            self.members = [self.model] + [
                self._build_model(L, self.config.seed + i)[0] for i in range(1, self.folds)
            ]
            self.train_index, self.val_index = np.arange(len(x)), np.arange(0)
        else:
            self.train_index, self.val_index = self._split(len(x), val_index)
        self.task_type = _task_type(y, self.config.task_type)
        y, target_extra = self._standardise(y)
        self._x, self._y = x, y
        self.train, self.val = self.fold_data(self.train_index, self.val_index)
        self.meta = ModelMeta(
            task="sequence",
            architecture=self.architecture,
            classes=self.task_names,
            input_axes="bcl",
            in_channels=4,
            output_activation="sigmoid" if self.task_type == "binary" else "none",
            parent=parent,
            extra={
                "task_type": self.task_type,
                **target_extra,
                "length": L,
                "alphabet": "ACGT",
                "ambiguous": "fractional",
                "rc_average": True,
                "n_train": int(len(self.train_index)),
                "n_val": int(len(self.val_index)),
                **({"trained_on": trained_on} if trained_on else {}),
            },
        )
        self.history: list[dict] = []
        if self.folds > 1:
            self.set_members(self.members)

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> str:
        """The device option (``"auto"``, ``"cpu"``...)."""
        return self.config.device

    @property
    def seed(self) -> int:
        """Seed of the split and of training."""
        return self.config.seed

    def fold_data(
        self, train_index: np.ndarray, val_index: np.ndarray
    ) -> tuple[OneHotDataset, OneHotDataset | None]:
        """The training and validation datasets of these rows (no validation set if none)."""
        x, y = self._x, self._y
        train = OneHotDataset(x[train_index], y[train_index], rc_augment=self.config.rc_augment)
        return train, (OneHotDataset(x[val_index], y[val_index]) if len(val_index) else None)

    def set_members(self, members: Sequence[nn.Module]) -> None:
        """Make the task's model the ensemble of ``members`` (one member: that network)."""
        member = member_architecture(self.architecture)
        if len(members) == 1:
            self.model, self.architecture = members[0], member
        else:
            combine = "probability" if self.task_type == "binary" else "mean"
            self.model = Ensemble.of(members, member, combine)
            self.architecture = self.model.architecture()
        self.meta.architecture = self.architecture

    def _build_model(self, L: int, seed: int) -> tuple[nn.Module, dict, str | None]:
        cfg = self.config
        if cfg.base is not None:
            base_model, base_meta = load_sequence_model(cfg.base, device="cpu")
            model, arch = _adapt_head(base_model, base_meta, self.task_names)
            parent = base_meta.extra.get("source", str(cfg.base))
        else:
            kwargs = dict(cfg.model_kwargs)
            if cfg.arch == "deepbind":
                kwargs = {**cfg.DEEPBIND_DEFAULTS, **kwargs}
            if cfg.arch in ("basset", "deepsea", "danq"):  # a flatten: one window length
                kwargs.setdefault("length", L)
            elif cfg.arch == "deepbind":
                kwargs["kernel_size"] = min(kwargs.get("kernel_size", 24), L)
            torch.manual_seed(seed)
            model = build_dna_model(cfg.arch, n_tasks=len(self.task_names), **kwargs)
            arch, parent = dict(model.config), None
        check_sequence_length(ModelMeta("sequence", arch, self.task_names), L)
        return model, arch, parent

    def _split(self, n: int, val_index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.config.seed)
        if val_index is None:
            frac = self.config.val_fraction
            n_val = max(1, int(round(frac * n))) if frac > 0 else 0
            perm = rng.permutation(n)
            val, train = perm[:n_val], perm[n_val:]
        else:
            val = np.asarray(val_index, int)
            train = np.setdiff1d(np.arange(n), val)
        return np.sort(train), np.sort(val)

    def _standardise(self, y: np.ndarray) -> tuple[np.ndarray, dict]:
        """Regression targets standardised with the training rows only (never validation's)."""
        if self.task_type != "regression":
            return y, {}
        with np.errstate(all="ignore"):
            mu = np.nanmean(y[self.train_index], axis=0)
            sd = np.nanstd(y[self.train_index], axis=0)
        mu = np.where(np.isfinite(mu), mu, 0.0).astype(np.float32)
        sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0).astype(np.float32)
        return (y - mu) / sd, {"target_mean": mu.tolist(), "target_std": sd.tolist()}

    # ------------------------------------------------------------------ Task
    def fit(self, *, stop: Any = None, **options: Any) -> Iterator[TrainEvent]:
        """Yield the engine's training events (see :func:`napari_dlcb.training.engine.fit`).

        With ``self.folds > 1`` the K members train one after another
        (:func:`napari_dlcb.tasks.sequence_kfold.fit_folds`): a
        ``Warning(kind="fold")`` before and after each, one ``Finished`` at the end.

        Parameters
        ----------
        stop : threading.Event, optional
            Ends training cleanly; the best scored weights are kept (k-fold:
            the members of the folds finished so far).
        **options
            :class:`SequenceConfig` fit options overriding the config for this
            run (``epochs``, ``lr``, ``batch_size``, ``weight_decay``,
            ``early_stopping``, ``lr_patience``, ``max_time``); anything else
            goes to the engine (``epoch_seconds=``, ``validate_start=``...).
        """
        if self.folds > 1:
            yield from fit_folds(self, stop=stop, **options)
            return
        yield from self.fit_one(
            self.model,
            self.train,
            self.val,
            seed=self.seed,
            stop=stop,
            options=options,
            record=self.meta.extra,
            history=self.history,
        )

    def fit_one(
        self,
        model: nn.Module,
        train: OneHotDataset,
        val: OneHotDataset | None,
        *,
        seed: int,
        stop: Any,
        options: dict[str, Any],
        record: dict,
        history: list[dict],
    ) -> Iterator[TrainEvent]:
        """Train one network on ``train`` (early stopping on ``val``); yield the events.

        ``record["training"]`` gets the run's summary (``record["pos_weight"]`` the
        positive-class weights, when used) and ``history`` one row
        per epoch; ``options`` as for :meth:`fit`.
        """
        from napari_dlcb.training.engine import fit
        from napari_dlcb.training.events import EpochEnd, Finished, Warning
        from napari_dlcb.training.losses import balancing_weights, masked_mse, weighted_bce
        from napari_dlcb.training.metrics import binary_metrics, pearson_metric

        options = dict(options)
        mine = self.config.fit_options()
        ours = {k: options.pop(k) for k in list(options) if k in mine}
        run = self.config.replace(**ours) if ours else self.config
        opts = run.fit_options()
        patience = opts.pop("early_stopping")
        binary = self.task_type == "binary"
        pos_weight = balancing_weights(train.y.numpy()) if binary else None
        loss = masked_mse if not binary else "bce"
        if pos_weight is not None:  # rare positives: weight them (issue 10), and say so
            loss = weighted_bce(pos_weight)
            record["pos_weight"] = [round(float(w), 3) for w in pos_weight]
            self.meta.extra["pos_weight"] = record["pos_weight"]  # k-fold: replaced by the mean
        t0 = time.perf_counter()
        events = fit(
            model,
            train,
            val,
            loss=loss,
            metrics=binary_metrics if binary else pearson_metric,
            monitor="val_loss" if val is not None else "train_loss",
            early_stopping=patience if val is not None else None,
            device=self.config.device,
            seed=seed,
            stop=stop,
            **opts,
            **options,
        )
        if pos_weight is not None:
            w = ", ".join(f"{n} {x:.3g}" for n, x in zip(self.task_names, pos_weight, strict=True))
            yield Warning("class-weighting", f"rare positives: positive-class weight {w}")
        for ev in events:
            if isinstance(ev, EpochEnd):
                history.append(
                    {"epoch": ev.epoch, "train_loss": ev.train_loss, "val_loss": ev.val_loss}
                    | ev.metrics
                )
            if isinstance(ev, Finished):
                record["training"] = {
                    "reason": ev.reason,
                    "best_epoch": ev.best_epoch,
                    "best_score": ev.best_score,
                    "epochs_run": ev.epochs_run,
                    "kept": ev.kept,
                    "history": history,
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            yield ev

    def predict(self, data: Any, **options: Any) -> np.ndarray:
        """Probabilities (or regression values) ``(N, T)`` (see :func:`predict_sequences`)."""
        options.setdefault("device", self.config.device)
        return predict_sequences(self.model, data, meta=self.meta, **options)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model folder (metadata, safetensors, TorchScript ``model.pt``)."""
        example = torch.zeros(1, 4, self.length)
        example[:, 0] = 1
        return save_model(self.model, path, self.meta, example_input=example)


#: The name the CLI, scripts and earlier releases use.
SequenceTrainer = SequenceTask


def train_on_peaks(
    fasta: str | os.PathLike,
    bed: str | os.PathLike,
    *,
    config: SequenceConfig | None = None,
    window: int = 200,
    labels: str | Sequence[str] = "name",
    negatives: str = "dinucleotide-shuffle",
    outside: str = "error",
    stop: Any = None,
) -> Iterator[Any]:
    """Train on windows centred on BED peaks: yield the training events, then the task.

    The Genome view's Train: one task per BED name (``labels="name"``),
    dinucleotide-shuffled negatives. The last item is the
    :class:`SequenceTask`, also after Stop (it then holds the best weights
    scored so far), so a caller can keep and save what was learnt.

    Parameters
    ----------
    fasta, bed : path-like
        Genome and peaks.
    config : SequenceConfig, optional
        Training options (default ``SequenceConfig()``).
    window : int
        Window length in bp.
    labels, negatives, outside
        As for :func:`bed_training_data`.
    stop : threading.Event, optional
        Ends training cleanly.

    Yields
    ------
    TrainEvent, then SequenceTask
    """
    seqs, y, tasks, _ = bed_training_data(
        fasta, bed, window=window, labels=labels, negatives=negatives, outside=outside
    )
    source = f"{Path(bed).name} ({len(seqs)} windows of {window} bp, {negatives} negatives)"
    task = SequenceTask(seqs, y, task_names=tasks, config=config, trained_on=source)
    yield from task.fit(stop=stop)
    yield task


def _adapt_head(
    model: nn.Module, meta: ModelMeta, task_names: Sequence[str]
) -> tuple[nn.Module, dict]:
    """Give a base model one output per task in ``task_names``, keeping its body.

    The read-out rows of tasks the base model already has (same name, case
    insensitive) are copied, so fine-tuning "GATA3" from a model with a "GATA3"
    task starts from what it knows; other tasks get a fresh read-out row.
    """
    arch = dict(meta.architecture)
    if arch.get("name") not in ARCHITECTURES:
        raise DlcbError(
            f"cannot fine-tune a {arch.get('name')!r} model: only {', '.join(ARCHITECTURES)}"
        )
    base_names = [str(c).upper() for c in meta.classes]
    if [t.upper() for t in task_names] == base_names:
        return model.train(), arch
    arch["n_tasks"] = len(task_names)
    new = build_dna_model(arch["name"], **{k: v for k, v in arch.items() if k != "name"})
    state = dict(model.state_dict())
    head = [n for n, m in new.named_modules() if isinstance(m, nn.Linear)][-1]
    old_w, old_b = state.get(head + ".weight"), state.get(head + ".bias")
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing, _ = new.load_state_dict(state, strict=False)
    if any(not k.startswith(head + ".") for k in missing):
        raise DlcbError("the base model's layers do not fit the requested architecture")
    lin = dict(new.named_modules())[head]
    if old_w is not None and old_w.shape[1] == lin.in_features:
        with torch.no_grad():
            for j, t in enumerate(task_names):
                if t.upper() in base_names:
                    lin.weight[j] = old_w[base_names.index(t.upper())]
                    lin.bias[j] = old_b[base_names.index(t.upper())]
    return new.train(), arch
