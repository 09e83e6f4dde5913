"""Training data for DNA models: sequence tables, windows centred on BED peaks, one-hot datasets.

What :class:`~napari_dlcb.tasks.sequence.SequenceTask` trains on::

    seqs, y, tasks = table_training_data("peaks.seq.gz", negatives="dinucleotide-shuffle")
    seqs, y, tasks, chroms = bed_training_data("genome.fa", "peaks.bed", window=200)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from napari_dlcb.data.dna_windows import (
    flank_negatives,
    gc_matched_background,
    read_sequence_table,
    windows_from_bed,
)
from napari_dlcb.data.onehot import shuffled_negatives
from napari_dlcb.errors import DlcbError

__all__ = ["NEGATIVES", "OneHotDataset", "bed_training_data", "table_training_data"]

NEGATIVES = ("none", "dinucleotide-shuffle", "gc-matched", "flanks")


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
    _check_labels(y, label_columns, Path(path).name)
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
    outside: str = "error",
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
    outside : {"error", "drop"}
        Peaks the FASTA does not hold (e.g. a FASTA of one region): an error
        naming the line, or left out.

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
    peaks = read_bed(bed, genome=genome, outside=outside)
    if not len(peaks):
        raise DlcbError(f"none of the intervals of {Path(bed).name} lies in {Path(fasta).name}")
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


def _check_labels(y: np.ndarray, columns: Sequence[str], name: str) -> None:
    """Refuse infinite labels and a label column that is NaN (unlabelled) throughout."""
    if np.isinf(y).any():
        raise DlcbError(f"{name}: infinite labels in {', '.join(columns)}; labels must be finite")
    empty = [str(c) for c, col in zip(columns, y.T, strict=True) if np.isnan(col).all()]
    if empty:
        raise DlcbError(
            f"{name}: every label of {', '.join(empty)} is NaN (unlabelled); nothing to learn from"
        )
