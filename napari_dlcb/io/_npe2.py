"""npe2 reader and writer hooks (see ``napari.yaml``).

Importing this module is cheap (no torch, no Qt, no zarr): the heavy modules
are imported when a file is actually read or written.

Layer conventions set here and relied on by the widgets:

* image layers carry ``metadata["source_path"]`` (the file they came from),
  which keys the annotation autosave store;
* label layers restored from an autosave store carry
  ``metadata["label_kind"]`` (``"scribbles"``, ``"classes"`` or
  ``"instances"``) and ``metadata["dlcb_autosave"] = True``.

The hooks never raise into napari: :func:`get_reader` declines (returns
None) what is not a regular file with the right signature (a pipe or a device
named ``x.tif``, a text file named ``x.png``), and the reader reports a file it
cannot read (truncated, too big, corrupt) as a warning, which napari shows as
a notification, and returns napari's "nothing to add" value for it.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["get_reader", "write_labels_ome_zarr", "write_labels_tiff"]

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]

_FILE_SUFFIXES = (".tif", ".tiff", ".png")
_LAZY_TIFF_BYTES = 256 * 2**20  # bigger TIFFs are opened lazily
_LAZY_PIXELS = 2**26  # and so are TIFFs with more pixels (however well they compress)
_STORE_SUFFIX = ".dlcb.zarr"  # == napari_dlcb.io.project.STORE_SUFFIX (kept import-free)
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
}
#: napari's value for "read, but nothing to add" (a file that was reported instead)
_NOTHING: list[Any] = [(None,)]


class UnreadableFileWarning(UserWarning):
    """A file napari-dlcb accepted could not be read (shown by napari as a notification)."""


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return a reader for ``path`` if napari-dlcb can open it, else None.

    Parameters
    ----------
    path : str, path-like or list of them
        TIFF, PNG, a Zarr/OME-Zarr folder, or an annotation store
        (``*.dlcb.zarr``). For a list, every path must be readable.

    Returns
    -------
    callable or None
        ``reader(path) -> list of (data, kwargs, layer_type)``.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_can_read(Path(p)) for p in paths):
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read files into napari layer data, with their saved annotations.

    Parameters
    ----------
    path : str, path-like or list of them
        What :func:`get_reader` accepted.

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)``: images as ``"image"`` (``rgb=True`` for
        RGB, ``multiscale=True`` for OME-Zarr pyramids), files named
        ``*_labels``/``*mask*``/``*_scribbles`` (see
        :func:`~napari_dlcb.io.paths.is_labels_path`) and OME-Zarr label images as
        ``"labels"``, and any layers autosaved for the image as ``"labels"``.

        A file that cannot be read is reported as an
        :class:`UnreadableFileWarning` (one line naming it) and skipped; when
        no file could be read the result is napari's "nothing to add" value
        ``[(None,)]``. Nothing is raised into napari.
    """
    from napari_dlcb.errors import DlcbError

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            layers.extend(_read_one(Path(p)))
        except (DlcbError, OSError, MemoryError) as exc:
            warnings.warn(_one_line(exc, Path(p)), UnreadableFileWarning, stacklevel=2)
        except Exception as exc:  # noqa: BLE001 - a reader hook must never raise into napari
            warnings.warn(_one_line(exc, Path(p), bug=True), UnreadableFileWarning, stacklevel=2)
    return layers or list(_NOTHING)


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer to a compressed TIFF (napari writer hook).

    Parameters
    ----------
    path : str
        Destination ``.tif``/``.tiff``.
    data : array-like
        Layer data (for a multiscale layer, the full-resolution level is written).
    meta : dict
        Layer attributes (unused: TIFF keeps the pixels and dtype).

    Returns
    -------
    list of str
        The written path.
    """
    from napari_dlcb.io.images import write_labels_tiff as _write

    return [str(_write(path, data))]


def write_labels_ome_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer as a multiscale OME-Zarr label image (napari writer hook).

    If ``path`` is an existing OME-Zarr *image* of the same shape, the labels are
    added to its ``labels/`` group under the layer's name instead of replacing
    the image.

    Parameters
    ----------
    path : str
        Destination ``.zarr``/``.ome.zarr``.
    data : array-like
        Layer data (for a multiscale layer, the full-resolution level is written).
    meta : dict
        Layer attributes: ``name``, ``scale`` and ``translate`` are stored.

    Returns
    -------
    list of str
        The written path (the label image folder).
    """
    from napari_dlcb.io.omezarr_write import add_ome_zarr_labels, write_ome_zarr
    from napari_dlcb.io.paths import image_stem, is_zarr_path

    p = Path(path)
    name = str(meta.get("name") or image_stem(p))
    if is_zarr_path(p) and _is_ome_image(p):
        return [str(add_ome_zarr_labels(p, data, name=name))]
    arr = data[0] if isinstance(data, (list, tuple)) else data
    axes = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}.get(getattr(arr, "ndim", 0))
    if axes is None:
        from napari_dlcb.errors import DlcbError

        raise DlcbError(f"cannot write '{p.name}': labels must be 2-D to 5-D")
    scale = _per_axis(meta.get("scale"), len(axes), 1.0)
    translate = _per_axis(meta.get("translate"), len(axes), 0.0)
    out = write_ome_zarr(
        p, arr, axes=axes, kind="labels", scale=scale, translate=translate, name=name
    )
    return [str(out)]


# --------------------------------------------------------------------------- helpers


