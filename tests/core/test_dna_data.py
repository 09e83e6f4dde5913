"""One-hot encoding, shuffles, sequence tables, genome windows and splits."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest

from napari_dlcb.data.dna import (
    decode,
    dinucleotide_counts,
    dinucleotide_shuffle,
    flank_negatives,
    gc_content,
    gc_matched_background,
    kfold_indices,
    one_hot,
    read_sequence_table,
    reverse_complement,
    reverse_complement_str,
    shuffled_negatives,
    split_by_chromosome,
    windows_from_bed,
)
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.genome import Genome, read_bed


def test_one_hot_order_case_and_iupac():
    x = one_hot(["ACGT", "acgt"])
    assert x.shape == (2, 4, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], np.eye(4))
    np.testing.assert_array_equal(x[1], np.eye(4))
    amb = one_hot("NRB")[0].T
    np.testing.assert_allclose(amb[0], [0.25] * 4)
    np.testing.assert_allclose(amb[1], [0.5, 0, 0.5, 0])  # R = A/G
    np.testing.assert_allclose(amb[2], [0, 1 / 3, 1 / 3, 1 / 3])  # B = C/G/T
    np.testing.assert_allclose(one_hot("U")[0, :, 0], [0, 0, 0, 1])
    zeros = one_hot("NA", ambiguous="zeros")[0].T
    np.testing.assert_array_equal(zeros, [[0, 0, 0, 0], [1, 0, 0, 0]])


def test_one_hot_errors():
    with pytest.raises(DlcbError, match="unequal lengths"):
        one_hot(["ACG", "AC"])
    with pytest.raises(DlcbError, match="needs length 5"):
        one_hot(["ACG"], length=5)
    with pytest.raises(DlcbError, match="'X' at position 2"):
        one_hot(["ACXT"])
    with pytest.raises(DlcbError, match="ambiguous"):
        one_hot("A", ambiguous="half")


def test_decode_and_reverse_complement():
    s = ["ACGTN", "GGTCA"]
    assert decode(one_hot(s)) == s
    assert decode(reverse_complement(one_hot(s))) == [reverse_complement_str(t) for t in s]
    assert reverse_complement_str("ACGTRYN") == "NRYACGT"


def test_dinucleotide_shuffle_exact_counts():
    rng = np.random.default_rng(1)
    for trial in range(30):
        L = int(rng.integers(3, 200))
        s = "".join(rng.choice(list("ACGT"), L, p=[0.4, 0.1, 0.1, 0.4]))
        t = dinucleotide_shuffle(s, rng=trial)
        assert len(t) == len(s) and t[0] == s[0] and t[-1] == s[-1]
        assert dinucleotide_counts(t) == dinucleotide_counts(s)
        assert Counter(t) == Counter(s)
    s = "ACGTTGCAAGCTAGCTAGGATCGATCGGGGATAT" * 3
    outs = {dinucleotide_shuffle(s, rng=i) for i in range(20)}
    assert len(outs) > 15  # actually random, not the identity
    assert dinucleotide_shuffle("acgtnACGTN", rng=0).isupper()
    assert len(shuffled_negatives([s, s], n_per_sequence=3)) == 6


def test_dinucleotide_shuffle_is_uniform_on_small_case():
    # "AACAB"-style check: for ACAGA, sequences with same dinucleotides, first and last
    # letters are ACAGA and AGACA; both must appear with similar frequency.
    c = Counter(dinucleotide_shuffle("ACAGA", rng=i) for i in range(400))
    assert set(c) == {"ACAGA", "AGACA"}
    assert 130 < c["ACAGA"] < 270


def test_gc_content():
    np.testing.assert_allclose(gc_content(["GGCC", "ATAT", "GANN"]), [1.0, 0.0, 0.5])


def test_sequence_table_deepbind_format(shared_data):
    files = sorted((shared_data / "deepbind_encode_chipseq" / "test").glob("GATA3*_B.seq.gz"))
    df = read_sequence_table(files[0], label_columns=["Bound"])
    assert list(df.columns) == ["FoldID", "EventID", "seq", "Bound"]
    assert len(df) == 1000 and set(df.Bound.unique()) == {0, 1}
    assert df.seq.str.len().eq(101).all()
    x = one_hot(df.seq.tolist()[:10], length=101)
    np.testing.assert_allclose(x.sum(1), 1.0)


def test_sequence_table_errors(tmp_path):
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("sequence,y\nACGT,1\nAAAA,x\n")
    with pytest.raises(DlcbError, match="no column 'seq'"):
        read_sequence_table(p)
    with pytest.raises(DlcbError, match="not a number"):
        read_sequence_table(p, sequence_column="sequence", label_columns=["y"])
    with pytest.raises(DlcbError, match="no label column 'z'"):
        read_sequence_table(p, sequence_column="sequence", label_columns=["z"])
    e = tmp_path / "e.tsv"
    e.write_text("")
    with pytest.raises(DlcbError, match="empty"):
        read_sequence_table(e)
    e.write_text("seq\tBound\n")
    with pytest.raises(DlcbError, match="no rows"):
        read_sequence_table(e)


@pytest.fixture
def small_genome(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in [("chr1", 3000), ("chr2", 2000)]}
    p = tmp_path / "g.fa"
    p.write_text("".join(f">{c}\n{s}\n" for c, s in seqs.items()))
    return Genome(p), seqs, tmp_path


def test_windows_from_bed(small_genome):
    g, seqs, tmp = small_genome
    bed_p = tmp / "p.bed"
    bed_p.write_text("chr1\t100\t140\tA\t5\nchr1\t2950\t3000\tB\t7\nchr2\t500\t520\tA\t1\n")
    bed = read_bed(bed_p, genome=g)
    s, y, info = windows_from_bed(g, bed, window=100)
    assert [len(v) for v in s] == [100] * 3
    assert s[0] == seqs["chr1"][70:170]
    assert s[1].endswith("N" * 25) and s[1][:75] == seqs["chr1"][2925:]
    assert y.tolist() == [[1.0], [1.0], [1.0]]
    _, y2, info2 = windows_from_bed(g, bed, window=100, labels="name")
    assert info2.attrs["task_names"] == ["A", "B"] and y2.tolist() == [[1, 0], [0, 1], [1, 0]]
    _, y3, _ = windows_from_bed(g, bed, window=10, labels=["score"])
    assert y3[:, 0].tolist() == [5, 7, 1]

    class Flat:
        name = "flat"

        def mean(self, c, s, e):
            return 2.0

    _, y4, info4 = windows_from_bed(g, bed, window=10, labels=[], tracks=[Flat()])
    assert y4[:, 0].tolist() == [2.0] * 3 and info4.attrs["task_names"] == ["flat"]


def test_background_and_flanks(small_genome):
    g, seqs, tmp = small_genome
    pos = [seqs["chr1"][i : i + 50] for i in range(0, 1000, 100)]
    bg, info = gc_matched_background(g, pos, seed=0, bins=5)
    assert len(bg) == len(pos) and all(len(b) == 50 for b in bg)
    assert abs(gc_content(bg).mean() - gc_content(pos).mean()) < 0.05
    for (c, s, e), b in zip(info.itertuples(index=False), bg):
        assert seqs[c][s:e] == b
    bed_p = tmp / "p.bed"
    bed_p.write_text("chr1\t1000\t1100\n")
    fl, finfo = flank_negatives(g, read_bed(bed_p), window=100, distance=500)
    assert finfo.start.tolist() == [500, 1500] and fl[0] == seqs["chr1"][500:600]


def test_splits():
    tr, va, te = split_by_chromosome(["chr1", "chr8", "chr9", "chr2"], val=["chr8"], test=["chr9"])
    assert tr.tolist() == [0, 3] and va.tolist() == [1] and te.tolist() == [2]
    with pytest.raises(DlcbError):
        split_by_chromosome(["chr1"], val=["chr1"], test=["chr1"])
    folds = kfold_indices(23, 4, seed=3)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(23))
    for train, test in folds:
        assert not set(train) & set(test)
    groups = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    for train, test in kfold_indices(15, 3, groups=groups):
        assert len({groups[i] for i in test}) == 1
    with pytest.raises(DlcbError):
        kfold_indices(3, 5)
