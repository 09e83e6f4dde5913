"""Make the sample genome shipped in ``sample_data/genome/`` (deterministic, offline).

Two chromosomes (chrS1 30 kb, chrS2 20 kb) of random background (GC 0.42) into
which sites of real TF motifs (JASPAR 2024 CORE, via ``pyjaspar``: the same 8
TFs the built-in ``dna-multitask`` model knows) are planted in clusters.
Each cluster becomes a peak in ``peaks.bed`` (named by its TF); a ChIP-like
signal track ``signal.bw`` has a Gaussian bump per cluster plus noise; and
``variants.vcf`` holds SNVs, some inside planted sites (which break them), some
neutral, and one whose REF deliberately disagrees with the FASTA (to show how
mismatches are reported). The ground truth goes to ``planted_sites.tsv``.

Run: ``python scripts/make_genome_sample.py [--out sample_data/genome]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_dlcb.data.dna import random_dna, reverse_complement_str, sample_motif

ROOT = Path(__file__).resolve().parents[1]
CHROMS = {"chrS1": 30000, "chrS2": 20000}
SEED = 3


def build(out: Path) -> None:
    # One recipe read top to bottom (its steps share many locals): longer than
    # ~80 lines on purpose; splitting it would only hide the order of the steps.
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import pyBigWig
    from pretrain_dna import MOTIFS, jaspar_counts

    rng = np.random.default_rng(SEED)
    counts = jaspar_counts()
    names = [n for n, _ in MOTIFS]
    seqs = {c: list(random_dna(n, rng=rng)) for c, n in CHROMS.items()}
    sites, peaks = [], []
    for chrom, n in CHROMS.items():
        centres = np.arange(1500, n - 1000, 1250)
        for k, centre in enumerate(centres):
            tf = names[(k + (0 if chrom == "chrS1" else 3)) % len(names)]
            for j in range(3):  # 3 sites per cluster, 40 bp apart
                # a strong site: the best-scoring of 20 draws from the JASPAR matrix
                site = max(
                    (sample_motif(counts[tf], rng=rng) for _ in range(20)),
                    key=lambda s: _score(s, counts[tf]),
                )
                strand = "+" if rng.random() < 0.5 else "-"
                s = site if strand == "+" else reverse_complement_str(site)
                start = int(centre - 60 + 40 * j)
                seqs[chrom][start : start + len(s)] = s
                sites.append((chrom, start, start + len(s), tf, dict(MOTIFS)[tf], strand, s))
            peaks.append((chrom, int(centre - 100), int(centre + 100), tf, 1000, "."))
    out.mkdir(parents=True, exist_ok=True)
    fa = out / "sample_genome.fa"
    with open(fa, "w") as fh:
        for c, s in seqs.items():
            fh.write(f">{c} napari-dlcb sample genome\n")
            text = "".join(s)
            for i in range(0, len(text), 60):
                fh.write(text[i : i + 60] + "\n")
    with open(out / "peaks.bed", "w") as fh:
        fh.write("track name=peaks description='clusters of planted TF sites'\n")
        for p in peaks:
            fh.write("\t".join(map(str, p)) + "\n")
    with open(out / "planted_sites.tsv", "w") as fh:
        fh.write("chrom\tstart\tend\ttf\tjaspar_id\tstrand\tsite\n")
        for s in sites:
            fh.write("\t".join(map(str, s)) + "\n")
    bw = pyBigWig.open(str(out / "signal.bw"), "w")
    bw.addHeader(list(CHROMS.items()))
    for c, n in CHROMS.items():
        x = np.arange(0, n, 10)
        sig = rng.gamma(1.0, 0.3, len(x))
        for p in peaks:
            if p[0] == c:
                m = (p[1] + p[2]) / 2
                sig += 8.0 * np.exp(-0.5 * ((x - m) / 60.0) ** 2)
        bw.addEntries(c, 0, values=sig.astype(float).tolist(), span=10, step=10)
    bw.close()
    # variants: break the strongest position of some planted sites; neutral ones; one REF mismatch
    lines = [
        "##fileformat=VCFv4.2",
        "##source=napari-dlcb scripts/make_genome_sample.py",
        *[f"##contig=<ID={c},length={n}>" for c, n in CHROMS.items()],
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    variants = []
    for i, (c, s, _e, tf, _, _strand, site) in enumerate(sites[::4][:8]):
        p = s + len(site) // 2
        ref = seqs[c][p]
        alt = {"A": "C", "C": "A", "G": "T", "T": "G"}[ref]
        variants.append((c, p + 1, f"break_{tf}_{i}", ref, alt, f"IN_SITE={tf}"))
    for c, p in (("chrS1", 700), ("chrS2", 19500)):
        ref = seqs[c][p]
        variants.append(
            (c, p + 1, f"neutral_{c}_{p}", ref, "A" if ref != "A" else "G", "IN_SITE=none")
        )
    c, p = "chrS1", 2000
    wrong = "A" if seqs[c][p] != "A" else "C"
    variants.append(
        (
            c,
            p + 1,
            "ref_mismatch_demo",
            wrong,
            "T" if wrong != "T" else "G",
            "NOTE=REF_does_not_match_FASTA",
        )
    )
    variants.sort(key=lambda v: (v[0], v[1]))
    for v in variants:
        lines.append(f"{v[0]}\t{v[1]}\t{v[2]}\t{v[3]}\t{v[4]}\t.\tPASS\t{v[5]}")
    (out / "variants.vcf").write_text("\n".join(lines) + "\n")
    import pyfaidx

    pyfaidx.Faidx(str(fa)).close()  # ship the .fai index
    (out / "README.md").write_text(
        "# napari-dlcb sample genome\n\nMade by `scripts/make_genome_sample.py` (seed "
        f"{SEED}); synthetic background with planted JASPAR 2024 CORE sites (CC BY 4.0) of "
        f"{', '.join(names)}. Files: sample_genome.fa(.fai), peaks.bed (one peak per cluster, named by TF), "
        "signal.bw (ChIP-like signal), variants.vcf (site-breaking, neutral, and one REF mismatch on purpose), "
        "planted_sites.tsv (ground truth). Coordinates 0-based half-open except VCF POS (1-based).\n"
    )
    print("wrote", out, len(sites), "sites,", len(peaks), "peaks,", len(variants), "variants")


def _score(site: str, counts: np.ndarray) -> float:
    p = (counts + 0.5) / (counts + 0.5).sum(0, keepdims=True)
    return float(sum(np.log(p["ACGT".index(b), i] / 0.25) for i, b in enumerate(site)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "sample_data" / "genome"))
    build(Path(ap.parse_args().out))
