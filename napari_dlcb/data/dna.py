"""DNA data in one import: one-hot encoding (:mod:`~napari_dlcb.data.onehot`) and training windows (:mod:`~napari_dlcb.data.dna_windows`).

One-hot arrays are float32 ``(N, 4, L)`` with channels in A, C, G, T order;
ambiguity codes are fractions of the bases they stand for (see
:func:`~napari_dlcb.data.onehot.one_hot`). No torch here.
"""

from __future__ import annotations

from napari_dlcb.data.dna_windows import (
    flank_negatives,
    gc_matched_background,
    kfold_indices,
    read_sequence_table,
    split_by_chromosome,
    windows_from_bed,
)
from napari_dlcb.data.onehot import (
    ALPHABET,
    IUPAC,
    decode,
    dinucleotide_counts,
    dinucleotide_shuffle,
    gc_content,
    one_hot,
    random_dna,
    reverse_complement,
    reverse_complement_str,
    sample_motif,
    shuffled_negatives,
)

__all__ = [
    "ALPHABET",
    "IUPAC",
    "decode",
    "dinucleotide_counts",
    "dinucleotide_shuffle",
    "flank_negatives",
    "gc_content",
    "gc_matched_background",
    "kfold_indices",
    "one_hot",
    "random_dna",
    "read_sequence_table",
    "sample_motif",
    "reverse_complement",
    "reverse_complement_str",
    "shuffled_negatives",
    "split_by_chromosome",
    "windows_from_bed",
]
