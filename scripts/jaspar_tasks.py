"""Planted JASPAR motifs as extra pretraining tasks for ``pretrain_dna_encode.py``.

One representative matrix per TF family of JASPAR 2024 CORE vertebrates (read
offline from pyjaspar's database: ``pip install "napari-dlcb[motifs-db]"``), and
rows of dinucleotide-shuffled peaks with 1-2 sampled sites (positives) or none
(negatives) for each. Only the pretraining script uses it.
"""

from __future__ import annotations

import numpy as np

from napari_dlcb.data.dna import shuffled_negatives
from napari_dlcb.data.onehot import sample_motif

__all__ = ["jaspar_library", "motif_rows"]


def jaspar_library(exclude: tuple[str, ...] = ()) -> list[tuple[str, np.ndarray]]:
    """One representative matrix per TF family of JASPAR 2024 CORE vertebrates.

    Latest version of each matrix; heterodimers (``A::B``) and matrices with no or
    several family annotations are left out, and so is every matrix whose TF name is in
    ``exclude`` (case-insensitive; other members of its family stay). Per family the
    representative is a ChIP-seq matrix if the family has one, 6-20 bp wide, with the
    highest information content (ties: lowest matrix ID). Returns ``(task name, counts
    (4, width))`` in family order; the task name is ``"JASPAR:<family>:<TF>"``.
    """
    from pyjaspar import jaspardb

    found = jaspardb(release="JASPAR2024").fetch_motifs(
        collection="CORE", tax_group=["vertebrates"], all_versions=False
    )
    drop = {e.upper() for e in exclude}
    families: dict[str, list] = {}
    for m in found:
        if "::" in m.name or len(m.tf_family) != 1 or m.name.upper() in drop:
            continue
        counts = np.array([m.counts[b] for b in "ACGT"], float)
        if not 6 <= counts.shape[1] <= 20:
            continue
        p = (counts + 0.1) / (counts + 0.1).sum(0)
        ic = float((2 + (p * np.log2(p)).sum(0)).sum())
        chip = str(getattr(m, "data_type", "")).upper().startswith("CHIP")
        families.setdefault(m.tf_family[0], []).append((chip, round(ic, 6), m.matrix_id, m, counts))
    out = []
    for fam in sorted(families):
        chip, _, _, m, counts = max(families[fam], key=lambda t: (t[0], t[1], _neg_id(t[2])))
        out.append((f"JASPAR:{fam}:{m.name}", counts))
    return out


def _neg_id(matrix_id: str) -> tuple[int, int]:
    """Sort key that prefers the lowest matrix ID under ``max``."""
    base, _, version = matrix_id[2:].partition(".")
    return (-int(base), -int(version or 0))


def motif_rows(
    motifs: list[tuple[str, np.ndarray]],
    pool: list[str],
    n_tasks_before: int,
    *,
    per_task: int,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """Planted-motif rows: per motif, ``per_task`` backgrounds with 1-2 sites (1) and without (0).

    Backgrounds are dinucleotide shuffles of peaks drawn from ``pool``; a site is drawn
    from the matrix, put on a random strand at a random position (sites may overlap).
    Columns: the ``n_tasks_before`` earlier tasks, then one per motif; NaN everywhere but
    the row's own motif column.
    """
    rng = np.random.default_rng(10_000 + seed)
    n_cols = n_tasks_before + len(motifs)
    seqs: list[str] = []
    rows = []
    for k, (_, counts) in enumerate(motifs):
        picks = [pool[i] for i in rng.choice(len(pool), per_task, replace=False)]
        backs = shuffled_negatives(picks, seed=int(rng.integers(2**31)))
        w = counts.shape[1]
        for b in backs:
            s = b
            for _ in range(int(rng.integers(1, 3))):
                site = sample_motif(counts, rng=rng)
                if rng.random() < 0.5:
                    site = site[::-1].translate(_COMPLEMENT)
                at = int(rng.integers(0, len(s) - w + 1))
                s = s[:at] + site + s[at + w :]
            seqs += [s, b]
        lab = np.full((2 * per_task, n_cols), np.nan, np.float32)
        lab[0::2, n_tasks_before + k] = 1.0
        lab[1::2, n_tasks_before + k] = 0.0
        rows.append(lab)
    return seqs, np.concatenate(rows)


_COMPLEMENT = str.maketrans("ACGT", "TGCA")
