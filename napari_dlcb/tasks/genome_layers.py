"""The Genome view's tracks as napari layer data, stacked like a genome browser (no napari import).

One region is drawn as stacked **tracks** (IGV, JBrowse 2 and pyGenomeTracks
are the anchors): a bp ruler on top, then the sequence, the model's outputs
and the opened files, each with a title. The x axis is the genome coordinate
in bp; the y axis is laid out in screen px by
:mod:`napari_dlcb.tasks.genome_layout`, so tracks keep their height at any
zoom. Every builder returns ``(layers, track)``: napari layer tuples
``(data, kwargs, layer_type)`` and the :class:`~napari_dlcb.tasks.genome_layout.Track`
they fill. Every layer carries ``metadata``:

``genome_view``  True (the Genome view replaces these layers as a set)
``kind``         sequence, letters, signal, intervals, variants, prediction,
                 mutation_map, attribution, motif_hits, labels
``track``        the track it belongs to (several layers may share one)
``y_range``      the data y span that fills the track's height
``x_scale``, ``x_translate``  the layer's bp placement (data column -> world x)
``origin``       the genome position of world x = 0 (the region's start)

World x is ``genome position - origin``, not the genome position itself: the
GPU draws in float32, whose step at 74 Mb is 8 bp, so absolute coordinates
would smear letters and logos by several bases when zoomed in. The ruler,
the locus and every label show genome coordinates.

:func:`region_layer_data` lays a region out for one zoom (what the sample data
and the first frame use); the Genome view re-places the layers on every zoom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_dlcb.data.onehot import one_hot
from napari_dlcb.io.intervals import intervals_in
from napari_dlcb.io.regions import Region, parse_region
from napari_dlcb.io.vcf import variants_in
from napari_dlcb.tasks.genome_layout import (
    BASE_HEX,
    PALETTE,
    Track,
    bar_image,
    layout,
    pack_rows,
    place_layer,
    track_meta,
)

__all__ = [
    "attribution_layers",
    "interval_layers",
    "labels_layer",
    "motif_layers",
    "mutation_map_layers",
    "prediction_layers",
    "region_layer_data",
    "sequence_layers",
    "signal_layers",
    "variant_layers",
]

LOGO_ROWS = 64  # pixel rows of an attribution logo
LOGO_PX_PER_BASE = 16  # full-resolution letter width (regions up to LOGO_COLUMNS / 16 bp)
LOGO_COLUMNS = 65536  # widest logo image: a longer region gets narrower letters
SMALLEST_LEVEL = 4096  # columns of the coarsest logo level (below any GL texture limit)


def labels_layer(
    track: str,
    texts: Sequence[str],
    x0: Sequence[float],
    x1: Sequence[float],
    rows: Sequence[float],
    *,
    color: str = "#333333",
    y_range: tuple[float, float] = (0.0, 1.0),
    origin: int = 0,
) -> tuple:
    """A points layer of feature names for ``track`` (moved and decluttered by the Genome view)."""
    x0, x1 = np.asarray(x0, float), np.asarray(x1, float)
    coords = np.stack([np.asarray(rows, float), (x0 + x1) / 2], 1) if len(x0) else np.zeros((0, 2))
    features = pd.DataFrame({"name": list(texts), "x0": x0, "x1": x1, "row": list(rows)})
    features["label"] = features["name"]
    kwargs = {
        "name": f"{track} labels",
        "size": 1,
        "face_color": "transparent",
        "border_width": 0,
        "features": features,
        "text": {"string": "{label}", "color": color, "size": 9, "anchor": "center"},
        "metadata": track_meta("labels", track, y_range, labels_for=track, origin=origin),
    }
    return coords, kwargs, "points"


def sequence_layers(region: Region, seq: str) -> tuple[list[tuple], Track]:
    """The one-hot sequence image (rows A, C, G, T) and its letters."""
    x = one_hot(seq)[0]
    seq_kwargs = {
        "name": f"sequence {region.locus}",
        "colormap": "gray_r",
        "contrast_limits": (0.0, 1.0),
        "metadata": track_meta(
            "sequence",
            "sequence",
            (-0.5, 3.5),
            origin=region.start,
            region=str(region),
            sequence=seq,
            rows="ACGT",
        ),
    }
    track = Track("sequence", "sequence", "sequence (one-hot: A, C, G, T)", 48.0, list("ACGT"))
    return [(x, seq_kwargs, "image"), letters_layer(region, seq, len(seq) <= 150)], track


def letters_layer(region: Region, seq: str, show: bool) -> tuple:
    """Base letters over the one-hot rows (the Genome view fills in the visible ones)."""
    bases = list(seq.upper()) if show else []
    rows = np.array(["ACGT".find(b) if b in "ACGT" else 1.5 for b in bases], float)
    pos = np.arange(len(bases), dtype=float)
    features = pd.DataFrame({"base": bases, "color": [BASE_HEX.get(b, "#888888") for b in bases]})
    kwargs = {
        "name": "bases",
        "size": 1,
        "face_color": "transparent",
        "border_width": 0,
        "features": features,
        "text": {"string": "{base}", "color": {"feature": "color"}, "size": 10, "anchor": "center"},
        "metadata": track_meta("letters", "sequence", (-0.5, 3.5), origin=region.start),
    }
    return np.stack([rows, pos], 1), kwargs, "points"


def _bars(name: str, kind: str, key: str, img: np.ndarray, x_scale: float, x0: float, **meta):
    rows = img.shape[0]
    kwargs = {
        "name": name,
        "rgb": True,
        "metadata": track_meta(
            kind, key, (-0.5, rows - 0.5), x_scale=float(x_scale), x_translate=float(x0), **meta
        ),
    }
    return img, kwargs, "image"


def signal_layers(region: Region, track: Any, k: int) -> tuple[list[tuple], Track]:
    """A signal track (bigWig/bedGraph) over the region as a bar chart, as IGV draws one."""
    v = (
        track.values(region.chrom, region.start, region.end)
        if track.has(region.chrom)
        else np.zeros(len(region), np.float32)
    )
    color = PALETTE[k % len(PALETTE)]
    img, b, top = bar_image(v, color)
    key = f"signal:{k}"
    title = str(getattr(track, "title", track.name)).split(" (")[0]
    layer = _bars(
        f"signal {track.name}", "signal", key, img, b, (b - 1) / 2, max=top, origin=region.start
    )
    return [layer], Track(key, "signal", f"{title}   [0 - {top:.3g}]", 40.0)


def interval_layers(region: Region, bed: Any) -> tuple[list[tuple], Track | None]:
    """BED intervals overlapping the region as packed boxes with their names (others: none).

    ``bed`` is a :func:`~napari_dlcb.io.tracks.read_bed` table (``bed_row``
    is then the row in it) or an indexed BED, read for this region only.
    """
    hit = intervals_in(bed, region)
    if not len(hit):
        return [], None
    s = hit["start"].clip(region.start - 1, region.end + 1).to_numpy(float) - region.start
    e = hit["end"].clip(region.start - 1, region.end + 1).to_numpy(float) - region.start
    rows = pack_rows(s, e, gap=max(1.0, 0.02 * len(region)))
    n_rows = int(rows.max()) + 1
    rects = [np.array([[r + 0.1, a - 0.5], [r + 0.5, b - 0.5]]) for r, a, b in zip(rows, s, e)]
    names = hit["name"].astype(str).tolist()
    kwargs = {
        "name": "intervals",
        "shape_type": "rectangle",
        "face_color": "#e6781e",
        "edge_width": 0,
        "features": {
            "name": names,
            "bed_row": [int(i) for i in hit.index],
            "chrom": hit["chrom"].astype(str).tolist(),
            "start": hit["start"].astype(int).tolist(),
            "end": hit["end"].astype(int).tolist(),
        },
        "metadata": track_meta("intervals", "intervals", (0.0, float(n_rows)), origin=region.start),
    }
    title = str(bed.attrs.get("track_name") or "intervals (BED)")
    label = labels_layer(
        "intervals",
        names,
        s - 0.5,
        e - 0.5,
        rows + 0.8,
        y_range=(0.0, float(n_rows)),
        origin=region.start,
    )
    return [(rects, kwargs, "shapes"), label], Track("intervals", "intervals", title, 26.0 * n_rows)


def variant_layers(region: Region, variants: Any) -> tuple[list[tuple], Track | None]:
    """Variants in the region as triangles over their base, with their ids.

    ``variants`` is a :func:`~napari_dlcb.io.vcf.read_vcf` table or an
    indexed VCF/BCF, read for this region only.
    """
    hit = variants_in(variants, region)
    if not len(hit):
        return [], None
    x = hit["start"].to_numpy(float) - region.start
    kwargs = {
        "name": "variants",
        "size": 10,
        "canvas_size_limits": (10, 10),
        "symbol": "triangle_down",
        "face_color": "#d62728",
        "border_width": 0,
        "features": {
            "id": hit["id"].astype(str).tolist(),
            "ref": hit["ref"].tolist(),
            "alt": hit["alt"].tolist(),
            "pos": hit["pos"].tolist(),
            "chrom": hit["chrom"].tolist(),
        },
        "metadata": track_meta("variants", "variants", (0.0, 1.0), origin=region.start),
    }
    ids = [i if i != "." else f"{r}>{a}" for i, r, a in zip(hit["id"], hit["ref"], hit["alt"])]
    label = labels_layer(
        "variants",
        ids,
        x - 0.5,
        x + 0.5,
        np.full(len(x), 0.8),
        color="#a01010",
        origin=region.start,
    )
    points = np.stack([np.full(len(x), 0.3), x], 1)
    return [(points, kwargs, "points"), label], Track(
        "variants", "variants", "variants (VCF)", 30.0
    )


def prediction_layers(
    region: Region,
    centres: np.ndarray,
    prob: np.ndarray,
    tasks: Sequence[str],
    *,
    task_type: str = "binary",
    model: str = "model",
) -> tuple[list[tuple], Track]:
    """Predicted tracks, one bar chart per task, at the region's genome coordinates.

    Parameters
    ----------
    region : Region
        The region predicted on.
    centres : numpy.ndarray
        Window centres as positions within the region (evenly spaced).
    prob : numpy.ndarray
        ``(n, T)`` probabilities, or a regression's values (each task then
        scaled to its own range).
    tasks : sequence of str
        Task names.
    task_type : {"binary", "regression"}
        Probabilities fill a bar at 1; regression values are min-max scaled.
    model : str
        Shown in the track title.
    """
    T = prob.shape[1]
    rows = 20
    step = float(centres[1] - centres[0]) if len(centres) > 1 else 1.0
    img = np.zeros((rows * T, len(centres), 4), np.uint8)
    for j in range(T):
        v = prob[:, j].astype(float)
        if task_type == "regression":
            v = (v - v.min()) / ((v.max() - v.min()) or 1.0)
        img[j * rows : (j + 1) * rows] = bar_image(
            v, PALETTE[j % len(PALETTE)], rows=rows, top=1.0
        )[0]
    x0 = float(centres[0]) if len(centres) else 0.0
    layer = _bars(
        "predicted tracks",
        "prediction",
        "prediction",
        img,
        step,
        x0,
        tasks=list(tasks),
        prob=prob,
        centres=region.start + np.asarray(centres),
        region=str(region),
        origin=region.start,
    )
    unit = "0 - 1" if task_type != "regression" else "min - max"
    title = f"predicted by {model}   [{unit} per task]"
    return [layer], Track("prediction", "prediction", title, 22.0 * T, [str(t) for t in tasks])


def mutation_map_layers(
    region: Region, values: np.ndarray, *, task: str = "", visible: bool = True
) -> tuple[list[tuple], Track]:
    """A (4, L) mutation map (alt minus ref) as a blue-white-red heatmap under the sequence."""
    m = float(np.nanmax(np.abs(values))) if values.size else 0.0
    kwargs = {
        "name": "mutation map" + (f" ({task})" if task else ""),
        "colormap": "bwr",
        "contrast_limits": (-(m or 1.0), m or 1.0),
        "visible": visible,
        "metadata": track_meta(
            "mutation_map",
            "mutation_map",
            (-0.5, 3.5),
            region=str(region),
            origin=region.start,
        ),
    }
    title = "mutation map" + (f" ({task})" if task else "") + "   alt - ref: blue < 0 < red"
    return [(values, kwargs, "image")], Track(
        "mutation_map", "mutation_map", title, 48.0, list("ACGT")
    )


def attribution_layers(
    region: Region,
    values: np.ndarray,
    x: np.ndarray,
    *,
    method: str,
    task: str,
    delta: float,
) -> tuple[list[tuple], Track]:
    """An attribution map as a letter logo (multiscale RGBA), each base over its genome position.

    A 1 kb logo at 16 px per base is 16,000 columns, wider than an OpenGL
    texture on many GPUs; napari would show it decimated (letters torn into
    slivers). As a multiscale layer, napari loads only the visible part of the
    level that suits the zoom, so letters stay sharp when zoomed in. Each
    position's total contribution (the sum over the 4 channels, which DeepLIFT
    and integrated gradients spread over all of them) is drawn as the observed
    base, as in tangermeme's and DeepLIFT's logos.
    """
    from napari_dlcb.interpret.logo import logo_image, logo_placement

    heights = values.sum(0, keepdims=True) * x
    px = int(np.clip(LOGO_COLUMNS // max(values.shape[1], 1), 1, LOGO_PX_PER_BASE))
    # scale to the 99.5th percentile, not the single tallest stack, so that one outlier
    # does not shrink every other letter to nothing (taller stacks are cut at the edge)
    stacks = np.abs(heights.sum(0))
    scale = float(np.quantile(stacks[stacks > 0], 0.995)) if (stacks > 0).any() else None
    img = logo_image(
        heights, px_per_base=px, height=LOGO_ROWS, gap=2 if px >= 8 else 0, max_height=scale
    )
    place_x = logo_placement(values.shape[1], img.shape, start=0.0, band_top=0.0, band_height=1.0)
    levels = [img]
    while levels[-1].shape[1] > SMALLEST_LEVEL:
        levels.append(np.ascontiguousarray(levels[-1][:, ::2]))
    kwargs = {
        "name": f"attribution logo ({method}, {task})",
        "rgb": True,
        "multiscale": len(levels) > 1,
        "metadata": track_meta(
            "attribution",
            "attribution",
            (-0.5, LOGO_ROWS - 0.5),
            x_scale=place_x["scale"][1],
            x_translate=place_x["translate"][1],
            method=method,
            delta=float(delta),
            values=values,
            region=str(region),
            origin=region.start,
        ),
    }
    data = levels if len(levels) > 1 else img
    title = f"{method} ({task})   completeness error {delta:+.1e}"
    return [(data, kwargs, "image")], Track("attribution", "attribution", title, 56.0)


def motif_layers(region: Region, hits: pd.DataFrame) -> tuple[list[tuple], Track]:
    """Motif sites (positions within the region) as packed boxes with the motif's name."""
    hits = hits.sort_values("start").reset_index(drop=True)
    s = hits["start"].to_numpy(float)
    e = hits["end"].to_numpy(float)
    rows = pack_rows(s, e, gap=2.0)
    n_rows = int(rows.max()) + 1 if len(rows) else 1
    rects = [np.array([[r + 0.1, a - 0.5], [r + 0.5, b - 0.5]]) for r, a, b in zip(rows, s, e)]
    names = [str(m).split()[-1] for m in hits["motif"]]
    kwargs = {
        "name": "motif sites",
        "shape_type": "rectangle",
        "face_color": "#f7b32b",
        "edge_width": 0,
        "features": {"motif": names, "strand": hits["strand"].tolist(), "score": hits["score"]},
        "metadata": track_meta(
            "motif_hits", "motif_hits", (0.0, float(n_rows)), hits=hits, origin=region.start
        ),
    }
    texts = [f"{n}{st}" for n, st in zip(names, hits["strand"])]
    label = labels_layer(
        "motif_hits",
        texts,
        s - 0.5,
        e - 0.5,
        rows + 0.8,
        y_range=(0.0, n_rows),
        origin=region.start,
    )
    track = Track("motif_hits", "motif_hits", "motif sites (scan)", 24.0 * n_rows)
    return [(rects, kwargs, "shapes"), label], track


