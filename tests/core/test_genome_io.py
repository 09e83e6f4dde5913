"""Genome file readers: FASTA, BED, bigWig/bedGraph, VCF, regions, and their error messages."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.genome import (
    Genome,
    SignalTrack,
    parse_region,
    read_bed,
    read_bedgraph,
    read_fasta_records,
    read_vcf,
)


@pytest.fixture
def genome_file(tmp_path):
    p = tmp_path / "g.fa"
    p.write_text(">chr1 test\nACGTACGTAC\nacgtNNRYSW\nGG\n>chr2\nTTTTCCCC\n")
    return p


def test_fasta_lazy_fetch_keeps_case_and_iupac(genome_file):
    g = Genome(genome_file)
    assert g.chromosomes == {"chr1": 22, "chr2": 8}
    assert g.fetch("chr1", 8, 16) == "ACacgtNN"
    assert g.fetch("chr1", 16, 22) == "RYSWGG"
    assert g.fetch("chr2", 6, 10, pad=True) == "CCNN"
    assert g.fetch("chr2", -2, 1, pad=True) == "NNT"


def test_fasta_gzip_in_memory(tmp_path):
    p = tmp_path / "g.fa.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(">c\nACGT\nAA\n")
    g = Genome(p)
    assert g.fetch("c", 2, 6) == "GTAA"


def test_fasta_read_only_folder_uses_cache_index(tmp_path, genome_file, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("os.access", lambda *a, **k: False)
    g = Genome(genome_file)
    assert g.fetch("chr2", 0, 4) == "TTTT"
    assert list((tmp_path / "cache" / "napari-dlcb" / "fai").glob("*.fai"))


def test_fasta_errors(tmp_path, genome_file):
    g = Genome(genome_file)
    with pytest.raises(DlcbError, match="unknown chromosome 'chrX'"):
        g.fetch("chrX", 0, 5)
    with pytest.raises(DlcbError, match="outside chr2"):
        g.fetch("chr2", 5, 9)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(DlcbError, match="empty"):
        Genome(empty)
    notfa = tmp_path / "x.fa"
    notfa.write_text("ACGT\n")
    with pytest.raises(DlcbError, match="not a FASTA"):
        Genome(notfa)
    trunc = tmp_path / "t.fa"
    trunc.write_text(">a\nACGT\n>b\n")
    with pytest.raises(DlcbError, match="no sequence"):
        Genome(trunc)
    with pytest.raises(DlcbError, match="no sequence"):
        read_fasta_records(trunc)
    ragged = tmp_path / "r.fa"
    ragged.write_text(">a\nACGT\nAC\nACGT\n")
    with pytest.raises(DlcbError, match="cannot index"):
        Genome(ragged)


def test_real_mm10_fasta_and_bedgraph(shared_data):
    d = shared_data / "mm10_hoxd_region_4c"
    recs = read_fasta_records(d / "mm10_chr2_74060452_74082351.fa")
    assert len(recs) == 1 and len(recs[0][1]) == 74082351 - 74060452
    track = SignalTrack(d / "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph")
    bg = read_bedgraph(d / "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph")
    row = bg.iloc[10]
    v = track.values("chr2", int(row.start) - 5, int(row.end) + 5)
    assert v[5] == pytest.approx(row.value)
    assert v[-6] == pytest.approx(row.value)
    bed = read_bed(d / "HoxD_cluster_regulatory_regions_mm10.bed")
    assert {"chrom", "start", "end", "name"} <= set(bed.columns)
    assert (bed.end > bed.start).all()


def test_bed_checks_against_genome(tmp_path, genome_file):
    g = Genome(genome_file)
    ok = tmp_path / "ok.bed"
    ok.write_text("track name=a\n# c\nchr1\t0\t5\tp1\t3.5\t+\nchr2\t1\t8\tp2\t1\t-\n")
    bed = read_bed(ok, genome=g)
    assert bed.name.tolist() == ["p1", "p2"] and bed.score.tolist() == [3.5, 1.0]
    beyond = tmp_path / "beyond.bed"
    beyond.write_text("chr1\t0\t5\nchr2\t4\t9\n")
    with pytest.raises(DlcbError, match="line 2.*beyond the chromosome end"):
        read_bed(beyond, genome=g)
    unknown = tmp_path / "u.bed"
    unknown.write_text("chr7\t0\t5\n")
    with pytest.raises(DlcbError, match="unknown chromosome 'chr7'"):
        read_bed(unknown, genome=g)
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t5\t2\n")
    with pytest.raises(DlcbError, match="not after start"):
        read_bed(bad)
    bad.write_text("chr1\tx\t2\n")
    with pytest.raises(DlcbError, match="not a non-negative integer"):
        read_bed(bad)
    bad.write_text("track only\n")
    with pytest.raises(DlcbError, match="no intervals"):
        read_bed(bad)


def test_bigwig_roundtrip(tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    p = tmp_path / "s.bw"
    bw = pyBigWig.open(str(p), "w")
    bw.addHeader([("chr1", 100)])
    bw.addEntries(["chr1"], [10], ends=[20], values=[2.0])
    bw.close()
    t = SignalTrack(p)
    v = t.values("chr1", 5, 25)
    assert v[:5].tolist() == [0.0] * 5 and v[5:15].tolist() == [2.0] * 10
    assert t.mean("chr1", 10, 30) == pytest.approx(1.0)
    trunc = tmp_path / "t.bw"
    trunc.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DlcbError):
        SignalTrack(trunc).values("chr1", 0, 10)


def test_vcf(tmp_path):
    p = tmp_path / "v.vcf.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\n")
        fh.write("chr1\t3\trs1\tG\tA,T\t.\nchr1\t5\t.\tAC\tA\t.\nchr2\t1\t.\tT\t<DEL>\t.\n")
    v = read_vcf(p)
    assert v.start.tolist() == [2, 2, 4, 0]
    assert v.alt.tolist() == ["A", "T", "A", "<DEL>"]
    assert v.kind.tolist() == ["snv", "snv", "indel", "symbolic"]
    bad = tmp_path / "b.vcf"
    bad.write_text("chr1\t3\t.\tG\tA\n")
    with pytest.raises(DlcbError, match="before the '#CHROM' header"):
        read_vcf(bad)
    bad.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr1\t3\t.\n")
    with pytest.raises(DlcbError, match="truncated"):
        read_vcf(bad)
    bad.write_text("#CHROM\tPOS\tID\tREF\tALT\n")
    with pytest.raises(DlcbError, match="no variants"):
        read_vcf(bad)


def test_parse_region():
    r = parse_region("chr2:74,060,452-74,061,000")
    assert (r.chrom, r.start, r.end, len(r)) == ("chr2", 74060452, 74061000, 548)
    assert str(r) == "chr2:74060452-74061000"
    for bad in ["chr1", "chr1:5-2", "chr1:a-b"]:
        with pytest.raises(DlcbError):
            parse_region(bad)
    assert np.isfinite(len(parse_region("c:0-1")))


def test_resolve_region_by_bed_name():
    import pandas as pd

    from napari_dlcb.io.genome import Region, resolve_region

    bed = pd.DataFrame(
        {
            "chrom": ["chr1", "chr1", "chr2"],
            "start": [100, 5000, 9000],
            "end": [300, 5200, 9900],
            "name": ["edge", "GATA3", "gata3_wide"],
        }
    )
    assert resolve_region("chr1:10-20", bed=bed) == Region("chr1", 10, 20)
    assert resolve_region("GATA3", bed=bed) == Region("chr1", 4600, 5600)
    assert resolve_region("GATA3_WIDE", bed=bed) == Region("chr2", 8950, 9950)  # 1 kb centred
    assert resolve_region("edge", bed=bed) == Region("chr1", 0, 700)  # clipped at 0

    class G:  # just the chromosome sizes
        chromosomes = {"chr2": 9920}

    assert resolve_region("gata3_wide", bed=bed, genome=G()).end == 9920
    with pytest.raises(DlcbError, match="name of a BED interval"):
        resolve_region("CTCF", bed=bed)
    with pytest.raises(DlcbError, match="chr:start-end"):
        resolve_region("GATA3")  # no BED: only coordinates


# ----------------------------------------------------------------------------- coordinates
def test_fasta_of_regions_is_in_chromosome_coordinates(tmp_path):
    """A record named chr:start-end (0-based, half-open) is that part of the chromosome."""
    from napari_dlcb.io.genome import Region

    p = tmp_path / "r.fa"
    p.write_text(">chr2:1000-1012 some region\nACGTACGTACGT\n>chr2:2000-2004\nGGGG\n>chrM\nTTTT\n")
    g = Genome(p)
    assert g.chromosomes == {"chr2": 2004, "chrM": 4}
    assert g.pieces[0] == Region("chr2", 1000, 1012) and g.is_regions()
    assert g.fetch("chr2", 1002, 1006) == "GTAC" and g.fetch("2", 2000, 2004) == "GGGG"
    assert g.fetch("chr2", 998, 1002, pad=True) == "NNAC"
    assert g.fetch("MT", 0, 2) == "TT" and "M" in g and "chrX" not in g
    assert g.covers("chr2", 1000, 1012) and not g.covers("chr2", 1010, 1014)
    with pytest.raises(DlcbError, match="outside chr2 as far as r.fa has it.*chr2:1,001-1,012"):
        g.fetch("chr2", 500, 600)
    assert g.default_region() == Region("chr2", 1000, 1012)  # a region is shown whole
    # a name whose length does not match its sequence stays a plain name
    q = tmp_path / "q.fa"
    q.write_text(">chr2:1-100\nACGT\n")
    assert Genome(q).chromosomes == {"chr2:1-100": 4}


def test_real_mm10_region_fasta_with_its_bed_and_bedgraph(shared_data):
    d = shared_data / "mm10_hoxd_region_4c"
    g = Genome(d / "mm10_chr2_74060452_74082351.fa")
    assert g.pieces[0].chrom == "chr2" and g.pieces[0].start == 74060452
    assert (
        g.fetch("chr2", 74060452, 74060462)
        == read_fasta_records(d / "mm10_chr2_74060452_74082351.fa")[0][1][:10]
    )
    bed_file = d / "HoxD_cluster_regulatory_regions_mm10.bed"
    with pytest.raises(DlcbError, match="outside the regions the FASTA holds; 17 such"):
        read_bed(bed_file, genome=g)  # strict: training on peaks the FASTA lacks is an error
    kept = read_bed(bed_file, genome=g, outside="keep")  # a browser draws what it can
    assert len(kept) == 18 and kept.attrs["outside"] == 17
    assert kept.attrs["track_name"] == "HoxD-regulatory_regions"
    dropped = read_bed(bed_file, genome=g, outside="drop")
    assert dropped["name"].tolist() == ["islandII"] and dropped.attrs["outside"] == 17
    track = SignalTrack(d / "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph")
    assert track.title == "GSM3182415_E12PHL_WT_Hoxd11vp"  # no track line: the file's name
    assert track.values("2", 74060452, 74060462).size == 10  # "2" is chr2


def test_janggu_fasta_many_regions_per_chromosome(shared_data):
    d = shared_data / "janggu_oct4_vs_mafk"
    recs = read_fasta_records(d / "sample_test.fa")
    g = Genome(d / "sample_test.fa")
    assert len(g.pieces) == len(recs) and all(len(p) == 200 for p in g.pieces)
    name, seq = recs[3]
    chrom, span = name.split(":")
    start = int(span.split("-")[0])
    assert g.fetch(chrom, start + 10, start + 20) == seq[10:20]


def test_chromosome_aliases_between_files(tmp_path, genome_file):
    from napari_dlcb.io.genome import chrom_aliases, match_chrom

    assert chrom_aliases("1") == ["1", "chr1"] and match_chrom("MT", ["chrM"]) == "chrM"
    bed = tmp_path / "ensembl.bed"
    bed.write_text("1\t0\t5\tp1\n2\t1\t8\tp2\n")
    assert read_bed(bed, genome=Genome(genome_file))["chrom"].tolist() == ["chr1", "chr2"]
    vcf = tmp_path / "v.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\n1\t3\trs1\tG\tA\n")
    from napari_dlcb.interpret.variants import variant_windows

    _, _, status = variant_windows(Genome(genome_file), read_vcf(vcf), length=6)
    assert status == ["ok"]


def test_loci_are_one_based_like_ucsc_and_igv():
    from napari_dlcb.io.genome import Region, format_locus, parse_locus, resolve_region

    r = parse_locus("chr2:74,060,453-74,061,452")
    assert r == Region("chr2", 74060452, 74061452) and len(r) == 1000
    assert format_locus(r) == r.locus == "chr2:74,060,453-74,061,452"
    assert parse_locus("chr2:10") == Region("chr2", 9, 10)
    for bad, match in [("chr2:0-5", "1-based"), ("chr2:9-3", "empty"), ("chr2", "locus")]:
        with pytest.raises(DlcbError, match=match):
            parse_locus(bad)

    class G:  # the genome spells chromosomes the UCSC way
        chromosomes = {"chr2": 10**8}

    assert resolve_region("2:1,001-2,000", genome=G(), one_based=True) == Region("chr2", 1000, 2000)
    assert resolve_region("chr2:1000-2000") == Region("chr2", 1000, 2000)  # 0-based by default
