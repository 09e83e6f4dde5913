"""Variant effects, filter motifs (with TOMTOM-like matching), motif scans and attributions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.data.dna import one_hot
from napari_dlcb.interpret.dna_attribution import (
    deeplift_shap,
    dna_integrated_gradients,
    gradient_x_input,
)
from napari_dlcb.interpret.motifs import (
    Motif,
    filter_motifs,
    load_motif_database,
    match_motifs,
    read_motif_file,
    save_logos,
    scan_motifs,
    write_meme,
)
from napari_dlcb.interpret.variants import score_variants, variant_windows
from napari_dlcb.io.genome import Genome, read_vcf
from napari_dlcb.models.state import hook_counts

GATA = "AGATAAGG"


def _motif_model():
    """A conv that detects GATAAG exactly: filter 0 = the motif's one-hot, then max + linear."""
    conv = nn.Conv1d(4, 2, 6)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = torch.as_tensor(one_hot("GATAAG")[0]) * 2 - 0.5
        conv.weight[1] = torch.as_tensor(one_hot("CCCGGG")[0]) * 2 - 0.5
        conv.bias.fill_(-7.0)
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        lin.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), lin).eval()


def _seqs(n=200, L=40, seed=0, plant=True):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = list(rng.choice(list("ACGT"), L))
        if plant:
            i = int(rng.integers(0, L - 6))
            s[i : i + 6] = "GATAAG"
        out.append("".join(s))
    return out


def test_filter_motif_recovers_planted_motif_and_matches_database(tmp_path):
    model = _motif_model()
    x = one_hot(_seqs())
    motifs = filter_motifs(model, x, threshold=0.5)
    assert len(motifs) == 2 and motifs[0].n_sites >= 200
    assert motifs[0].consensus() == "GATAAG"
    db = [
        Motif("GATA_like", one_hot("AGATAAGA")[0] * 50 + 1),
        Motif("CTCF_like", one_hot("CCGCGNGGNGGCAG")[0] * 50 + 1),
        Motif("SOX_like", one_hot("ACAAAGG")[0] * 50 + 1),
    ]
    m = match_motifs(motifs, db)
    best = m[m["filter"] == "filter0"].iloc[0]
    assert best.target == "GATA_like" and best.p_value < 1e-3 and best.strand == "+"
    other = m[(m["filter"] == "filter0") & (m.target == "SOX_like")].iloc[0]
    assert other.p_value > best.p_value * 100
    # reverse-complement database motif matches on the - strand
    rc = match_motifs(motifs[:1], [Motif("GATA_rc", one_hot("TCTTATCT")[0] * 50 + 1)])
    # (TOMTOM scores do not depend on the database: the same alignment as GATA_like's)
    assert rc.iloc[0].strand == "-" and rc.iloc[0].score == best.score and rc.iloc[0].p_value < 0.01
    pngs = save_logos(motifs[:1], tmp_path / "logos")
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    # MEME round trip
    f = write_meme(motifs, tmp_path / "m.meme")
    back = read_motif_file(f)
    assert [b.consensus() for b in back][:1] == ["GATAAG"]


def test_hocomoco_file_and_jaspar(shared_data):
    hoc = read_motif_file(
        shared_data / "motifs_hocomoco_v10_human" / "HOCOMOCOv10_pcms_HUMAN_mono.txt"
    )
    assert len(hoc) == 640 and hoc[0].counts.shape[0] == 4
    gata = [m for m in hoc if m.name.startswith("GATA3")]
    assert gata and ("GATA" in gata[0].consensus() or "TATC" in gata[0].consensus())
    jas = load_motif_database("jaspar")
    assert len(jas) > 800 and any("GATA3" in m.name.upper() for m in jas)


def test_scan_motifs_both_strands():
    seq = "CCCC" + "GATAAG" + "CCCCCCCC" + "CTTATC" + "CCCC"
    hits = scan_motifs(one_hot(seq), [Motif("g", one_hot("GATAAG")[0] * 20 + 0.5)], threshold=1e-3)
    assert sorted(zip(hits.start, hits.strand)) == [(4, "+"), (18, "-")]
    # FIMO's exact p-value of a perfect 6-mer under a uniform background: 4**-6
    assert np.allclose(hits.p_value, 4.0**-6, rtol=0.02) and (hits.q_value >= hits.p_value).all()
    # N and IUPAC codes match nothing (memelite would read 0.25-columns as A)
    poly_a = [Motif("a", one_hot("AAAAAA")[0] * 20 + 0.5)]
    assert len(scan_motifs(one_hot("CCCAAAAAACCC"), poly_a, threshold=1e-3)) == 1
    assert scan_motifs(one_hot("CCCNNNNNNCCC"), poly_a, threshold=1e-3).empty


