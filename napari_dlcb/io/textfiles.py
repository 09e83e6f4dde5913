"""Small helpers shared by the genome readers: file checks, plain or gzip text, one-line errors."""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from pathlib import Path
from typing import TextIO

from napari_dlcb.errors import DlcbError

__all__ = ["check_file", "is_gzip", "one_line", "open_text"]


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether the file starts with the gzip magic bytes."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class _CheckedGzip(gzip.GzipFile):
    """A gzip reader whose truncated or corrupt stream is a one-line :class:`DlcbError`."""

    def _checked(self, method, *args):
        try:
            return method(*args)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            name = Path(os.fsdecode(self.name)).name
            raise DlcbError(
                f"{name}: the gzip file is truncated or corrupt ({one_line(err)})"
            ) from None

    def read(self, size=-1):  # noqa: D102
        return self._checked(super().read, size)

    def read1(self, size=-1):  # noqa: D102
        return self._checked(super().read1, size)

    def readline(self, size=-1):  # noqa: D102
        return self._checked(super().readline, size)

    def peek(self, n):  # noqa: D102
        return self._checked(super().peek, n)


def open_text(path: str | os.PathLike) -> TextIO:
    """Open a plain or gzip text file (UTF-8, undecodable bytes replaced).

    A truncated or corrupt gzip stream raises a one-line :class:`DlcbError` when read.
    """
    if is_gzip(path):
        raw = _CheckedGzip(os.fspath(path), "rb")
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def check_file(path: str | os.PathLike, kind: str) -> Path:
    """``path`` as a Path if it is a non-empty file, else a one-line :class:`DlcbError`.

    Examples
    --------
    >>> check_file("/no/such/file.bed", "BED")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: BED file not found: /no/such/file.bed
    """
    p = Path(path)
    if not p.exists():
        raise DlcbError(f"{kind} file not found: {p}")
    if p.is_dir():
        raise DlcbError(f"{kind} path is a folder, not a file: {p}")
    if not stat.S_ISREG(p.stat().st_mode):  # a pipe or a device: reading it could block forever
        raise DlcbError(f"{kind} file is not a regular file (a pipe or a device?): {p}")
    if p.stat().st_size == 0:
        raise DlcbError(f"{kind} file is empty: {p}")
    return p


def one_line(err: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    return " ".join(str(err).split())[:200]
