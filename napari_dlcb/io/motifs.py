"""Motif files: the :class:`Motif` type, HOCOMOCO/JASPAR PCM and MEME files, the bundled JASPAR 2024.

The JASPAR 2024 CORE vertebrate motifs ship in the package as a MEME file
(``napari_dlcb/data_files/jaspar2024_core_vertebrates.meme``, made by
``scripts/make_jaspar_meme.py`` from pyjaspar's offline database; JASPAR is
CC BY 4.0). MEME files are read with memelite's reader, the one its TOMTOM and
FIMO use. No torch here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["JASPAR_MEME", "Motif", "load_motif_database", "read_motif_file", "write_meme"]

#: the bundled JASPAR 2024 CORE vertebrates (879 motifs), MEME format
JASPAR_MEME = (
    Path(__file__).resolve().parents[1] / "data_files" / "jaspar2024_core_vertebrates.meme"
)
_NSITES = re.compile(r"\bnsites=\s*([0-9.eE+-]+)")


@dataclass
class Motif:
    """A DNA motif as a position count matrix ``counts`` of shape ``(4, width)`` (A, C, G, T)."""

    name: str
    counts: np.ndarray
    n_sites: int = 0
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        """Number of positions."""
        return int(self.counts.shape[1])

    def probabilities(self, pseudocount: float = 0.1) -> np.ndarray:
        """Column-normalised probabilities with a small pseudocount."""
        c = np.asarray(self.counts, float)
        total = c.sum(0, keepdims=True)
        p = (c + pseudocount * np.maximum(total, 1) / 100) / (
            total + 4 * pseudocount * np.maximum(total, 1) / 100
        )
        p[:, total[0] == 0] = 0.25
        return p

    def information(self) -> np.ndarray:
        """Information content per position in bits."""
        p = self.probabilities()
        return 2 + (p * np.log2(p)).sum(0)

    def consensus(self) -> str:
        """The most likely base at each position (``N`` where no base passes 0.5 and IC < 0.5 bits)."""
        p = self.probabilities()
        ic = self.information()
        return "".join(
            "ACGT"[i] if (p[i, j] >= 0.5 or ic[j] >= 0.5) else "N"
            for j, i in enumerate(p.argmax(0))
        )

    def trimmed(self, min_ic: float = 0.3) -> Motif:
        """Drop low-information flanks."""
        ic = self.information()
        keep = np.flatnonzero(ic >= min_ic)
        if len(keep) == 0:
            return self
        return Motif(
            self.name, self.counts[:, keep[0] : keep[-1] + 1], self.n_sites, dict(self.info)
        )


def read_motif_file(path: str | os.PathLike) -> list[Motif]:
    r"""Read motifs from a HOCOMOCO/JASPAR-style PCM file (``>NAME`` + rows of A C G T) or MEME text.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.txt"
    >>> _ = p.write_text(">GATA\n0 0 10 0\n10 0 0 0\n0 0 0 10\n10 0 0 0\n")
    >>> read_motif_file(p)[0].consensus()
    'GATA'
    """
    p = Path(path)
    if not p.is_file():
        raise DlcbError(f"motif file not found: {p}")
    text = p.read_text(errors="replace")
    if not text.strip():
        raise DlcbError(f"motif file is empty: {p}")
    if text.lstrip().startswith("MEME version"):
        return _read_meme(text, p)
    motifs: list[Motif] = []
    name, rows = None, []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            if name is not None and rows:
                motifs.append(Motif(name, np.array(rows, float).T))
            name, rows = line[1:].split()[0], []
            continue
        vals = line.replace("[", " ").replace("]", " ").split()
        try:
            nums = [float(v) for v in vals if v not in "ACGT"]
        except ValueError as err:
            raise DlcbError(f"{p.name}: line {lineno} is not a row of 4 numbers") from err
        if len(nums) != 4 or name is None:
            raise DlcbError(f"{p.name}: line {lineno} is not a row of 4 numbers (A C G T)")
        rows.append(nums)
    if name is not None and rows:
        motifs.append(Motif(name, np.array(rows, float).T))
    if not motifs:
        raise DlcbError(f"{p.name}: no motifs found")
    return motifs


def _read_meme(text: str, p: Path) -> list[Motif]:
    """MEME motifs through memelite's reader; counts = probabilities x ``nsites`` (20 if absent)."""
    from memelite.io import read_meme

    try:
        pwms = read_meme(str(p))
    except (ValueError, AttributeError, IndexError) as err:
        raise DlcbError(f"{p.name}: not a readable MEME file ({err})") from err
    if not pwms:
        raise DlcbError(f"{p.name}: no MOTIF entries found")
    nsites = [float(m) for m in _NSITES.findall(text)]
    if len(nsites) != len(pwms):  # some motif without nsites=: all get the default
        nsites = [20.0] * len(pwms)
    motifs = []
    for (name, pwm), n in zip(pwms.items(), nsites):
        if pwm.shape[0] != 4 or not np.isfinite(pwm).all():
            raise DlcbError(f"{p.name}: motif {name} is not a 4-letter (A C G T) matrix")
        motifs.append(Motif(name, np.asarray(pwm, float) * max(n, 1.0), int(n)))
    return motifs


def load_motif_database(source: str = "jaspar", *, tax_group: str = "vertebrates") -> list[Motif]:
    """Known motifs: ``"jaspar"`` (the bundled JASPAR 2024 CORE vertebrates) or a motif file.

    Parameters
    ----------
    source : str
        ``"jaspar"`` or a path (HOCOMOCO/JASPAR PCM or MEME; see
        :func:`read_motif_file`).
    tax_group : str
        JASPAR taxonomic group; only ``"vertebrates"`` is bundled (make a
        MEME file of another group with ``scripts/make_jaspar_meme.py
        --tax-group plants`` and pass its path).

    Returns
    -------
    list of Motif
        JASPAR motifs are named ``"<ID> <TF name>"``.

    Examples
    --------
    >>> db = load_motif_database("jaspar")
    >>> len(db), db[0].name
    (879, 'MA0002.3 Runx1')
    """
    if source != "jaspar":
        return read_motif_file(source)
    if tax_group != "vertebrates":
        raise DlcbError(
            f"only JASPAR CORE vertebrates are bundled, not {tax_group!r}: make a MEME file with "
            "scripts/make_jaspar_meme.py --tax-group ... and pass its path"
        )
    return read_motif_file(JASPAR_MEME)


def write_meme(motifs: list[Motif], path: str | os.PathLike) -> Path:
    """Write motifs in MEME minimal format (readable by TOMTOM, MEME suite and :func:`read_motif_file`)."""
    p = Path(path)
    lines = [
        "MEME version 4",
        "",
        "ALPHABET= ACGT",
        "",
        "strands: + -",
        "",
        "Background letter frequencies",
        "A 0.25 C 0.25 G 0.25 T 0.25",
        "",
    ]
    for m in motifs:
        pr = m.probabilities(0.0) if m.counts.sum() else np.full_like(m.counts, 0.25, dtype=float)
        lines.append(f"MOTIF {m.name}")
        lines.append(
            f"letter-probability matrix: alength= 4 w= {m.width} nsites= {max(m.n_sites, 1)} E= 0"
        )
        lines += [" ".join(f"{v:.4f}" for v in col) for col in pr.T]
        lines.append("")
    p.write_text("\n".join(lines))
    return p
