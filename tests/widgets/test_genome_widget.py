"""Genome view in a real napari window: sample region, live mutation map, variant effects, training."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from napari_dlcb._widgets._common import viewer_camera
from napari_dlcb._widgets.genome import GenomeWidget, _viewport_first
from napari_dlcb.interpret import mutation_map
from napari_dlcb.io.genome import BANDS, ROW_SCALE


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


def test_viewport_first_order():
    blocks = _viewport_first(100, 164, 300, block=32)
    assert blocks[:2] == [(100, 132), (132, 164)]
    covered = np.zeros(300, int)
    for s, e in blocks:
        covered[s:e] += 1
    assert (covered == 1).all()


def test_genome_view_end_to_end(make_napari_viewer, qtbot, small_model, loop_probe):
    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.use_sample()
    kinds = {ly.metadata.get("kind"): ly for ly in viewer.layers}
    assert {"sequence", "letters", "signal", "intervals", "variants"} <= set(kinds)
    seq_layer = kinds["sequence"]
    region = w._region
    assert seq_layer.data.shape == (4, len(region))
    for ly in viewer.layers:  # one x axis in bp
        assert tuple(ly.scale) == (ROW_SCALE, 1.0) and ly.translate[1] == region.start
    # a variant point sits over its base in the sequence image
    var0 = kinds["variants"]
    x_world = var0.data_to_world(var0.data[0])[1]
    assert int(x_world) == int(var0.features["pos"][0]) - 1

    # mutation map: viewport first, progressive, exact, event loop responsive
    w.model_path.setText(str(small_model))
    camera = viewer_camera(viewer)
    camera.center = (0, region.start + 300)
    camera.zoom = viewer.canvas.size[1] / 200.0
    order = []
    orig = w._on_mm_block

    def spy(item):
        orig(item)
        if item[0] == "block":
            order.append(item[2])

    w._on_mm_block = spy
    gc.collect()  # measure the mutation map, not garbage left by earlier tests
    loop_probe.start()
    w.start_mutation_map()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    stall = loop_probe.stop()
    lo, hi = w.visible_span()
    assert order[0] == (_viewport_first(lo, hi, len(region), block=64)[0][0])
    layer = w.mm_layer
    assert layer.translate[0] == BANDS["mutation_map"] * ROW_SCALE
    model, _ = w._load_model(str(small_model))
    want = mutation_map(model, seq_layer.data[None], target=0)[0, :, :, 0]
    np.testing.assert_allclose(layer.data, want, atol=1e-5)
    assert stall < 200 + loop_probe.interval_ms, f"event loop stalled {stall:.0f} ms"
    # cached on the second request
    w.start_mutation_map()
    assert w.worker is None and "cache" in w.status.text()

    # picking a variant shows its effect on every task
    var = kinds["variants"]
    var.selected_data = {0}
    qtbot.waitUntil(
        lambda: w.effects.rowCount() == 3 or "not scored" in w.status.text(), timeout=60_000
    )
    assert w.effects.rowCount() == 3
    tasks = [w.effects.item(i, 0).text() for i in range(3)]
    assert tasks == ["a", "b", "c"]
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

    # predicted tracks
    w.start_predict()
    qtbot.waitUntil(lambda: "predicted tracks" in viewer.layers, timeout=60_000)
    assert len(viewer.layers["predicted tracks"].data) == 3


def test_train_with_live_curve(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    w.use_sample()
    w.epochs.setValue(2)
    w.start_training()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert len(w.plot.epochs) == 2
    assert w.target.count() == 8 and "trained" in w.model_path.text()


def test_clicking_an_interval_opens_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    w.use_sample()
    iv = next(ly for ly in viewer.layers if ly.metadata.get("kind") == "intervals")
    row = int(iv.features["bed_row"].iloc[1])
    iv.selected_data = {1}
    peak = w._bed.iloc[row]
    mid = (int(peak.start) + int(peak.end)) // 2
    qtbot.waitUntil(lambda: w._region.start == mid - 500, timeout=10_000)
    assert w.region.text() == f"{peak.chrom}:{mid - 500}-{mid + 500}"
    assert w._region.start == mid - 500


def test_region_by_bed_name(make_napari_viewer):
    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    w.use_sample()
    peak = w._bed[w._bed.name == "SOX2"].iloc[0]
    w.region.setText("sox2")
    w.show_region()
    mid = (int(peak.start) + int(peak.end)) // 2
    assert (w._region.chrom, w._region.start, w._region.end) == (peak.chrom, mid - 500, mid + 500)
    n = len(viewer.layers)
    w.region.setText("NOT_A_PEAK")
    w.show_region()
    assert "name of a BED interval" in w.status.text() and len(viewer.layers) == n


def test_bad_region_is_reported(make_napari_viewer):
    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    w.use_sample()
    n = len(viewer.layers)
    w.region.setText("chrS1:29000-31000")
    w.show_region()
    assert "outside chrS1" in w.status.text() and len(viewer.layers) == n


def test_attribution_logo_filter_motifs_and_scan(make_napari_viewer, qtbot):
    """Built-in model on the sample region: logo over the planted sites, motif table, scan."""
    import pandas as pd

    from napari_dlcb._sample_data import genome_sample_dir

    viewer = make_napari_viewer()
    w = GenomeWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.use_sample()
    region = w._region
    sites = pd.read_csv(genome_sample_dir() / "planted_sites.tsv", sep="\t")
    sites = sites[
        (sites.chrom == region.chrom) & (sites.start >= region.start) & (sites.end <= region.end)
    ]
    assert {"CTCF", "GATA3"} <= set(sites.tf)
    w._load_model("builtin")
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
    # ... and the logo draws ink over that base (pixel centres -> world x in bp)
    level0 = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    px = level0.shape[1] // len(region)
    cols = np.flatnonzero(level0[..., 3].any(0))
    x_world = layer.translate[1] + layer.scale[1] * cols
    assert (np.abs(x_world - top) < 0.5).any()
    assert layer.translate[1] == pytest.approx(region.start - 0.5 + 0.5 / px)
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
    assert viewer.layers["motif sites"].translate[1] == region.start


def test_opening_genome_files_fills_the_genome_view(make_napari_viewer, tmp_path):
    """File > Open on FASTA / BED / VCF / bigWig: the Genome view opens them on one bp axis."""
    import shutil

    from napari_dlcb._sample_data import genome_sample_dir
    from napari_dlcb._widgets.genome_reader import get_genome_reader

    d = genome_sample_dir()
    for name in ("sample_genome.fa", "peaks.bed", "variants.vcf", "signal.bw"):
        shutil.copy(d / name, tmp_path / name)  # no .fai: opening indexes the FASTA
    assert get_genome_reader(str(tmp_path / "x.tif")) is None
    assert get_genome_reader([str(tmp_path / "peaks.bed"), str(tmp_path / "x.tif")]) is None
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "peaks.bed"), plugin="napari-dlcb")  # before any FASTA
    w = next(dw.inner_widget() for dw in viewer.window._wrapped_dock_widgets.values())
    assert isinstance(w, GenomeWidget) and w.bed.text().endswith("peaks.bed")
    assert "FASTA" in w.status.text() and len(viewer.layers) == 0
    w.region.setText("chr1:100-200")  # not in this genome: the first kb is shown instead
    viewer.open(str(tmp_path / "sample_genome.fa"), plugin="napari-dlcb")
    assert str(w._region) == "chrS1:0-1000"
    assert "sequence" in {ly.metadata.get("kind") for ly in viewer.layers}
    assert w.peak_box.count() == len(w._bed) > 0  # the BED opened first is in use
    viewer.open(
        [str(tmp_path / "variants.vcf"), str(tmp_path / "signal.bw")],
        plugin="napari-dlcb",
        stack=False,
    )
    kinds = {ly.metadata.get("kind") for ly in viewer.layers}
    assert {"sequence", "variants", "signal"} <= kinds
    assert len(viewer.window._wrapped_dock_widgets) == 1  # the same dock is reused
    # a truncated VCF is a one-line error, and the field keeps its file
    (tmp_path / "bad.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\nchrS1\n")
    with pytest.raises(Exception, match="bad.vcf"):
        viewer.open(str(tmp_path / "bad.vcf"), plugin="napari-dlcb")
    assert w.vcf.text().endswith("variants.vcf")
