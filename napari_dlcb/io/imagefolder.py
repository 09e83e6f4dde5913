"""Folders of images: the ImageFolder layout (one sub-folder per class) and flat folders.

Shared by the CLI (``train``/``predict classification``), the tuner's
objectives and the pretraining scripts, so every entry point reads a folder
the same way and refuses the same bad layouts with the same one-line errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = [
    "IMAGE_SUFFIXES",
    "check_real",
    "find_image_folder",
    "image_label_pairs",
    "list_images",
    "read_image_folder",
    "read_image_pairs",
    "read_images",
    "stem_files",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """All PNG/TIFF files under ``folder`` (recursively, hidden entries skipped), sorted.

    An entry with an image suffix that is a pipe or a device is refused by name
    rather than skipped (the same rule as :func:`stem_files`).
    """
    folder = Path(folder)
    found = []
    for f in folder.rglob("*"):
        if f.suffix.lower() not in IMAGE_SUFFIXES or any(
            part.startswith(".") for part in f.relative_to(folder).parts
        ):
            continue
        if f.is_file():
            found.append(f)
        elif f.exists() and not f.is_dir():
            raise DlcbError(
                f"cannot read '{f.name}' in {folder}: not a regular file (a device or a pipe?)"
            )
    return sorted(found)


def find_image_folder(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """Read an ImageFolder layout: one sub-folder per class.

    Parameters
    ----------
    folder : Path
        ``folder/<class name>/**/*.png|tif|tiff``.

    Returns
    -------
    classes : list of str
        Sorted sub-folder names.
    files : list of Path
    labels : list of int
        Class index of each file.

    Raises
    ------
    DlcbError
        Missing folder, no class sub-folders, a single class, or an empty class.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DlcbError(f"not a folder: {folder}")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise DlcbError(
            f"{folder} has no class sub-folders; expected one sub-folder per class (ImageFolder)"
        )
    classes, files, labels = [], [], []
    for k, d in enumerate(subdirs):
        found = list_images(d)
        if not found:
            raise DlcbError(f"class folder '{d.name}' in {folder} has no PNG or TIFF images")
        classes.append(d.name)
        files += found
        labels += [k] * len(found)
    if len(classes) < 2:
        raise DlcbError(
            f"{folder} has a single class ('{classes[0]}'); a classifier needs at least 2 "
            "class sub-folders"
        )
    return classes, files, labels


def read_images(files: list[Path]) -> list[np.ndarray]:
    """Read 2-D grey or RGB images; a one-line error names a file that is neither."""
    from napari_dlcb.io.images import read_image

    out = []
    for f in files:
        im = np.asarray(read_image(f))
        if im.ndim not in (2, 3):
            raise DlcbError(f"{f.name} is not a 2-D grey or RGB image (shape {im.shape})")
        check_real(im, f.name)
        out.append(im)
    return out


def read_image_folder(folder: str | Path) -> tuple[list[str], list[np.ndarray], list[int]]:
    """``(classes, images, labels)`` of an ImageFolder."""
    classes, files, labels = find_image_folder(Path(folder))
    return classes, read_images(files), labels


def stem_files(folder: Path) -> dict[str, Path]:
    """Images of a flat folder by file stem (the first of each stem, sorted).

    An entry with an image suffix that is not a regular file (a pipe, a
    device, a broken link) is refused by name rather than skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DlcbError(f"not a folder: {folder}")
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):
            continue
        if not f.is_file():
            if f.is_dir():
                continue
            raise DlcbError(
                f"cannot read '{f.name}' in {folder}: not a regular file (a device, a pipe or "
                "a broken link?)"
            )
        files.setdefault(f.stem, f)
    if not files:
        raise DlcbError(f"no PNG or TIFF images in {folder}")
    return files


def image_label_pairs(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """Images paired with their label images by file stem; one-line errors for gaps."""
    imgs, labs = stem_files(images), stem_files(labels)
    missing = sorted(set(imgs) - set(labs))
    extra = sorted(set(labs) - set(imgs))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DlcbError(f"no label image for {', '.join(missing[:3])}{more} in {labels}")
    if extra:
        raise DlcbError(f"label image(s) without an image: {', '.join(extra[:3])} in {images}")
    return [(imgs[s], labs[s]) for s in sorted(imgs)]


def read_image_pairs(images: Path, labels: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read images and their 2-D label images (paired by stem, same size)."""
    from napari_dlcb.io.images import read_image

    pairs = image_label_pairs(Path(images), Path(labels))
    imgs = [np.asarray(read_image(i)) for i, _ in pairs]
    labs = [np.asarray(read_image(lab)) for _, lab in pairs]
    for (ip, lp), im, lab in zip(pairs, imgs, labs):
        if im.ndim not in (2, 3):
            raise DlcbError(f"{ip.name} is not a 2-D grey or multichannel image (shape {im.shape})")
        if lab.ndim != 2:
            raise DlcbError(f"label image {lp.name} is not a 2-D integer image")
        _check_label_values(lp, lab)
        if im.shape[:2] != lab.shape:
            raise DlcbError(
                f"label image {lp.name} has shape {lab.shape} but {ip.name} is {im.shape[:2]}"
            )
    return imgs, labs


def _check_label_values(path: Path, lab: np.ndarray) -> None:
    """Labels are whole numbers: integers, booleans, or floats holding whole numbers."""
    if lab.dtype.kind in "iub":
        return
    if lab.dtype.kind == "f" and np.isfinite(lab).all() and (lab == np.round(lab)).all():
        return
    raise DlcbError(
        f"label image {path.name} holds {lab.dtype} values that are not whole numbers; "
        "labels are integers (0 = unlabelled)"
    )


def check_real(image: np.ndarray, name: str) -> None:
    """Refuse complex pixels and NaN/infinite ones (the training and prediction rule).

    Examples
    --------
    >>> check_real(np.ones((2, 2), np.complex64), "c.tif")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: c.tif has complex64 pixels; a model needs real intensities
    """
    if image.dtype.kind == "c":
        raise DlcbError(f"{name} has {image.dtype} pixels; a model needs real intensities")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        what = "NaN" if not np.isinf(image).any() else "NaN or infinite"
        raise DlcbError(
            f"{name} has {bad} {what} pixels; replace them (e.g. with 0) or crop them away: "
            "napari-dlcb does not guess values"
        )
