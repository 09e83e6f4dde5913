"""Train DNA sequence models (DeepBind / Basset) on tables or genome peaks, with the shared engine.

What the ``train sequence`` / ``predict sequence`` commands and the genome
widget call::

    seqs, y, tasks = table_training_data("peaks.seq.gz", negatives="dinucleotide-shuffle")
    trainer = SequenceTrainer(seqs, y, task_names=tasks, arch="deepbind")
    for event in trainer.fit(epochs=20):
        ...
    trainer.save("model_dir")

Training uses :func:`napari_dlcb.training.engine.fit` with a masked binary
cross-entropy (NaN targets are ignored, so multitask tables may have gaps),
Adam, learning-rate decay on plateau, early stopping on the validation loss,
and reverse-complement augmentation. Predictions average the forward and the
reverse-complement strand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.dna import (
    flank_negatives,
    gc_matched_background,
    one_hot,
    read_sequence_table,
    shuffled_negatives,
    windows_from_bed,
)
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.dna import ARCHITECTURES, build_dna_model
from napari_dlcb.models.saved import ModelMeta, load_model, save_model
from napari_dlcb.training.events import TrainEvent

__all__ = [
    "NEGATIVES",
    "OneHotDataset",
    "SequenceTrainer",
    "auroc",
    "auroc_metric",
    "bed_training_data",
    "load_sequence_model",
    "predict_region",
    "predict_sequences",
    "table_training_data",
]

NEGATIVES = ("none", "dinucleotide-shuffle", "gc-matched", "flanks")


# --------------------------------------------------------------------------- data
def table_training_data(
    path: str | os.PathLike,
    *,
    sequence_column: str = "seq",
    label_columns: Sequence[str] | None = None,
    negatives: str = "none",
    seed: int = 0,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Sequences and labels from a table, optionally adding dinucleotide-shuffled negatives.

    Parameters
    ----------
    path : path-like
        TSV/CSV table (gzip ok).
    sequence_column : str
        Column with the sequences.
    label_columns : sequence of str, optional
        Label columns (default ``["Bound"]`` if present, else every numeric column).
    negatives : {"none", "dinucleotide-shuffle"}
        ``"dinucleotide-shuffle"`` adds one shuffled copy of every sequence,
        labelled 0 for every task (DeepBind's protocol for positive-only data).
    seed : int
        Seed of the shuffles.

    Returns
    -------
    seqs : list of str
    y : numpy.ndarray
        ``(N, T)`` float32, NaN = unlabelled.
    task_names : list of str
    """
    if negatives not in ("none", "dinucleotide-shuffle"):
        raise DlcbError(
            f"a table supports --negatives none or dinucleotide-shuffle, not {negatives!r}"
        )
    df = read_sequence_table(path, sequence_column=sequence_column)
    if label_columns is None:
        if "Bound" in df:
            label_columns = ["Bound"]
        else:
            label_columns = [
                c
                for c in df.columns
                if c != sequence_column and np.issubdtype(df[c].dtype, np.number)
            ]
        if not label_columns:
            raise DlcbError(
                f"{Path(path).name}: no numeric label column found; pass --label-columns"
            )
    df = read_sequence_table(path, sequence_column=sequence_column, label_columns=label_columns)
    seqs = df[sequence_column].astype(str).tolist()
    y = df[list(label_columns)].to_numpy(np.float32)
    if negatives == "dinucleotide-shuffle":
        neg = shuffled_negatives(seqs, seed=seed)
        seqs = seqs + neg
        y = np.concatenate([y, np.zeros((len(neg), y.shape[1]), np.float32)])
    labelled = y[~np.isnan(y)]
    if labelled.size and len(np.unique(labelled)) < 2:
        raise DlcbError(
            f"{Path(path).name}: every label is {labelled[0]:g}; add negatives (--negatives dinucleotide-shuffle)"
        )
    return seqs, y, [str(c) for c in label_columns]


