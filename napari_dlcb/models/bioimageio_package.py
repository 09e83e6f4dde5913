"""Read access to a BioImage.IO package (folder or ``.zip``), confined to the package.

A package is a folder (or ``.zip``) holding ``bioimageio.yaml`` (or the older
``rdf.yaml``) and the files it names. :func:`open_package` gives bounded,
confined reads of those files (no URL, no ``..``, no absolute path, no link
out of the folder, no device, at most the declared size);
:func:`read_description` parses and validates the description with
``bioimageio.spec`` (format 0.4 is converted to 0.5), without network access.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_rdf import first_error, spec_v05
from napari_dlcb.models.meta import one_line

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_YAML_BYTES",
    "Package",
    "describe_package",
    "find_bioimageio_yaml",
    "is_bioimageio_package",
    "open_package",
    "read_description",
]

_YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: The largest file napari-dlcb reads from a package (weights included).
MAX_FILE_BYTES = 4 * 1024**3
#: The largest description file read.
MAX_YAML_BYTES = 4 * 1024**2


# ------------------------------------------------------------------------------ package
class Package:
    """Read access to a package folder or zip file, confined to the package.

    Use :func:`open_package`. :meth:`read` returns the bytes of a file the
    description names, refusing URLs, absolute paths, ``..``, links out of the
    folder, non-regular files and files over their declared size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self.zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as err:
                raise DlcbError(f"cannot open bioimage.io package {path}: {one_line(err)}") from err
            names = set(self.zip.namelist())
            cands = [n for n in _YAML_NAMES if n in names]
            cands += sorted(n for n in names if n.endswith(".bioimageio.yaml") and "/" not in n)
            if not cands:
                self.zip.close()
                raise DlcbError(f"no bioimageio.yaml or rdf.yaml in {path}")
            self.yaml_name = cands[0]
            self.root = path
            if self.zip.getinfo(self.yaml_name).file_size > MAX_YAML_BYTES:
                self.zip.close()
                raise DlcbError(f"{self.yaml_name} in {path} is too large for a description")
        else:
            yaml_file = find_bioimageio_yaml(path)
            if yaml_file is None:
                raise DlcbError(f"not a bioimage.io model package (no bioimageio.yaml): {path}")
            self.yaml_name = yaml_file.name
            self.root = yaml_file.parent

    def member(self, source: Any) -> str:
        """The package-relative POSIX name of a description's file ``source``, checked."""
        text = str(source)
        if "://" in text:
            raise DlcbError(
                f"the package refers to a remote file ({text}); napari-dlcb downloads "
                "nothing: use the complete package (.zip) from bioimage.io"
            )
        rel = PurePosixPath(text.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
            raise DlcbError(f"the package names a file outside itself ({text!r}); refused")
        name = "/".join(p for p in rel.parts if p not in ("", "."))
        if not name:
            raise DlcbError(f"the package names an empty file path ({text!r})")
        return name

    def read(self, source: Any, *, limit: int | None = None) -> bytes:
        """The bytes of the file ``source`` of the description (see the class docstring)."""
        name = self.member(source)
        limit = MAX_FILE_BYTES if limit is None else limit
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError as err:
                raise DlcbError(
                    f"file {name!r} named in the package is missing from {self.path}"
                ) from err
            if info.file_size > limit:
                raise DlcbError(f"{name} in {self.path} is larger than {limit:,} bytes; refused")
            try:  # zipfile reads at most the declared size and checks the CRC
                return self.zip.read(info)
            except (OSError, zipfile.BadZipFile, EOFError) as err:
                raise DlcbError(f"cannot read {name} from {self.path}: {one_line(err)}") from err
        return self._read_file(name, limit)

    def _read_file(self, name: str, limit: int) -> bytes:
        root = self.root.resolve()
        file = (root / name).resolve()
        if not file.is_relative_to(root):
            raise DlcbError(f"{name} in the package links outside it; refused")
        try:
            st = os.stat(file)
        except OSError as err:
            raise DlcbError(
                f"file {name!r} named in the package is missing from {self.path}"
            ) from err
        if not stat.S_ISREG(st.st_mode):
            raise DlcbError(f"{name} in the package is not a regular file; refused")
        if st.st_size > limit:
            raise DlcbError(f"{name} in {self.path} is larger than {limit:,} bytes; refused")
        with open(file, "rb") as f:
            data = f.read(st.st_size + 1)
        if len(data) != st.st_size:
            raise DlcbError(f"{name} in the package changed while it was read")
        return data

    def close(self) -> None:
        """Close the zip file, if any."""
        if self.zip is not None:
            self.zip.close()


@contextlib.contextmanager
def open_package(path: str | os.PathLike) -> Iterator[Package]:
    """Open a package folder, description file or ``.zip`` for confined reading.

    Parameters
    ----------
    path : str or path-like
        The package.

    Yields
    ------
    Package
        With ``read(source)`` and ``member(source)``; closed on exit.
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DlcbError(f"bioimage.io package not found: {p}")
    pkg = Package(p)
    try:
        yield pkg
    finally:
        pkg.close()


def find_bioimageio_yaml(path: str | os.PathLike) -> Path | None:
    """Return the model description file of a package folder (or the file itself).

    Parameters
    ----------
    path : str or path-like
        A package folder, or a ``*.yaml`` file.

    Returns
    -------
    pathlib.Path or None
        ``bioimageio.yaml``, ``rdf.yaml`` or ``*.bioimageio.yaml``; None if
        there is none.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p if p.suffix.lower() in (".yaml", ".yml") else None
    if not p.is_dir():
        return None
    for name in _YAML_NAMES:
        if (p / name).is_file():
            return p / name
    cands = sorted(p.glob("*.bioimageio.yaml"))
    return cands[0] if cands else None


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Return True if ``path`` looks like a bioimage.io package (folder, yaml or zip).

    Parameters
    ----------
    path : str or path-like
        Candidate path.

    Returns
    -------
    bool
    """
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
        return any(n in _YAML_NAMES or n.endswith(".bioimageio.yaml") for n in names)
    return find_bioimageio_yaml(p) is not None


def describe_package(pkg: Package) -> Any:
    """The validated 0.5 model description of an open package (nothing is fetched)."""
    spec_v05()
    from bioimageio.spec import load_description

    source: Any = pkg.zip if pkg.zip is not None else pkg.root / pkg.yaml_name
    if pkg.zip is None and (pkg.root / pkg.yaml_name).stat().st_size > MAX_YAML_BYTES:
        raise DlcbError(f"{pkg.yaml_name} in {pkg.path} is too large for a description")
    try:
        descr = load_description(source, perform_io_checks=False, format_version="latest")
    except Exception as err:  # the yaml reader and bioimageio.spec raise many types
        raise DlcbError(f"cannot read {pkg.yaml_name}: {one_line(err)}") from err
    kind = getattr(descr, "type", None)
    if kind != "model":
        raise DlcbError(f"{pkg.yaml_name} describes a {kind!r}, not a 'model'")
    if type(descr).__name__ == "InvalidDescr":
        raise DlcbError(f"invalid bioimage.io description: {first_error(descr.validation_summary)}")
    return descr


def read_description(path: str | os.PathLike) -> Any:
    """The validated model description of a package, converted to format 0.5.

    Parameters
    ----------
    path : str or path-like
        Package folder, description file or ``.zip``.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr

    Raises
    ------
    DlcbError
        If it is missing, not a model, or invalid (one line).
    """
    with open_package(path) as pkg:
        return describe_package(pkg)