def test_score_variants_checks_ref(tmp_path):
    rng = np.random.default_rng(1)
    chrom = list(rng.choice(list("CT"), 200))
    chrom[100:106] = "GATAAG"
    g = tmp_path / "g.fa"
    g.write_text(">chr1\n" + "".join(chrom) + "\n")
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
        "chr1\t102\tbreak\tA\tC\n"  # destroys GATAAG (0-based 101)
        "chr1\t102\twrongref\tT\tC\n"  # REF mismatch
        "chr1\t5\tneutral\t" + chrom[4] + "\tA\n"
        "chrX\t5\tnochrom\tA\tC\n"
        "chr1\t100\tdel\t" + "".join(chrom[99:101]) + "\t" + chrom[99] + "\n"
    )
    model = _motif_model()
    genome = Genome(g)
    variants = read_vcf(vcf)
    refs, alts, status = variant_windows(genome, variants, length=40)
    assert len(refs[0]) == 40 and refs[0][20] == "A" and alts[0][20] == "C"
    assert len(alts[4]) == 40
    t = score_variants(model, genome, variants, length=40, task_names=["gata", "cg"])
    assert t.status.tolist()[:4] == [
        "ok",
        "REF mismatch: VCF says T, FASTA has A",
        "ok",
        "unknown chromosome 'chrX'",
    ]
    assert t.loc[0, "diff_gata"] < -0.15  # losing the motif lowers the GATA task
    assert abs(t.loc[2, "diff_gata"]) < 1e-6
    assert np.isnan(t.loc[1, "diff_gata"]) and np.isnan(t.loc[3, "ref_cg"])
    assert {"ref_gata", "alt_gata", "diff_gata", "ref_cg", "alt_cg", "diff_cg"} <= set(t.columns)


def test_attributions_on_motif_and_model_unchanged():
    model = _motif_model().train()
    x = one_hot(_seqs(3, L=30, seed=4))
    hooks = hook_counts(model)
    a = gradient_x_input(model, x, target=0)
    ig = dna_integrated_gradients(model, x, target=0, n_steps=64)
    assert a.map.shape == x.shape and ig.map.shape == x.shape
    assert np.abs(ig.completeness).max() < 0.05
    for n, s in enumerate(_seqs(3, L=30, seed=4)):
        i = s.find("GATAAG")
        imp = ig.map[n].sum(0)
        assert i <= int(imp.argmax()) < i + 6
        g = a.map[n].sum(0)
        assert i <= int(g.argmax()) < i + 6
    # mean-gradient correction: corrected gradients sum to 0 over bases
    xt = torch.tensor(x, requires_grad=True)
    (gr,) = torch.autograd.grad(model.eval()(xt)[:, 0].sum(), xt)
    model.train()
    np.testing.assert_allclose(
        a.map, ((gr - gr.mean(1, keepdim=True)) * xt).detach().numpy(), atol=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        with pytest.raises(RuntimeWarning, match="treats these modules as linear"):
            deeplift_shap(model, x[:1], n_shuffles=3)
    seq = nn.Sequential(*list(_motif_model())[:2], nn.MaxPool1d(25), nn.Flatten(), nn.Linear(2, 1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward")
        d = deeplift_shap(seq, x[:2], n_shuffles=4)
    assert d.map.shape == (2, 4, 30) and np.all(d.completeness < 1e-3)
    assert model.training and hook_counts(model) == hooks


@pytest.mark.parametrize("arch", ["deepbind", "basset"])
def test_deeplift_is_complete_on_the_shipped_architectures(arch):
    """ReLU -> max pool and DeepBind's global max+mean pool: DeepLIFT sums to f(x) - f(ref)."""
    from napari_dlcb.interpret.dna_attribution import deeplift_equivalent
    from napari_dlcb.models.dna import build_dna_model

    torch.manual_seed(0)
    kw = {"filters": (16, 8, 8), "hidden": (16, 16), "length": 96} if arch == "basset" else {}
    model = build_dna_model(arch, n_tasks=2, **kw).train()
    L = 96 if arch == "basset" else 40
    x = one_hot(_seqs(2, L=L, seed=5))
    names = [n for n, _ in model.named_modules()]
    hooks = hook_counts(model)
    same = deeplift_equivalent(model.eval(), L)
    assert same is not model  # rewritten, on a copy
    xt = torch.as_tensor(x)
    torch.testing.assert_close(same(xt), model(xt), rtol=0, atol=0)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "treated as linear" warning
        warnings.filterwarnings("ignore", message="Setting forward")
        d = deeplift_shap(model, x, target=1, n_shuffles=4)
    assert d.map.shape == x.shape and np.all(np.abs(d.completeness) < 1e-4), d.completeness
    assert model.training and hook_counts(model) == hooks
    assert [n for n, _ in model.named_modules()] == names


@pytest.mark.parametrize(
    "method", ["gradient_x_input", "dna_integrated_gradients", "deeplift_shap"]
)
def test_dna_attributions_take_device_auto_and_return_the_one_attribution_type(method):
    """``device="auto"`` crashed (torch.device("auto")); every method returns ``Attribution``."""
    import napari_dlcb.interpret.dna_attribution as da
    from napari_dlcb.interpret.attribution import Attribution

    x = one_hot(_seqs(2, L=30, seed=1))
    model = nn.Sequential(
        *list(_motif_model())[:2], nn.MaxPool1d(25), nn.Flatten(), nn.Linear(2, 1)
    )
    kwargs = {"n_shuffles": 2} if method == "deeplift_shap" else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward")
        a = getattr(da, method)(model, x, target=0, device="auto", **kwargs)
    assert isinstance(a, Attribution) and a.map.shape == x.shape
    assert a.completeness.shape == (2,) and a.target == 0 and a.method
    assert not hasattr(da, "integrated_gradients")  # one public integrated_gradients: images'