def bed_training_data(
    fasta: str | os.PathLike,
    bed: str | os.PathLike,
    *,
    window: int = 1000,
    negatives: str = "dinucleotide-shuffle",
    labels: str | Sequence[str] = "membership",
    tracks: Sequence[str | os.PathLike] = (),
    seed: int = 0,
) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """Windows centred on BED peaks, labelled, plus negatives.

    Parameters
    ----------
    fasta, bed : path-like
        Genome and peaks (peaks are checked against the genome).
    window : int
        Window length in bp.
    negatives : {"dinucleotide-shuffle", "gc-matched", "flanks", "none"}
        How negatives are made (labelled 0 for every task).
    labels : "membership", "name" or list of BED columns
        See :func:`napari_dlcb.data.dna.windows_from_bed`.
    tracks : list of path-like
        bigWig / bedGraph files: one more task per track, the mean signal over
        each window (a regression target). Negatives then need a genomic
        origin ("flanks", "gc-matched" or "none"), so that their signal can be
        read too.
    seed : int
        Seed for shuffles and background sampling.

    Returns
    -------
    seqs, y, task_names, chroms
        ``chroms`` names each window's chromosome (for hold-out splits).
    """
    from napari_dlcb.io.genome import open_track, read_bed, read_fasta

    if negatives not in NEGATIVES:
        raise DlcbError(f"--negatives must be one of {', '.join(NEGATIVES)}, not {negatives!r}")
    if tracks and negatives == "dinucleotide-shuffle":
        raise DlcbError(
            "signal-track labels need negatives from the genome (flanks, gc-matched or none), "
            "not shuffled sequences, whose signal is unknown"
        )
    genome = read_fasta(fasta)
    peaks = read_bed(bed, genome=genome)
    opened = [open_track(t) for t in tracks]
    seqs, y, info = windows_from_bed(genome, peaks, window=window, labels=labels, tracks=opened)
    n_bed = y.shape[1] - len(opened)
    chroms = info["chrom"].tolist()
    neg: list[str] = []
    neg_chroms: list[str] = []
    if negatives == "dinucleotide-shuffle":
        neg = shuffled_negatives(seqs, seed=seed)
        neg_chroms = list(chroms)
    elif negatives == "gc-matched":
        neg, ninfo = gc_matched_background(genome, seqs, exclude=info, seed=seed)
        neg_chroms = ninfo["chrom"].tolist()
    elif negatives == "flanks":
        neg, ninfo = flank_negatives(genome, peaks, window=window, distance=3 * window)
        neg_chroms = ninfo["chrom"].tolist()
    y_neg = np.zeros((len(neg), y.shape[1]), np.float32)
    for k, tr in enumerate(opened if len(neg) else []):  # the negatives' own signal
        y_neg[:, n_bed + k] = [
            tr.mean(c, max(0, int(a)), int(b))
            for c, a, b in zip(ninfo["chrom"], ninfo["start"], ninfo["end"])
        ]
    y = np.concatenate([y, y_neg])
    return seqs + neg, y, info.attrs["task_names"], chroms + neg_chroms