def region_layer_data(
    genome: Any,
    region: Region | str,
    *,
    tracks: Sequence[Any] | None = None,
    bed: pd.DataFrame | None = None,
    variants: pd.DataFrame | None = None,
    zoom: float | None = None,
    canvas_width: float = 1000.0,
) -> list[tuple]:
    r"""Napari layer data for one region, stacked as browser tracks on one bp axis (no napari import).

    Parameters
    ----------
    genome : Genome or None
        Open genome (:func:`napari_dlcb.io.fasta.read_fasta`); None draws the
        tracks alone (no sequence band).
    region : Region or str
        ``chr:start-end`` (0-based, half-open).
    tracks : list of SignalTrack, optional
        One bar-chart track each.
    bed : pandas.DataFrame or IndexedIntervals, optional
        Intervals overlapping the region become packed rectangles with names;
        the others are left out. An indexed BED is read for the region only.
    variants : pandas.DataFrame or IndexedVariants, optional
        Variants in the region become triangles with their ids (an indexed
        VCF/BCF is read for the region only).
    zoom : float, optional
        Screen px per bp the layout is made for (default: the region fills
        ``canvas_width``).
    canvas_width : float
        Width of the canvas in px.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The first is the sequence image (with a genome); ``metadata["tracks"]``
        of the first lists the :class:`Track` objects.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_dlcb.io.fasta import read_fasta
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.fa"
    >>> _ = p.write_text(">chr2:1000-1040\n" + "ACGT" * 10 + "\n")
    >>> layers = region_layer_data(read_fasta(p), "chr2:1010-1030")
    >>> layers[0][0].shape, layers[0][1]["metadata"]["origin"]
    ((4, 20), 1010)
    """
    r = parse_region(region) if isinstance(region, str) else region
    out: list[tuple] = []
    made: list[Track] = []
    if genome is not None:  # tracks opened without their genome have no sequence band
        out, first = sequence_layers(r, genome.fetch(r.chrom, r.start, r.end))
        made.append(first)
    parts = [signal_layers(r, tr, k) for k, tr in enumerate(tracks or [])]
    if bed is not None:
        parts.append(interval_layers(r, bed))
    if variants is not None:
        parts.append(variant_layers(r, variants))
    for layers, track in parts:
        out += layers
        if track is not None:
            made.append(track)
    tops = layout(made)
    zoom = zoom or canvas_width / max(len(r), 1)
    for _, kwargs, _ in out:
        place_layer(kwargs, tops, zoom)
    if out:
        out[0][1]["metadata"]["tracks"] = made
    return out
