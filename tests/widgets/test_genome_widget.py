"""Genome view in a real napari window: a genome browser for DNA models, on the sample and on real mm10 data."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
import torch

from napari_dlcb._widgets.genome import GenomeWidget
from napari_dlcb._widgets.genome_actions import viewport_first
from napari_dlcb.interpret import mutation_map
from napari_dlcb.io.regions import parse_locus

HOXD = "mm10_hoxd_region_4c"
FASTA = "mm10_chr2_74060452_74082351.fa"
BED = "HoxD_cluster_regulatory_regions_mm10.bed"
BEDGRAPH = "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph"


@pytest.fixture
def small_model(tmp_path):
    from napari_dlcb.tasks.sequence import SequenceTrainer

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(8)]
    torch.manual_seed(0)
    t = SequenceTrainer(
        seqs,
        rng.random((8, 3)).round().astype(np.float32),
        task_names=["a", "b", "c"],
        model_kwargs={"filters": 8, "kernel_size": 11, "hidden": 8},
        device="cpu",
    )
    return t.save(tmp_path / "model")


def _idle(w, qtbot, timeout=120_000):
    qtbot.waitUntil(lambda: not w.jobs.busy(), timeout=timeout)


def _dock(viewer, qtbot) -> GenomeWidget:
    w = GenomeWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _genome_x(layer, data_x):
    """Genome position (0-based) of a layer's data x: world x + the view's origin."""
    return layer.data_to_world([0, data_x])[1] + layer.metadata["origin"]


def test_viewport_first_order():
    blocks = viewport_first(100, 164, 300, block=32)
    assert blocks[:2] == [(100, 132), (132, 164)]
    covered = np.zeros(300, int)
    for s, e in blocks:
        covered[s:e] += 1
    assert (covered == 1).all()


def test_genome_view_end_to_end(make_napari_viewer, qtbot, small_model, loop_probe):
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    kinds = {ly.metadata.get("kind"): ly for ly in viewer.layers}
    assert {"sequence", "letters", "signal", "intervals", "variants", "annotations"} <= set(kinds)
    seq_layer = kinds["sequence"]
    region = w._region
    assert seq_layer.data.shape == (4, len(region))
    assert _genome_x(seq_layer, 0) == region.start  # one x axis: genome position - origin
    # a variant point sits over its base in the sequence image
    var0 = kinds["variants"]
    assert _genome_x(var0, var0.data[0][1]) == int(var0.features["pos"][0]) - 1

    # mutation map: viewport first, progressive, exact, event loop responsive
    w.model_path.setText(str(small_model))
    w.browser.go_to(region.start + 200, region.start + 400)
    order = []
    orig = w._on_mm_block

    def spy(region, key, block):
        orig(region, key, block)
        order.append(block.start)

    w._on_mm_block = spy
    gc.collect()  # measure the mutation map, not garbage left by earlier tests
    loop_probe.start()
    w.start_mutation_map()
    _idle(w, qtbot)
    stall = loop_probe.stop()
    lo, hi = w.visible_span()
    assert order[0] == viewport_first(lo, hi, len(region), block=64)[0][0]
    layer = w.mm_layer
    model = w._model
    want = mutation_map(model, seq_layer.data[None], target=0)[0, :, :, 0]
    np.testing.assert_allclose(layer.data, want, atol=1e-5)
    assert stall < 200 + loop_probe.interval_ms, f"event loop stalled {stall:.0f} ms"
    # cached on the second request
    w.start_mutation_map()
    assert not w.jobs.busy() and "cache" in w.status.text()

    # picking a variant shows its effect on every task
    var = kinds["variants"]
    var.selected_data = {0}
    qtbot.waitUntil(
        lambda: w.effects.rowCount() == 3 or "not scored" in w.status.text(), timeout=60_000
    )
    assert [w.effects.item(i, 0).text() for i in range(3)] == ["a", "b", "c"]
    mismatch = int(np.flatnonzero(var.features["id"] == "ref_mismatch_demo")[0])
    var.selected_data = {mismatch}
    qtbot.waitUntil(lambda: "not scored" in w.status.text(), timeout=60_000)
    assert "REF mismatch" in w.status.text()

    # attribution logo with its convergence delta
    w.start_attribution()
    qtbot.waitUntil(lambda: getattr(w, "attr_layer", None) in viewer.layers, timeout=60_000)
    att = w.attr_layer
    assert att.metadata["values"].shape == (4, len(region)) and "delta" in w.status.text()
    assert att.metadata["method"] == "integrated gradients" and att.rgb

    # predicted tracks, one per task, on the region's genome coordinates
    w.start_predict()
    qtbot.waitUntil(lambda: "predicted tracks" in viewer.layers, timeout=60_000)
    pred = viewer.layers["predicted tracks"]
    assert pred.metadata["tasks"] == ["a", "b", "c"]
    centres = pred.metadata["centres"]
    assert _genome_x(pred, 0) == centres[0] == region.start
    assert _genome_x(pred, len(centres) - 1) == pytest.approx(centres[-1])


def test_train_with_live_curve(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    w.epochs.setValue(2)
    w.device.setCurrentText("cpu")
    w.start_training()
    _idle(w, qtbot, 180_000)
    assert len(w.plot.epochs) == 2
    assert w.target.count() == 8 and "trained" in w.model_path.text()
    assert "peaks.bed" in w.model_info.text()  # what it was trained on


def test_clicking_an_interval_opens_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    iv = w.browser.layer("intervals")
    row = int(iv.features["bed_row"].iloc[1])
    iv.selected_data = {1}
    peak = w._bed.iloc[row]
    mid = (int(peak.start) + int(peak.end)) // 2
    qtbot.waitUntil(lambda: w._region.start == mid - 500, timeout=10_000)
    _idle(w, qtbot)
    # typed and shown like UCSC / IGV: 1-based, both ends included, stored 0-based half-open
    assert w.region.text() == f"{peak.chrom}:{mid - 499:,}-{mid + 500:,}"
    assert (w._region.start, w._region.end) == (mid - 500, mid + 500)


def test_region_by_bed_name_and_errors(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    peak = w._bed[w._bed.name == "SOX2"].iloc[0]
    w.region.setText("sox2")
    w.show_region()
    _idle(w, qtbot)
    mid = (int(peak.start) + int(peak.end)) // 2
    assert (w._region.chrom, w._region.start, w._region.end) == (peak.chrom, mid - 500, mid + 500)
    names = [ly.name for ly in viewer.layers]
    for text, message in [
        ("NOT_A_PEAK", "name of a BED interval"),
        ("chrS1:29,001-31,000", "outside chrS1"),
        ("chrS1:5,000-4,000", "empty"),
    ]:
        w.region.setText(text)
        w.show_region()
        _idle(w, qtbot)
        assert message in w.status.text() and "\n" not in w.status.text()
        assert [ly.name for ly in viewer.layers] == names  # the view is left as it was
        # ... and no action runs on the sequence that is still shown
        w.start_predict()
        assert not w.jobs.busy() and "not the region shown" in w.status.text()
    w.region.setText(str(w._region.locus))
    w.start_predict()  # the dock is usable again
    qtbot.waitUntil(lambda: "predicted tracks" in viewer.layers, timeout=60_000)


def test_attribution_logo_filter_motifs_and_scan(make_napari_viewer, qtbot):
    """Built-in model on the sample region: logo over the planted sites, motif table, scan."""
    import pandas as pd

    from napari_dlcb._sample_data import genome_sample_dir

    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    region = w._region
    sites = pd.read_csv(genome_sample_dir() / "planted_sites.tsv", sep="\t")
    sites = sites[
        (sites.chrom == region.chrom) & (sites.start >= region.start) & (sites.end <= region.end)
    ]
    assert {"CTCF", "GATA3"} <= set(sites.tf)
    w.load_model()
    _idle(w, qtbot)
    w.target.setCurrentText("GATA3")
    w.attr_method.setCurrentText("integrated gradients")
    w.start_attribution()
    qtbot.waitUntil(lambda: getattr(w, "attr_layer", None) in viewer.layers, timeout=60_000)
    layer = w.attr_layer
    assert layer.rgb and layer.metadata["kind"] == "attribution"
    assert abs(layer.metadata["delta"]) < 0.1 and "delta" in w.status.text()
    values = layer.metadata["values"]
    assert values.shape == (4, len(region))
    # the most important base for GATA3 lies in a planted GATA3 site
    top = region.start + int(values.sum(0).argmax())
    gata = sites[sites.tf == "GATA3"]
    assert ((gata.start <= top) & (top < gata.end)).any(), top
    # ... and the logo draws ink over that base (pixel centres -> genome x)
    level0 = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    px = level0.shape[1] // len(region)
    cols = np.flatnonzero(level0[..., 3].any(0))
    x_genome = layer.metadata["origin"] + layer.translate[1] + layer.scale[1] * cols
    assert (np.abs(x_genome - top) < 0.5).any()
    assert layer.translate[1] == pytest.approx(-0.5 + 0.5 / px)
    # DeepLIFT/SHAP on the same model is complete too (the model is rewritten for captum)
    w.attr_method.setCurrentText("DeepLIFT/SHAP")
    w.start_attribution()
    qtbot.waitUntil(lambda: w.attr_layer.metadata.get("method") == "DeepLIFT/SHAP", timeout=60_000)
    assert abs(w.attr_layer.metadata["delta"]) < 1e-4 and "large" not in w.status.text()

    # filter motifs: a table row per matched filter, with the planted TFs among the matches
    w.start_filter_motifs()
    qtbot.waitUntil(lambda: getattr(w, "motif_matches", None) is not None, timeout=120_000)
    assert w.motif_table.rowCount() == len(w.motif_matches) > 0
    assert w.motif_table.cellWidget(0, 1).pixmap() is not None
    good = w.motif_matches[w.motif_matches.q_value < 0.05]
    found = {t.split()[0] for t in good.target}
    assert {"MA0139.2", "MA0080.7", "MA0496.4"} <= found, found  # CTCF, SPI1, MAFK

    # scan the region for the matched motifs: every planted CTCF site is found on its strand
    w.start_scan()
    qtbot.waitUntil(lambda: "motif sites" in viewer.layers, timeout=60_000)
    hits = viewer.layers["motif sites"].metadata["hits"]
    ctcf = hits[hits.motif.str.endswith("CTCF")]
    for s in sites[sites.tf == "CTCF"].itertuples():
        start = s.start - region.start
        assert ((ctcf.start == start) & (ctcf.strand == s.strand)).any(), s
    assert viewer.layers["motif sites"].metadata["origin"] == region.start


def test_opening_genome_files_gives_layers_the_genome_view_takes_over(
    make_napari_viewer, qtbot, tmp_path
):
    """File > Open on FASTA / BED / VCF / bigWig: the reader returns layers (it docks nothing);
    the Genome view, once opened, takes the files over on one bp axis."""
    import shutil

    from napari_dlcb._sample_data import genome_sample_dir
    from napari_dlcb.tasks.genome_reader import get_genome_reader

    d = genome_sample_dir()
    for name in ("sample_genome.fa", "peaks.bed", "variants.vcf", "signal.bw"):
        shutil.copy(d / name, tmp_path / name)  # no .fai: opening indexes the FASTA
    assert get_genome_reader(str(tmp_path / "x.tif")) is None
    assert get_genome_reader([str(tmp_path / "peaks.bed"), str(tmp_path / "x.tif")]) is None
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "peaks.bed"), plugin="napari-dlcb")  # a track alone: drawn alone
    assert {ly.metadata.get("kind") for ly in viewer.layers} >= {"intervals"}
    assert "sequence" not in {ly.metadata.get("kind") for ly in viewer.layers}
    viewer.open(str(tmp_path / "sample_genome.fa"), plugin="napari-dlcb")
    assert len(viewer.window._wrapped_dock_widgets) == 0  # a reader docks nothing
    seq = [ly for ly in viewer.layers if ly.metadata.get("kind") == "sequence"]
    assert len(seq) == 1 and seq[0].metadata["origin"] == 0
    # the Genome view takes over what was opened: the FASTA with the BED opened before it
    w = _dock(viewer, qtbot)
    qtbot.waitUntil(lambda: w.files is not None, timeout=120_000)
    _idle(w, qtbot)
    assert w.fasta.text().endswith("sample_genome.fa") and w.bed.text().endswith("peaks.bed")
    assert str(w._region) == "chrS1:0-1000"
    assert w.peak_box.count() == len(w._bed) > 0
    assert [ly.metadata.get("kind") for ly in viewer.layers].count("sequence") == 1
    # with the dock open, File > Open of more tracks adds them to its genome
    viewer.open([str(tmp_path / "variants.vcf"), str(tmp_path / "signal.bw")], plugin="napari-dlcb")
    qtbot.waitUntil(lambda: w.vcf.text().endswith("variants.vcf"), timeout=60_000)
    _idle(w, qtbot)
    kinds = [ly.metadata.get("kind") for ly in viewer.layers]
    assert {"sequence", "variants", "signal"} <= set(kinds)  # (no peak in chrS1:0-1000)
    assert kinds.count("sequence") == 1 and kinds.count("variants") == 1
    assert len(viewer.window._wrapped_dock_widgets) == 1
    # a truncated VCF: the reader declines with a one-line warning (never raises into
    # napari), and the dock keeps its file
    from napari_dlcb.io._npe2 import UnreadableFileWarning

    (tmp_path / "bad.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\nchrS1\n")
    with pytest.warns(UnreadableFileWarning, match="bad.vcf.*VCF needs at least 5"):
        viewer.open(str(tmp_path / "bad.vcf"), plugin="napari-dlcb")
    assert w.vcf.text().endswith("variants.vcf")
    # a file that is no genome file is refused in one line
    w.open_files([str(tmp_path / "notes.txt")])
    assert "not a genome file" in w.status.text()


def test_mm10_hoxd_region_end_to_end(make_napari_viewer, qtbot, shared_data, monkeypatch):
    """Real mm10 files (a FASTA of one region, its BED, a 4C bedGraph): chromosome coordinates."""
    import napari_dlcb.inference.sequence as seqinf

    d = shared_data / HOXD
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.open_files([str(d / FASTA), str(d / BED), str(d / BEDGRAPH)])
    _idle(w, qtbot)
    # the FASTA's header chr2:74060452-74082351 is a region of chr2, shown whole
    assert (w._region.chrom, w._region.start, w._region.end) == ("chr2", 74060452, 74082351)
    assert w.region.text() == "chr2:74,060,453-74,082,351"
    seq = w.browser.layer("sequence")
    assert _genome_x(seq, 0) == 74060452
    # the BED in chromosome coordinates lands on them; intervals outside the FASTA are not drawn
    iv = w.browser.layer("intervals")
    assert list(iv.features["name"]) == ["islandII"]
    assert _genome_x(iv, iv.data[0][:, 1].min()) == 74060473 - 0.5
    assert "1 of 18 BED intervals" in w.status.text()
    # the 4C signal too: its largest bar is where the bedGraph's largest value is
    sig = w.browser.layer("signal")
    bg = w.files.tracks[0].values("chr2", 74060452, 74082351)
    assert sig.metadata["max"] == pytest.approx(bg.max())
    # the first click does not load the model on the GUI thread
    devices = []
    real = seqinf.predict_track
    monkeypatch.setattr(
        seqinf, "predict_track", lambda *a, **k: devices.append(k["device"]) or real(*a, **k)
    )
    w.device.setCurrentText("cpu")
    w.region.setText("chr2:74,066,001-74,067,000")
    w.show_region()
    _idle(w, qtbot)
    t0 = time.perf_counter()
    w.start_predict()
    assert w.jobs.busy("model") and w._model is None  # loading in a job
    assert time.perf_counter() - t0 < 1.0
    qtbot.waitUntil(lambda: "predicted tracks" in viewer.layers, timeout=60_000)
    assert devices == ["cpu"]  # the dock's device, not a hard-coded one
    pred = viewer.layers["predicted tracks"]
    assert _genome_x(pred, 0) == 74066000  # at the region's genome coordinate
    # no empty (white) mutation-map band before one is computed
    assert not w.mm_layer.visible and "mutation_map" not in w.browser.tracks
    w.start_mutation_map()
    _idle(w, qtbot)
    assert "complete" in w.status.text() and w.mm_layer.data.shape == (4, 1000)
    assert w.mm_layer.visible and "mutation_map" in w.browser.tracks
    assert np.abs(w.mm_layer.data).max() > 0
    assert "simulated" in w.model_info.text()  # which model, trained on what


def test_opening_a_genome_replaces_the_previous_one(make_napari_viewer, qtbot, shared_data):
    d = shared_data / HOXD
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    w.open_files([str(d / FASTA), str(d / BEDGRAPH)])
    _idle(w, qtbot)
    names = [ly.name for ly in viewer.layers]
    assert not any("[1]" in n for n in names), names
    assert w.minimumSizeHint().height() < 700  # the dock fits a 1000-px-high screen (tabs)
    assert w.bed.text() == "" and w.vcf.text() == "" and w.bigwig.text().endswith(BEDGRAPH)
    assert not w.browser.layers(kind="variants") and w._region.chrom == "chr2"
    assert parse_locus(w.region.text()).start == w._region.start


def test_a_torchscript_dna_model_from_elsewhere_asks_once_then_predicts(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """A .pt + sidecar picked with Browse: the dock asks before running its code."""
    import json

    import napari_dlcb._widgets._jobs as jobs
    from napari_dlcb.models import trust

    monkeypatch.setattr(trust, "_SESSION", {"trust_all": False})
    asked = []
    monkeypatch.setattr(jobs, "ask_to_trust", lambda err: asked.append(err.path.name) or True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 9, padding=4), torch.nn.Softplus()).eval()
    path = tmp_path / "bpnet_like.pt"
    torch.jit.trace(net, torch.randn(1, 4, 200)).save(str(path))
    side = {"input_length": 200, "tasks": ["plus", "minus"], "output": "profile"}
    (tmp_path / "bpnet_like.json").write_text(json.dumps(side))
    viewer = make_napari_viewer()
    w = _dock(viewer, qtbot)
    w.use_sample()
    _idle(w, qtbot)
    import napari_dlcb._widgets.genome as genome_widget

    monkeypatch.setattr(
        genome_widget.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), "")
    )
    pick_file = w.model_browse.menu().actions()[1]
    assert "TorchScript or ONNX" in pick_file.text()
    pick_file.trigger()
    assert w.model_path.text() == str(path)
    _idle(w, qtbot)
    w.start_predict()
    qtbot.waitUntil(lambda: "predicted tracks" in viewer.layers, timeout=120_000)
    assert asked == ["bpnet_like.pt"]  # asked once, then the job ran again
    assert viewer.layers["predicted tracks"].metadata["tasks"] == ["plus", "minus"]
    assert "bpnet_like.pt" in w.model_info.text()
