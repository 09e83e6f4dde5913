"""The Genome view's tracks as layer data: browser layout, genome coordinates, real mm10 files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb.io.regions import Region
from napari_dlcb.tasks.genome_layers import (
    attribution_layers,
    mutation_map_layers,
    prediction_layers,
    region_layer_data,
)
from napari_dlcb.tasks.genome_layout import (
    Track,
    bar_image,
    declutter,
    layout,
    pack_rows,
    place,
    ruler_ticks,
)

HOXD = "mm10_hoxd_region_4c"


def _world_y(y_range, top, height, zoom):
    (sy, _), (ty, _) = place(y_range, top, height, zoom)
    return ty + sy * y_range[0], ty + sy * y_range[1]


@pytest.mark.parametrize("zoom", [0.01, 1.0, 40.0])
def test_tracks_keep_their_height_in_screen_pixels_at_any_zoom(zoom):
    """Anisotropic zoom: world y = px / zoom, so a track is `height` px tall at every zoom."""
    y0, y1 = _world_y((-0.5, 3.5), top=100.0, height=28.0, zoom=zoom)
    assert (y1 - y0) * zoom == pytest.approx(28.0)
    assert y0 * zoom == pytest.approx(100.0)


def test_layout_stacks_tracks_without_overlap_in_browser_order():
    tracks = [
        Track("mm", "mutation_map", "mutation map", 40),
        Track("s", "sequence", "sequence", 48),
        Track("b", "intervals", "BED", 26),
    ]
    tops = layout(tracks)
    assert list(tops) == ["s", "b", "mm"]  # files first, model results below
    spans = sorted((t, t + h) for t, h in tops.values())
    assert all(b <= a for (_, b), (a, _) in zip(spans, spans[1:]))


def test_labels_rows_and_ruler():
    assert pack_rows(np.array([0, 5, 20]), np.array([10, 30, 25])).tolist() == [0, 1, 0]
    keep = declutter(np.array([0.0, 5.0, 100.0]), np.array([30.0, 30.0, 30.0]), np.zeros(3))
    assert keep.tolist() == [True, False, True]  # labels never overlap
    ticks = ruler_ticks(74060452, 74082351, width_px=1000)
    assert len(ticks) >= 3 and np.all(np.diff(ticks) == ticks[1] - ticks[0])
    assert (ticks[1] - ticks[0]) * 1000 / (74082351 - 74060452) >= 110  # readable spacing
    img, b, top = bar_image(np.r_[np.zeros(20000), 5.0, np.zeros(20000)], "#112233")
    assert b == 5 and top == 5.0 and img[..., 3].any(0).sum() == 1  # a 1-bp peak survives binning


def test_mm10_files_land_at_their_chromosome_coordinates(shared_data):
    from napari_dlcb.tasks.genome_files import open_genome_files

    d = shared_data / HOXD
    files = open_genome_files(
        d / "mm10_chr2_74060452_74082351.fa",
        bed=d / "HoxD_cluster_regulatory_regions_mm10.bed",
        signals=[d / "GSM3182415_E12PHL_WT_Hoxd11vp.chr2_73-76Mb.bedgraph"],
    )
    assert "1 of 18 BED intervals" in files.summary()
    assert files.held_intervals()["name"].tolist() == ["islandII"]
    region = files.resolve("chr2:74,060,453-74,082,351")
    assert region == Region("chr2", 74060452, 74082351)
    with pytest.raises(
        Exception, match="outside the FASTA, which holds chr2:74,060,453-74,082,351"
    ):
        files.resolve("chr2:1,000-2,000")
    layers = region_layer_data(files.genome, region, tracks=files.tracks, bed=files.bed)
    by_kind = {kw["metadata"]["kind"]: (data, kw) for data, kw, _ in layers}
    origin = by_kind["sequence"][1]["metadata"]["origin"]
    assert origin == 74060452
    rect = by_kind["intervals"][0][0]
    assert rect[:, 1].min() + origin == 74060473 - 0.5  # islandII starts at its BED start
    signal, kw = by_kind["signal"]
    bg = files.tracks[0].values("chr2", region.start, region.end)
    col = int(np.argmax(signal[..., 3].sum(0)))  # the tallest bar
    x = kw["metadata"]["x_scale"] * col + kw["metadata"]["x_translate"] + origin
    assert bg[int(x) - region.start] == pytest.approx(bg.max())


def test_predicted_tracks_and_maps_are_at_the_region_genome_coordinate():
    region = Region("chr2", 74066000, 74067000)
    centres = np.arange(0, 1000, 10)
    prob = np.random.default_rng(0).random((len(centres), 2)).astype(np.float32)
    layers, track = prediction_layers(region, centres, prob, ["a", "b"])
    ((data, kw, kind),) = layers
    m = kw["metadata"]
    assert kind == "image" and data.shape[:2] == (40, len(centres))
    assert track.row_titles == ["a", "b"]
    assert m["origin"] + m["x_translate"] == region.start  # first window centre
    assert m["origin"] + m["x_translate"] + m["x_scale"] * (len(centres) - 1) == region.start + 990
    np.testing.assert_array_equal(m["centres"], region.start + centres)
    layers, mm_track = mutation_map_layers(region, np.zeros((4, 1000), np.float32), visible=False)
    assert layers[0][1]["visible"] is False and mm_track.row_titles == list("ACGT")
    x = np.eye(4, 1000, dtype=np.float32)
    ((logo, lkw, _),) = attribution_layers(region, x, x, method="m", task="t", delta=0.0)[0]
    level0 = logo[0] if isinstance(logo, list) else logo
    px = level0.shape[1] // 1000
    assert lkw["metadata"]["x_translate"] == pytest.approx(-0.5 + 0.5 / px)
