"""napari sample data: nuclei, a ready-to-train session, and an 8k lazy mosaic.

The small files are made by ``scripts/make_sample_data.py`` (deterministic, from
:func:`napari_dlcb.data.synthetic.synthetic_nuclei`) and shipped in the wheel.
The mosaic is generated on first use into the user cache as a multiscale
OME-Zarr, tile by tile, so nothing is ever downloaded.

Importing this module imports neither torch nor Qt; numpy, scipy and
scikit-image are imported when a sample is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import napari_dlcb
from napari_dlcb.errors import DlcbError

__all__ = [
    "MOSAIC_CHUNKS",
    "SAMPLE_SEED",
    "make_nuclei_samples",
    "mosaic_path",
    "mosaic_sample",
    "nuclei_sample",
    "sample_data_dir",
    "scribbles_from_labels",
    "session_sample",
]

LayerData = tuple[Any, dict[str, Any], str]

#: Seed of the shipped 512 x 512 nuclei image.
SAMPLE_SEED = 2024
#: Chunk size of the mosaic's arrays (a napari tile loads in a few ms).
MOSAIC_CHUNKS = (512, 512)
_MOSAIC_FORMAT = 1  # bump when the mosaic recipe changes: old caches are then ignored

NUCLEI = "nuclei.tif"
NUCLEI_LABELS = "nuclei_labels.tif"
NUCLEI_SCRIBBLES = "nuclei_scribbles.tif"


def sample_data_dir() -> Path:
    """Folder of the shipped sample files.

    Returns
    -------
    pathlib.Path
        ``napari_dlcb/sample_data`` in an installed wheel, ``<repo>/sample_data``
        in an editable install.

    Raises
    ------
    DlcbError
        Neither exists (a broken installation).
    """
    package = Path(napari_dlcb.__file__).resolve().parent
    for cand in (package / "sample_data", package.parent / "sample_data"):
        if (cand / NUCLEI).is_file():
            return cand
    raise DlcbError("napari-dlcb sample data is missing; reinstall napari-dlcb")


# --------------------------------------------------------------------------- npe2 hooks


def nuclei_sample() -> list[LayerData]:
    """Synthetic fluorescence nuclei (512 x 512, uint16) with ground-truth instances.

    Returns
    -------
    list of tuple
        An ``image`` layer and a ``labels`` layer (``label_kind="instances"``).
    """
    from napari_dlcb.io.images import read_image

    d = sample_data_dir()
    image = read_image(d / NUCLEI)
    labels = read_image(d / NUCLEI_LABELS)
    return [
        (image, {"name": "nuclei", "metadata": {"source_path": str(d / NUCLEI)}}, "image"),
        (
            labels,
            {"name": "nuclei ground truth", "metadata": {"label_kind": "instances"}},
            "labels",
        ),
    ]


def session_sample() -> list[LayerData]:
    """The session the app opens with: the nuclei image and a few scribbles.

    Returns
    -------
    list of tuple
        An ``image`` layer and a ``labels`` layer named ``scribbles``
        (``metadata["label_kind"] == "scribbles"``: 1 = background, 2 = nucleus).
    """
    from napari_dlcb.io.images import read_image

    d = sample_data_dir()
    image = read_image(d / NUCLEI)
    scribbles = read_image(d / NUCLEI_SCRIBBLES)
    return [
        (image, {"name": "nuclei", "metadata": {"source_path": str(d / NUCLEI)}}, "image"),
        (
            scribbles,
            {"name": "scribbles", "metadata": {"label_kind": "scribbles"}},
            "labels",
        ),
    ]


def mosaic_sample() -> list[LayerData]:
    """An 8192 x 8192 nuclei mosaic, opened lazily as a multiscale OME-Zarr.

    Generated once into the user cache (about 20 s on two cores; see
    :func:`mosaic_path`), then opened in milliseconds.

    Returns
    -------
    list of tuple
        A multiscale ``image`` layer and its ground-truth ``labels`` (hidden).
    """
    from napari_dlcb.io._npe2 import read_layers

    layers = read_layers(mosaic_path())
    out = []
    for data, kwargs, kind in layers:
        if kind == "labels":
            kwargs = {**kwargs, "visible": False, "metadata": {"label_kind": "instances"}}
        out.append((data, kwargs, kind))
    return out


# --------------------------------------------------------------------------- mosaic


def mosaic_path(*, size: int = 8192, tile: int = 1024, seed: int = 0) -> Path:
    """Path of the nuclei mosaic OME-Zarr, generating it first if missing.

    The mosaic is ``(size // tile) ** 2`` synthetic nuclei tiles (tile ``i`` in
    row-major order uses seed ``seed + i``), with instance labels in
    ``labels/nuclei`` (tile ``i``'s nucleus ``k`` has id ``i * 65536 + k``).
    It is built tile by tile with bounded memory, into a temporary folder that
    is renamed into place when complete, so an interrupted build is never used.

    Parameters
    ----------
    size : int
        Side length in pixels; a multiple of ``tile``.
    tile : int
        Side length of each generated tile; a multiple of 64.
    seed : int
        Base seed.

    Returns
    -------
    pathlib.Path
        ``<cache>/samples/nuclei_mosaic_<size>_t<tile>_s<seed>_v1.ome.zarr``.

    Raises
    ------
    DlcbError
        Bad ``size``/``tile``.
    """
    from napari_dlcb.io.paths import is_zarr_path
    from napari_dlcb.io.project import user_cache_dir

    if tile < 64 or tile % 64 or size < tile or size % tile:
        raise DlcbError(
            f"mosaic size {size} must be a multiple of the tile {tile} (a multiple of 64)"
        )
    path = (
        user_cache_dir()
        / "samples"
        / f"nuclei_mosaic_{size}_t{tile}_s{seed}_v{_MOSAIC_FORMAT}.ome.zarr"
    )
    if not is_zarr_path(path):
        _write_mosaic(path, size=size, tile=tile, seed=seed)
    return path


def _write_mosaic(path: Path, *, size: int, tile: int, seed: int) -> None:
    import dask
    import dask.array as da
    import numpy as np

    from napari_dlcb.io.omezarr_write import write_ome_zarr

    n = size // tile
    images, labels = [], []
    for r in range(n):
        img_row, lab_row = [], []
        for c in range(n):
            index = r * n + c
            both = dask.delayed(_mosaic_tile, nout=2, pure=True)(tile, seed + index, index)
            img_row.append(da.from_delayed(both[0], (tile, tile), dtype=np.uint16))
            lab_row.append(da.from_delayed(both[1], (tile, tile), dtype=np.int32))
        images.append(img_row)
        labels.append(lab_row)
    write_ome_zarr(
        path,
        da.block(images),
        chunks=MOSAIC_CHUNKS,
        labels={"nuclei": da.block(labels)},
        name="nuclei mosaic",
    )


def _mosaic_tile(tile: int, seed: int, index: int) -> tuple[Any, Any]:
    import numpy as np

    from napari_dlcb.data.synthetic import synthetic_nuclei

    image, labels = synthetic_nuclei((tile, tile), seed=seed)
    labels = np.where(labels > 0, labels + np.int32(index) * np.int32(65536), 0).astype(np.int32)
    return image, labels


# --------------------------------------------------------------------------- shipped files


def make_nuclei_samples(out_dir: str | os.PathLike, *, seed: int = SAMPLE_SEED) -> dict[str, Path]:
    """Write the shipped nuclei sample files (deterministic).

    Parameters
    ----------
    out_dir : str or path-like
        Destination folder (created if needed).
    seed : int
        Seed of the synthetic image and of the scribbles.

    Returns
    -------
    dict
        ``{"image": ..., "labels": ..., "scribbles": ...}`` paths: ``nuclei.tif``
        (uint16), ``nuclei_labels.tif`` (int32 instances), ``nuclei_scribbles.tif``
        (uint8, 1 = background strokes, 2 = nucleus strokes). All deflate-compressed.
    """
    import tifffile

    from napari_dlcb.data.synthetic import synthetic_nuclei

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = synthetic_nuclei((512, 512), seed=seed)
    scribbles = scribbles_from_labels(labels, seed=seed)
    paths = {
        "image": out / NUCLEI,
        "labels": out / NUCLEI_LABELS,
        "scribbles": out / NUCLEI_SCRIBBLES,
    }
    for key, arr in (("image", image), ("labels", labels), ("scribbles", scribbles)):
        tifffile.imwrite(
            paths[key],
            arr,
            compression="zlib",
            compressionargs={"level": 9},
            predictor=True,
            photometric="minisblack",
            metadata=None,
        )
    return paths


def scribbles_from_labels(
    labels: Any, *, n_nuclei: int = 12, n_background: int = 8, width: int = 3, seed: int = 0
) -> Any:
    """Draw sparse, human-like brush strokes from instance labels.

    Nucleus strokes are gently curved lines along the long axis of ``n_nuclei``
    nuclei spread over the image, kept inside each nucleus; background strokes
    wander through the gaps near those nuclei without touching any nucleus.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Instance labels, 0 = background.
    n_nuclei : int
        Number of nuclei that get a stroke.
    n_background : int
        Number of background strokes.
    width : int
        Brush width in pixels (odd).
    seed : int
        Random seed; equal seeds give identical strokes.

    Returns
    -------
    ndarray of uint8, shape (Y, X)
        0 = unlabelled, 1 = background stroke, 2 = nucleus stroke.

    Examples
    --------
    >>> from napari_dlcb.data.synthetic import synthetic_nuclei
    >>> _, lab = synthetic_nuclei((256, 256), seed=1)
    >>> s = scribbles_from_labels(lab, n_nuclei=4, seed=1)
    >>> sorted(set(s.ravel().tolist()))
    [0, 1, 2]
    """
    import numpy as np
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    radius = max(0, width // 2)
    brush = ndi.generate_binary_structure(2, 1) if radius == 1 else _disk(radius)
    out = np.zeros(labels.shape, np.uint8)

    rows, cols = labels.shape
    props = [
        p
        for p in regionprops(labels)
        if p.area >= 150
        and p.axis_major_length > 12
        and p.bbox[0] >= 8
        and p.bbox[1] >= 8
        and p.bbox[2] <= rows - 8
        and p.bbox[3] <= cols - 8
    ]
    chosen = _spread_out(props, n_nuclei, rng)
    for p in chosen:
        inside = ndi.binary_erosion(labels == p.label, iterations=radius + 1)
        line = _nucleus_stroke(p, rng, labels.shape)
        out[ndi.binary_dilation(line, brush) & inside] = 2

    # background strokes: wander through the gaps near the chosen nuclei
    dist = ndi.distance_transform_edt(labels == 0)
    allowed = dist > radius + 2
    for i in range(n_background):
        if not chosen:
            break
        anchor = chosen[i % len(chosen)]
        start = _background_start(anchor, dist, rng)
        if start is None:
            continue
        ys, xs = _wander(start, dist, rng, length=rng.uniform(45, 110), min_dist=radius + 3)
        if len(ys) < 8:
            continue
        line = _polyline_mask(np.array(ys), np.array(xs), labels.shape)
        out[ndi.binary_dilation(line, brush) & allowed & (out == 0)] = 1
    return out


def _nucleus_stroke(prop: Any, rng: Any, shape: tuple[int, int]) -> Any:
    """A gently curved line along the long axis of one nucleus (a regionprops entry)."""
    import numpy as np

    cy, cx = prop.centroid
    # skimage orientation: angle between the row axis and the major axis
    dy, dx = np.cos(prop.orientation), np.sin(prop.orientation)
    half = 0.45 * prop.axis_major_length * rng.uniform(0.85, 1.1)
    bend = rng.normal(0.0, 0.08) * prop.axis_major_length
    t = np.linspace(-1.0, 1.0, 9)
    ys = cy + t * half * dy + (1 - t**2) * bend * dx + rng.normal(0, 0.25, t.size)
    xs = cx + t * half * dx - (1 - t**2) * bend * dy + rng.normal(0, 0.25, t.size)
    return _polyline_mask(ys, xs, shape)


def _disk(r: int) -> Any:
    import numpy as np

    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= r * r


def _spread_out(props: list[Any], k: int, rng: Any) -> list[Any]:
    """Farthest-point choice of ``k`` regions, from a random first one."""
    import numpy as np

    if not props or k <= 0:
        return []
    centres = np.array([p.centroid for p in props])
    picked = [int(rng.integers(len(props)))]
    d = np.linalg.norm(centres - centres[picked[0]], axis=1)
    while len(picked) < min(k, len(props)):
        # the farthest few, one at random: spread out but not on a grid
        cand = np.argsort(d)[-3:]
        nxt = int(cand[rng.integers(len(cand))])
        picked.append(nxt)
        d = np.minimum(d, np.linalg.norm(centres - centres[nxt], axis=1))
    return [props[i] for i in picked]


def _polyline_mask(ys: Any, xs: Any, shape: tuple[int, int]) -> Any:
    import numpy as np
    from skimage.draw import line

    mask = np.zeros(shape, bool)
    pts = np.round(np.stack([ys, xs], axis=1)).astype(int)
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        rr, cc = line(y0, x0, y1, x1)
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[ok], cc[ok]] = True
    return mask


def _background_start(anchor: Any, dist: Any, rng: Any) -> tuple[float, float] | None:
    import numpy as np

    cy, cx = anchor.centroid
    reach = anchor.axis_major_length / 2
    for _ in range(50):
        ang = rng.uniform(0, 2 * np.pi)
        r = reach + rng.uniform(6, 18)
        y, x = cy + r * np.sin(ang), cx + r * np.cos(ang)
        iy, ix = int(round(y)), int(round(x))
        if 0 <= iy < dist.shape[0] and 0 <= ix < dist.shape[1] and dist[iy, ix] >= 5:
            return y, x
    return None


def _wander(
    start: tuple[float, float], dist: Any, rng: Any, *, length: float, min_dist: float
) -> tuple[list[float], list[float]]:
    """A smooth random walk that steers away from nuclei, like a careful hand."""
    import numpy as np

    y, x = start
    heading = rng.uniform(0, 2 * np.pi)
    ys, xs = [y], [x]
    step, travelled = 2.0, 0.0
    while travelled < length:
        heading += rng.normal(0, 0.12)
        turns = [0.0, 0.35, -0.35, 0.7, -0.7, 1.1, -1.1]
        if rng.random() < 0.5:
            turns = [0.0] + [-t for t in turns[1:]]
        for turn in turns:
            ny, nx = y + step * np.sin(heading + turn), x + step * np.cos(heading + turn)
            iy, ix = int(round(ny)), int(round(nx))
            if 0 <= iy < dist.shape[0] and 0 <= ix < dist.shape[1] and dist[iy, ix] >= min_dist:
                heading += turn
                y, x = ny, nx
                break
        else:
            break
        ys.append(y)
        xs.append(x)
        travelled += step
    return ys, xs


# genome_sample (FASTA + tracks) is contributed by the sequence module's owner below.


#: Region the genome sample opens on (two clusters of planted CTCF and GATA3 sites).
GENOME_SAMPLE_REGION = "chrS1:1000-3200"


def genome_sample_dir() -> Path:
    """Folder of the sample genome (``sample_data/genome``: FASTA, peaks, signal, variants).

    Raises
    ------
    DlcbError
        If the files are missing (a broken installation).
    """
    package = Path(napari_dlcb.__file__).resolve().parent
    for cand in (package / "sample_data" / "genome", package.parent / "sample_data" / "genome"):
        if (cand / "sample_genome.fa").is_file():
            return cand
    raise DlcbError("napari-dlcb sample genome is missing; reinstall napari-dlcb")


def genome_sample() -> list[LayerData]:
    """Sample genome region with its sequence, signal track, peaks and variants as layers.

    The genome carries planted JASPAR 2024 CORE motif sites (ground truth in
    ``planted_sites.tsv``); it is made by ``scripts/make_genome_sample.py``.
    All layers share one x axis in bp (see :func:`napari_dlcb.tasks.genome_layers.region_layer_data`).
    """
    from napari_dlcb.io.genome import SignalTrack, read_bed, read_fasta, read_vcf
    from napari_dlcb.tasks.genome_layers import region_layer_data

    d = genome_sample_dir()
    genome = read_fasta(d / "sample_genome.fa")
    layers = region_layer_data(
        genome,
        GENOME_SAMPLE_REGION,
        tracks=[SignalTrack(d / "signal.bw")],
        bed=read_bed(d / "peaks.bed", genome=genome),
        variants=read_vcf(d / "variants.vcf"),
    )
    for _, kwargs, _ in layers:
        kwargs.setdefault("metadata", {})["genome_dir"] = str(d)
    return layers
