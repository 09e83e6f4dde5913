"""The pieces of an OME-Zarr image: chunk geometry, level arrays, pyramids, NGFF metadata.

Used by the writer (:mod:`napari_dlcb.io.omezarr_write`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = [
    "SPATIAL",
    "LevelSpec",
    "create_group",
    "create_level",
    "set_ome_attrs",
    "write_multiscale_attrs",
    "write_pyramid",
]

SPATIAL = ("y", "x")


class LevelSpec:
    """Geometry of one image's pyramid: axes, chunks, levels, transforms, NGFF version.

    ``chunks`` are the (y, x) chunk sides; axes in ``whole_axes`` are stored
    whole in every chunk, other axes one entry per chunk.
    """

    def __init__(
        self,
        axes: str,
        chunks: tuple[int, ...],
        n_levels: int,
        scale: Sequence[float] | None,
        translate: Sequence[float] | None,
        version: str,
        whole_axes: str = "",
    ) -> None:
        ndim = len(axes)
        if len(chunks) != 2 or any(int(c) < 1 for c in chunks):
            raise DlcbError(f"chunks must be two positive sizes (y, x), not {chunks}")
        for label, vec in (("scale", scale), ("translate", translate)):
            if vec is not None and len(vec) != ndim:
                raise DlcbError(f"{label} needs {ndim} values for axes '{axes}', got {len(vec)}")
        self.axes = axes
        self.yx_chunks = tuple(int(c) for c in chunks)
        self.n_levels = n_levels
        self.scale = [float(s) for s in scale] if scale is not None else [1.0] * ndim
        self.translate = [float(t) for t in translate] if translate is not None else [0.0] * ndim
        self.version = version
        self.whole_axes = whole_axes

    def chunks_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Chunk shape of a level of ``shape``."""
        out = []
        for ax, n in zip(self.axes, shape):
            if ax in SPATIAL:
                c = self.yx_chunks[SPATIAL.index(ax)]
            else:
                c = n if ax in self.whole_axes else 1
            out.append(max(1, min(c, n)))
        return tuple(out)

    def factor(self, level: int) -> list[int]:
        """Downsampling factor of each axis at ``level``."""
        return [2**level if ax in SPATIAL else 1 for ax in self.axes]


def create_group(path: Path, version: str) -> Any:
    """A new Zarr group for NGFF ``version`` (0.4: Zarr v2, 0.5: Zarr v3)."""
    import zarr

    return zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)


def create_level(group: Any, key: str, shape: tuple[int, ...], dtype: Any, spec: LevelSpec) -> Any:
    """An empty, Blosc-zstd compressed level array, chunked as ``spec`` says."""
    dtype = np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)
    kwargs: dict[str, Any] = {"fill_value": 0}
    if spec.version == "0.4":
        import numcodecs

        kwargs["compressors"] = numcodecs.Blosc(
            cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE
        )
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        from zarr.codecs import BloscCodec

        kwargs["compressors"] = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
        kwargs["dimension_names"] = list(spec.axes)
    return group.create_array(
        key, shape=shape, dtype=dtype, chunks=spec.chunks_for(shape), **kwargs
    )


def write_pyramid(group: Any, kind: str, spec: LevelSpec) -> None:
    """Levels 1.. from the stored level 0: 2x2 means for images, every 2nd pixel for labels."""
    import dask.array as da

    spatial = [i for i, a in enumerate(spec.axes) if a in SPATIAL]
    for level in range(1, spec.n_levels):
        src = da.from_zarr(group[str(level - 1)])
        trimmed = tuple(
            slice(0, n - n % 2) if i in spatial else slice(None) for i, n in enumerate(src.shape)
        )
        src = src[trimmed]
        out_shape = tuple(n // 2 if i in spatial else n for i, n in enumerate(src.shape))
        chunks = spec.chunks_for(out_shape)
        # blocks of twice the output chunk: every output chunk comes from one block
        src = src.rechunk(tuple(c * 2 if i in spatial else c for i, c in enumerate(chunks)))
        if kind == "labels":
            down = src[
                tuple(
                    slice(None, None, 2) if i in spatial else slice(None) for i in range(src.ndim)
                )
            ]
        else:
            dtype = src.dtype
            down = da.coarsen(np.mean, src.astype(np.float32), dict.fromkeys(spatial, 2))
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                down = da.clip(da.round(down), info.min, info.max)
            down = down.astype(dtype)
        z = create_level(group, str(level), out_shape, src.dtype, spec)
        da.store(down.rechunk(z.chunks), z, lock=False)


def write_multiscale_attrs(
    group: Any,
    kind: str,
    name: str,
    spec: LevelSpec,
    *,
    is_child_label: bool,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The ``multiscales`` metadata (and ``image-label`` for labels) of one image."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    datasets = []
    for level in range(spec.n_levels):
        f = spec.factor(level)
        s = [s0 * fi for s0, fi in zip(spec.scale, f)]
        # a mean over f pixels is centred (f - 1) / 2 pixels in; a stride pick is not
        shift = 0.0 if kind == "labels" else 0.5
        t = [t0 + shift * (fi - 1) * s0 for t0, fi, s0 in zip(spec.translate, f, spec.scale)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": s}]
        if any(t):
            transforms.append({"type": "translation", "translation": t})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    fmt = FormatV04() if spec.version == "0.4" else FormatV05()
    meta = {
        "method": "mean" if kind == "image" else "stride",
        "writer": "napari-dlcb",
        **dict(extra or {}),
    }
    write_multiscales_metadata(
        group, datasets, fmt=fmt, axes=list(spec.axes), name=name, metadata=meta
    )
    if kind == "labels":
        label_meta: dict[str, Any] = {"version": spec.version}
        if is_child_label:
            label_meta["source"] = {"image": "../../"}
        set_ome_attrs(group, {"image-label": label_meta}, spec.version)


def set_ome_attrs(group: Any, values: Mapping[str, Any], version: str) -> None:
    """Set NGFF attributes (0.5 nests them under ``"ome"``)."""
    if version == "0.4":
        group.attrs.update(dict(values))
    else:
        ome = dict(group.attrs.get("ome", {}))
        ome.update(values)
        ome["version"] = version
        group.attrs["ome"] = ome
