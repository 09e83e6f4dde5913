"""Write the JASPAR 2024 CORE vertebrate motifs shipped in the package as one MEME file.

napari-dlcb matches filter motifs against these (``--database jaspar``, the
Genome view's Filter motifs) and scans for them, without a network and without
the 38-MB ``pyjaspar`` package at run time. This script makes the file from
pyjaspar's offline database, deterministically (motifs in matrix-ID order,
probabilities rounded to 4 decimals), so that anyone can check or refresh it::

    pip install "napari-dlcb[motifs-db]"      # pyjaspar, only for this script
    python scripts/make_jaspar_meme.py [--out napari_dlcb/data_files/...]

Each motif is ``MOTIF <matrix ID> <TF name>`` with its letter-probability
matrix (A, C, G, T), ``nsites=`` the number of sites JASPAR counted, and the
JASPAR page as its URL. JASPAR is CC BY 4.0 (Rauluseviciute et al., NAR 2024).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "napari_dlcb" / "data_files" / "jaspar2024_core_vertebrates.meme"
HEADER = """MEME version 4

ALPHABET= ACGT

strands: + -

Background letter frequencies
A 0.25 C 0.25 G 0.25 T 0.25

"""


def motifs(tax_group: str = "vertebrates") -> list[tuple[str, str, np.ndarray]]:
    """``(matrix_id, name, counts (4, w))`` of the latest version of every CORE motif."""
    from pyjaspar import jaspardb

    db = jaspardb(release="JASPAR2024")
    found = db.fetch_motifs(collection="CORE", tax_group=[tax_group], all_versions=False)
    out = [(m.matrix_id, m.name, np.array([m.counts[b] for b in "ACGT"], float)) for m in found]
    return sorted(out, key=lambda t: t[0])


def meme_text(entries: list[tuple[str, str, np.ndarray]]) -> str:
    """The MEME file for ``entries``."""
    lines = [HEADER.rstrip("\n"), ""]
    for mid, name, counts in entries:
        total = counts.sum(0)
        prob = counts / np.maximum(total, 1e-12)
        nsites = int(round(float(total.max())))
        lines.append(f"MOTIF {mid} {name.replace(' ', '_')}")
        lines.append(
            f"letter-probability matrix: alength= 4 w= {counts.shape[1]} nsites= {nsites} E= 0"
        )
        lines += [" ".join(f"{v:.4f}" for v in col) for col in prob.T]
        lines.append(f"URL https://jaspar.elixir.no/matrix/{mid}/")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tax-group", default="vertebrates")
    args = ap.parse_args()
    entries = motifs(args.tax_group)
    text = meme_text(entries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    print(f"wrote {len(entries)} motifs to {args.out} ({len(text) / 1e3:.0f} kB, sha256 {digest})")


if __name__ == "__main__":
    main()