def _can_read(p: Path) -> bool:
    """A regular file with an image suffix and its format's signature, or a Zarr folder."""
    name = p.name.lower()
    try:
        st = p.stat()
    except OSError:
        return False
    if name.endswith(_FILE_SUFFIXES):
        if not stat.S_ISREG(st.st_mode):  # a pipe or a device: never open it
            return False
        magic = _MAGIC[Path(name).suffix]
        try:
            with open(p, "rb") as fh:
                head = fh.read(8)
        except OSError:
            return False
        return head.startswith(magic)
    if stat.S_ISDIR(st.st_mode):
        return any((p / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray"))
    return False


def _one_line(exc: BaseException, p: Path, *, bug: bool = False) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError):
        text = f"cannot read '{p.name}': not enough memory"
    elif isinstance(exc, OSError):
        text = f"cannot read '{p.name}': {exc.strerror or exc}"
    elif bug:
        text = f"cannot read '{p.name}': unexpected {type(exc).__name__}: {text} (please report it)"
    return f"napari-dlcb: {text}"


def _read_one(p: Path) -> list[LayerData]:
    from napari_dlcb.io.images import read_image
    from napari_dlcb.io.paths import image_stem, is_labels_path

    if p.name.lower().endswith(_STORE_SUFFIX):
        return _annotation_layers(p, image_path=None)
    if p.is_dir():
        layers = _read_zarr(p)
    else:
        import math

        from napari_dlcb.errors import DlcbError
        from napari_dlcb.io.images import image_shape

        big = math.prod(image_shape(p)) > _LAZY_PIXELS  # from the header: a bomb stays lazy
        lazy = (big or p.stat().st_size > _LAZY_TIFF_BYTES) and p.suffix.lower() != ".png"
        data = read_image(p, lazy=lazy)
        if data.dtype.kind not in "biuf":
            raise DlcbError(f"cannot read '{p.name}': napari cannot show {data.dtype} pixels")
        name = image_stem(p)
        if is_labels_path(p) and data.dtype.kind in "iub":
            layers = [(_as_labels(data), {"name": name}, "labels")]
        else:
            rgb = data.ndim == 3 and data.shape[-1] == 3
            kwargs = {"name": name, "rgb": rgb, "metadata": {"source_path": str(p)}}
            layers = [(data, kwargs, "image")]
    return layers + _annotation_layers(p, image_path=p)


def _read_zarr(p: Path) -> list[LayerData]:
    import zarr

    from napari_dlcb.io.omezarr import ome_zarr_label_names, open_zarr, read_multiscale, read_zarr
    from napari_dlcb.io.paths import image_stem, is_labels_path

    node = open_zarr(p)
    name = image_stem(p)
    if isinstance(node, zarr.Array):
        data = read_zarr(p)
        if is_labels_path(p) and data.dtype.kind in "iub":
            return [(data, {"name": name}, "labels")]
        return [(data, {"name": name, "metadata": {"source_path": str(p)}}, "image")]
    levels, meta = read_multiscale(p)
    kwargs: dict[str, Any] = {
        "name": meta["name"] if meta["name"] not in ("", "/") else name,
        "scale": meta["scale"],
        "translate": meta["translate"],
        "multiscale": len(levels) > 1,
    }
    data = levels if len(levels) > 1 else levels[0]
    if meta["kind"] == "labels":
        return [(data, kwargs, "labels")]
    kwargs["metadata"] = {"source_path": str(p)}
    channel_axis = meta["channel_axis"]
    if channel_axis is not None:
        n = levels[0].shape[channel_axis]
        kwargs["channel_axis"] = channel_axis
        kwargs["name"] = [f"{kwargs['name']} [{i}]" for i in range(n)]
        keep = [i for i in range(levels[0].ndim) if i != channel_axis]
        kwargs["scale"] = [meta["scale"][i] for i in keep]
        kwargs["translate"] = [meta["translate"][i] for i in keep]
    layers: list[LayerData] = [(data, kwargs, "image")]
    for label_name in ome_zarr_label_names(p):
        lv, lmeta = read_multiscale(p / "labels" / label_name)
        lkw = {
            "name": label_name,
            "scale": lmeta["scale"],
            "translate": lmeta["translate"],
            "multiscale": len(lv) > 1,
        }
        layers.append((lv if len(lv) > 1 else lv[0], lkw, "labels"))
    return layers


def _annotation_layers(p: Path, *, image_path: Path | None) -> list[LayerData]:
    from napari_dlcb.io.project import AnnotationStore

    store = (
        AnnotationStore.open_store(p) if image_path is None else AnnotationStore.find(image_path)
    )
    if store is None:
        return []
    layers: list[LayerData] = []
    for name, (array, md) in store.load_all().items():
        kwargs: dict[str, Any] = {
            "name": name,
            "metadata": {"label_kind": md.get("label_kind"), "dlcb_autosave": True},
        }
        for key in ("scale", "translate"):
            if md.get(key) is not None and len(md[key]) == array.ndim:
                kwargs[key] = md[key]
        layers.append((array, kwargs, "labels"))
    return layers


def _is_ome_image(p: Path) -> bool:
    from napari_dlcb.errors import DlcbError
    from napari_dlcb.io.omezarr import read_multiscale

    try:
        _, meta = read_multiscale(p, squeeze=False)
    except DlcbError:
        return False
    return meta["kind"] == "image"


def _as_labels(data: Any) -> Any:
    return data.astype("uint8") if data.dtype == bool else data


def _per_axis(value: Any, ndim: int, fill: float) -> list[float]:
    if value is None:
        return [fill] * ndim
    vals = [float(v) for v in value]
    return ([fill] * ndim + vals)[-ndim:]