class OneHotDataset(torch.utils.data.Dataset):
    """``(x, y)`` pairs from one-hot DNA, with random reverse-complement augmentation.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, 4, L)`` float32 one-hot.
    y : numpy.ndarray
        ``(N, T)`` float32 targets (NaN = unlabelled).
    rc_augment : bool
        Return the reverse complement (same label) with probability 0.5.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, rc_augment: bool = False):
        self.x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.ascontiguousarray(y, dtype=np.float32))
        self.rc_augment = rc_augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.rc_augment and torch.rand(()) < 0.5:
            x = x.flip(0, 1)
        return x, self.y[i]


# --------------------------------------------------------------------------- metrics
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent.

    Examples
    --------
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, float)
    lab = np.asarray(labels)
    ok = ~np.isnan(lab.astype(float))
    s, lab = s[ok], lab[ok] > 0.5
    n_pos, n_neg = int(lab.sum()), int((~lab).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[lab].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_metric(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean AUROC over tasks (binary labels), for the engine's ``metrics=``."""
    o = torch.cat(list(outs)).float().numpy()
    t = torch.cat(list(tgts)).float().numpy()
    if o.ndim == 1:
        o, t = o[:, None], t[:, None]
    vals = [auroc(o[:, j], t[:, j]) for j in range(o.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return {"auroc": float(np.mean(vals)) if vals else float("nan")}


def pearson_metric(outputs, targets) -> dict[str, float]:
    """Mean Pearson correlation over regression tasks (the engine's metrics hook)."""
    o = torch.cat([t.float() for t in outputs]).cpu().numpy()
    t = torch.cat([t.float() for t in targets]).cpu().numpy()
    if o.ndim == 1:
        o, t = o[:, None], t[:, None]
    vals = []
    for j in range(o.shape[1]):
        m = np.isfinite(t[:, j])
        if m.sum() > 2 and np.std(t[m, j]) > 0 and np.std(o[m, j]) > 0:
            vals.append(float(np.corrcoef(o[m, j], t[m, j])[0, 1]))
    return {"pearson": float(np.mean(vals)) if vals else float("nan")}


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite targets (NaN = unlabelled)."""
    m = torch.isfinite(target)
    diff = torch.where(m, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff**2).sum() / m.sum().clamp(min=1)


# --------------------------------------------------------------------------- model helpers
def _fixed_length(meta_or_config: dict) -> int | None:
    """Input length an architecture needs (Basset's flatten), or None for any length."""
    return int(meta_or_config["length"]) if meta_or_config.get("name") == "basset" else None


def load_sequence_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Load a saved (or built-in, ``"builtin[:name]"``) DNA model; refuse other tasks."""
    import napari_dlcb.models.dna  # noqa: F401 - registers the DNA architectures

    if isinstance(path, str) and (path == "builtin" or path.startswith("builtin:")):
        from napari_dlcb.models.registry import resolve_base

        model, meta = resolve_base(path, task="sequence", device=device)
    else:
        model, meta = load_model(path, device=device)
    if meta.task != "sequence":
        raise DlcbError(f"{path} is a {meta.task} model, not a DNA sequence model")
    return model, meta


def _check_length(meta: ModelMeta, L: int) -> None:
    need = _fixed_length(meta.architecture)
    if need is not None and need != L:
        raise DlcbError(f"the model takes {need} bp windows, but the sequences are {L} bp long")
    k = meta.architecture.get("kernel_size")
    if k is not None and L < int(k):
        raise DlcbError(f"sequences of {L} bp are shorter than the model's {k} bp filters")


@torch.no_grad()
def predict_sequences(
    model: nn.Module,
    x: np.ndarray | Sequence[str],
    *,
    meta: ModelMeta | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    rc_average: bool = True,
    activation: str = "sigmoid",
) -> np.ndarray:
    """Predict ``(N, T)`` probabilities for one-hot ``(N, 4, L)`` or strings.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, 4, L)`` to logits ``(B, T)``.
    x : numpy.ndarray or list of str
        Sequences (strings are one-hot encoded; equal lengths required).
    meta : ModelMeta, optional
        If given, the sequence length is checked against the model.
    batch_size : int
        Sequences per forward pass.
    device : str, optional
        Default: the model's device.
    rc_average : bool
        Average the logits of both strands.
    activation : {"sigmoid", "none"}
        Applied to the (averaged) logits. A regression model's ``meta``
        overrides it: outputs are mapped back to the label scale.

    Returns
    -------
    numpy.ndarray
        ``(N, T)`` float32: probabilities, or predicted values for a
        regression model.
    """
    from napari_dlcb.models.state import preserve_model_state

    if not isinstance(x, np.ndarray):
        x = one_hot(list(x))
    scale = None
    if meta is not None:
        _check_length(meta, x.shape[2])
        if meta.extra.get("task_type") == "regression":
            activation = "none"
            scale = (
                np.asarray(meta.extra["target_mean"], np.float32),
                np.asarray(meta.extra["target_std"], np.float32),
            )
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    outs = []
    with preserve_model_state(model):
        model.eval().to(dev)
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=dev)
            logit = model(xb)
            if rc_average:
                logit = (logit + model(xb.flip(1, 2))) / 2
            if logit.ndim == 1:
                logit = logit[:, None]
            outs.append(
                (torch.sigmoid(logit) if activation == "sigmoid" else logit).float().cpu().numpy()
            )
    if not outs:
        return np.zeros((0, 0), np.float32)
    out = np.concatenate(outs)
    if scale is not None:  # regression: back from the standardised training scale
        out = out * scale[1] + scale[0]
    return out


# --------------------------------------------------------------------------- trainer
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


class SequenceTrainer:
    """Train or fine-tune a DNA CNN on one-hot windows with the shared engine.

    Parameters
    ----------
    seqs : list of str or numpy.ndarray
        Training sequences (equal length) or their one-hot ``(N, 4, L)``.
    y : numpy.ndarray
        ``(N, T)`` labels; NaN = unlabelled. Binary tasks (0/1) train with
        binary cross-entropy and report AUROC; other values (e.g. a bigWig
        mean) make a regression model: targets are standardised with the
        training rows' mean and SD only, the loss is MSE and the metric
        Pearson's r.
    task_names : list of str, optional
        One name per label column.
    arch : {"deepbind", "basset"}
        Architecture when training from scratch.
    base : str or path, optional
        ``"builtin"``, ``"builtin:<name>"`` or a saved model folder to
        fine-tune; its read-out layer is replaced when the tasks differ.
    model_kwargs : dict, optional
        Extra architecture arguments (e.g. ``{"filters": 64}``).
    val_fraction : float
        Random validation fraction (ignored when ``val_index`` is given).
    val_index : array of int, optional
        Explicit validation rows (e.g. a held-out chromosome).
    rc_augment : bool
        Reverse-complement augmentation during training.
    seed : int
        Seed of the split and of training.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    task_type : {"auto", "binary", "regression"}
        ``"auto"``: binary when every finite label is 0 or 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> seqs = ["".join(rng.choice(list("ACGT"), 30)) for _ in range(40)]
    >>> y = np.array([[s.count("GATA") > 0] for s in seqs], np.float32)
    >>> t = SequenceTrainer(seqs, y, model_kwargs={"filters": 4, "kernel_size": 5, "hidden": 0})
    >>> from napari_dlcb.training.engine import fit_to_end
    >>> fit_to_end(t.fit(epochs=1)).epochs_run
    1
    """

    def __init__(
        self,
        seqs: Sequence[str] | np.ndarray,
        y: np.ndarray,
        *,
        task_names: Sequence[str] | None = None,
        arch: str = "deepbind",
        base: str | os.PathLike | None = None,
        model_kwargs: dict | None = None,
        val_fraction: float = 0.1,
        val_index: np.ndarray | None = None,
        rc_augment: bool = True,
        seed: int = 0,
        device: str = "auto",
        task_type: str = "auto",
    ):
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
        L = x.shape[2]
        self.device = device
        self.seed = seed
        self.rc_augment = rc_augment
        parent = None
        if base is not None:
            base_model, base_meta = load_sequence_model(base)
            self.model, self.architecture = _adapt_head(base_model, base_meta, self.task_names)
            parent = base_meta.extra.get("source", str(base))
            _check_length(ModelMeta("sequence", self.architecture, self.task_names), L)
        else:
            if arch not in ARCHITECTURES:
                raise DlcbError(
                    f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}"
                )
            kwargs = dict(model_kwargs or {})
            if arch == "basset":
                kwargs.setdefault("length", L)
            elif arch == "deepbind":
                kwargs["kernel_size"] = min(kwargs.get("kernel_size", 24), L)
            torch.manual_seed(seed)
            self.model = build_dna_model(arch, n_tasks=T, **kwargs)
            self.architecture = dict(self.model.config)
            _check_length(ModelMeta("sequence", self.architecture, self.task_names), L)
        rng = np.random.default_rng(seed)
        if val_index is None:
            n_val = max(1, int(round(val_fraction * len(x)))) if val_fraction > 0 else 0
            perm = rng.permutation(len(x))
            val_index, train_index = perm[:n_val], perm[n_val:]
        else:
            val_index = np.asarray(val_index, int)
            train_index = np.setdiff1d(np.arange(len(x)), val_index)
        self.train_index, self.val_index = np.sort(train_index), np.sort(val_index)
        self.task_type = _task_type(y, task_type)
        target_extra: dict = {}
        if self.task_type == "regression":
            # standardise with the training rows only (never validation or test statistics)
            with np.errstate(all="ignore"):
                mu = np.nanmean(y[self.train_index], axis=0)
                sd = np.nanstd(y[self.train_index], axis=0)
            mu = np.where(np.isfinite(mu), mu, 0.0).astype(np.float32)
            sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0).astype(np.float32)
            y = (y - mu) / sd
            target_extra = {"target_mean": mu.tolist(), "target_std": sd.tolist()}
        self.train = OneHotDataset(x[self.train_index], y[self.train_index], rc_augment=rc_augment)
        self.val = (
            OneHotDataset(x[self.val_index], y[self.val_index]) if len(self.val_index) else None
        )
        self.length = L
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
            },
        )
        self.history: list[dict] = []

    def fit(
        self,
        *,
        epochs: int = 20,
        lr: float = 1e-3,
        batch_size: int = 64,
        weight_decay: float = 1e-6,
        early_stopping: int | None = 4,
        lr_patience: int = 2,
        stop=None,
        max_time: float | None = None,
        **fit_kwargs,
    ) -> Iterator[TrainEvent]:
        """Yield the engine's training events (see :func:`napari_dlcb.training.engine.fit`)."""
        from napari_dlcb.training.engine import fit
        from napari_dlcb.training.events import EpochEnd, Finished

        events = fit(
            self.model,
            self.train,
            self.val,
            loss="bce" if self.task_type == "binary" else masked_mse,
            metrics=auroc_metric if self.task_type == "binary" else pearson_metric,
            monitor="val_loss" if self.val is not None else "train_loss",
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            early_stopping=early_stopping if self.val is not None else None,
            lr_patience=lr_patience,
            device=self.device,
            seed=self.seed,
            stop=stop,
            max_time=max_time,
            **fit_kwargs,
        )
        for ev in events:
            if isinstance(ev, EpochEnd):
                self.history.append(
                    {
                        "epoch": ev.epoch,
                        "train_loss": ev.train_loss,
                        "val_loss": ev.val_loss,
                        **ev.metrics,
                    }
                )
            if isinstance(ev, Finished):
                self.meta.extra["training"] = {
                    "reason": ev.reason,
                    "best_epoch": ev.best_epoch,
                    "epochs_run": ev.epochs_run,
                    "history": self.history,
                }
            yield ev

    def predict(self, x, **kwargs) -> np.ndarray:
        """Probabilities (or regression values) ``(N, T)`` (see :func:`predict_sequences`)."""
        return predict_sequences(self.model, x, meta=self.meta, **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model folder (metadata, safetensors, TorchScript ``model.pt``)."""
        example = torch.zeros(1, 4, self.length)
        example[:, 0] = 1
        return save_model(self.model, path, self.meta, example_input=example)


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


def predict_region(
    model: nn.Module,
    sequence: str,
    *,
    window: int = 200,
    step: int = 10,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    meta: ModelMeta | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted tracks along a sequence: windows of ``window`` bp every ``step`` bp.

    The region is padded with ``N`` by ``window // 2`` on both sides so every
    position gets a centred window.

    Returns
    -------
    centres : numpy.ndarray
        Window centres (0-based positions in ``sequence``).
    prob : numpy.ndarray
        ``(n_windows, T)`` probabilities (values for a regression ``meta``).

    Examples
    --------
    >>> from napari_dlcb.models.dna import DeepBind
    >>> c, p = predict_region(DeepBind(2, kernel_size=5), "ACGT" * 30, window=20, step=10)
    >>> c.tolist()[:3], p.shape
    ([0, 10, 20], (12, 2))
    """
    half = window // 2
    padded = "N" * half + sequence + "N" * (window - half)
    centres = np.arange(0, len(sequence), step)
    x = one_hot([padded[c : c + window] for c in centres])
    return centres, predict_sequences(model, x, batch_size=batch_size, device=device, meta=meta)
