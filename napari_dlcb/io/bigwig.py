"""Check a bigWig's structure before the C library (libBigWig, via pyBigWig) opens it.

libBigWig trusts the offsets and counts in a file: a header without the rest
of the file, or an index offset past its end, crashes the process (a
segmentation fault that takes napari down with it) or prints C error lines.
:func:`check_bigwig` reads the fixed-size header, the zoom headers, the
chromosome B+ tree and the R-tree indexes in Python, checks every magic
number, count and offset against the file's size, and raises a one-line
:class:`~napari_dlcb.errors.DlcbError` naming the file and what is wrong.
Only structure is checked (a few kB to a few MB of index is read); the
compressed data blocks are left to the library, which reports them as errors.

Layout (UCSC "BBI" format, Kent et al. 2010; all numbers little- or
big-endian as the magic says): a 64-byte header, ``zoomLevels`` 24-byte zoom
headers, a B+ tree of chromosome names, and one R-tree index for the full
data and one per zoom level.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from napari_dlcb.errors import DlcbError

__all__ = ["BIGWIG_MAGIC", "check_bigwig"]

BIGWIG_MAGIC = 0x888FFC26
_CHROM_TREE_MAGIC = 0x78CA8C91
_RTREE_MAGIC = 0x2468ACE0
#: bounds no real file comes near; a value past them is corruption, not data
_MAX_ZOOMS = 64
_MAX_KEY = 1024
_MAX_CHROMS = 10_000_000
_MAX_NODE_ITEMS = 1 << 16
_MAX_BUFFER = 1 << 30
_MAX_NODES = 5_000_000


class _Reader:
    """Bounded reads from one open file; every read past the end is a DlcbError."""

    def __init__(self, fh, size: int, name: str, endian: str):
        self.fh, self.size, self.name, self.endian = fh, size, name, endian
        self.nodes = 0

    def fail(self, what: str) -> DlcbError:
        return DlcbError(f"{self.name}: corrupt or truncated bigWig ({what})")

    def unpack(self, fmt: str, offset: int, what: str) -> tuple:
        n = struct.calcsize(self.endian + fmt)
        if offset < 0 or offset + n > self.size:
            raise self.fail(
                f"{what} at byte {offset:,} lies past the end of the {self.size:,}-byte file"
            )
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) != n:
            raise self.fail(f"{what} is cut short")
        return struct.unpack(self.endian + fmt, data)

    def node(self) -> None:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise self.fail("its indexes have more nodes than any genome needs (a loop?)")


def check_bigwig(path: str | os.PathLike) -> dict[str, int]:
    r"""Check the structure of the bigWig at ``path``; return its chromosome sizes.

    Parameters
    ----------
    path : path-like
        A file that starts with the bigWig magic number.

    Returns
    -------
    dict
        Chromosome name to length, read from the file's own chromosome tree.

    Raises
    ------
    DlcbError
        One line naming the file and the first thing found wrong: a header
        cut short, a bad magic number in an index, an offset or count that
        points past the end of the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bw"
    >>> _ = p.write_bytes(b"\x26\xfc\x8f\x88")  # only the magic number
    >>> check_bigwig(p)
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: x.bw: corrupt or truncated bigWig (the 64-byte header is cut short: the file has 4 bytes)
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(64)
        if len(head) < 4:
            raise DlcbError(f"{p.name}: not a bigWig file (only {len(head)} bytes)")
        endian = {BIGWIG_MAGIC.to_bytes(4, "little"): "<", BIGWIG_MAGIC.to_bytes(4, "big"): ">"}
        if head[:4] not in endian:
            raise DlcbError(f"{p.name}: not a bigWig file (wrong magic number)")
        r = _Reader(fh, size, p.name, endian[head[:4]])
        if len(head) < 64:
            raise r.fail(f"the 64-byte header is cut short: the file has {size:,} bytes")
        return _check(r)


def _check(r: _Reader) -> dict[str, int]:
    (_, version, zooms, chrom_tree, data, index, _, _, _, summary, buf, ext) = r.unpack(
        "IHHQQQHHQQIQ", 0, "header"
    )
    if not 1 <= version <= 64:
        raise r.fail(f"format version {version}")
    if zooms > _MAX_ZOOMS:
        raise r.fail(f"{zooms} zoom levels")
    if buf > _MAX_BUFFER:
        raise r.fail(f"a {buf:,}-byte decompression buffer")
    for what, offset in (("chromosome tree", chrom_tree), ("data", data), ("index", index)):
        if not 64 <= offset < r.size:
            raise r.fail(f"the {what} offset {offset:,} is outside the {r.size:,}-byte file")
    for what, offset in (("summary", summary), ("extension header", ext)):
        if offset and not 64 <= offset < r.size:
            raise r.fail(f"the {what} offset {offset:,} is outside the {r.size:,}-byte file")
    if summary:
        r.unpack("Qdddd", summary, "the summary")
    (sections,) = r.unpack("Q", data, "the data count")
    if sections * 2 > r.size:  # a section is far larger than 2 bytes
        raise r.fail(f"{sections:,} data sections in a {r.size:,}-byte file")
    chroms = _chrom_tree(r, chrom_tree)
    _rtree(r, index, "the data index")
    for z in range(zooms):
        _, _, zdata, zindex = r.unpack("IIQQ", 64 + 24 * z, f"zoom header {z + 1}")
        r.unpack("I", zdata, f"zoom level {z + 1} data")
        _rtree(r, zindex, f"zoom level {z + 1} index")
    return chroms


def _chrom_tree(r: _Reader, offset: int) -> dict[str, int]:
    magic, block, key, val, count, _ = r.unpack("IIIIQQ", offset, "the chromosome tree")
    if magic != _CHROM_TREE_MAGIC:
        raise r.fail("bad chromosome tree magic number")
    if not (0 < key <= _MAX_KEY and val == 8 and 0 < block <= _MAX_NODE_ITEMS):
        raise r.fail(f"chromosome tree of {key}-byte names and {val}-byte values")
    if not 0 < count <= _MAX_CHROMS:
        raise r.fail(f"{count:,} chromosomes")
    chroms: dict[str, int] = {}
    ids: set[int] = set()
    stack, seen = [offset + 32], set()
    while stack:
        node = stack.pop()
        if node in seen:
            raise r.fail("the chromosome tree loops")
        seen.add(node)
        r.node()
        leaf, _, n = r.unpack("BBH", node, "a chromosome tree node")
        if n > block:
            raise r.fail(f"a chromosome tree node holds {n} items, more than its {block}")
        item = key + 8
        for i in range(n):
            at = node + 4 + i * item
            if leaf:
                name, ix, length = r.unpack(f"{key}sII", at, "a chromosome name")
                if ix >= count or ix in ids:  # the library indexes an array with it
                    raise r.fail(f"chromosome number {ix:,} of {count:,}")
                ids.add(ix)
                chroms[name.rstrip(b"\0").decode("ascii", "replace")] = length
            else:
                (child,) = r.unpack("Q", at + key, "a chromosome tree child")
                stack.append(child)
    if len(chroms) != count:
        raise r.fail(f"the chromosome tree holds {len(chroms)} names, not the {count} it declares")
    return chroms


def _rtree(r: _Reader, offset: int, what: str) -> None:
    magic, block, _, _, _, _, _, end, _, _ = r.unpack("IIQIIIIQII", offset, what)
    if magic != _RTREE_MAGIC:
        raise r.fail(f"bad magic number in {what}")
    if not 0 < block <= _MAX_NODE_ITEMS:
        raise r.fail(f"{what} with {block:,} items per node")
    if end > r.size:
        raise r.fail(f"{what} ends at byte {end:,}, past the end of the file")
    stack, seen = [offset + 48], set()
    while stack:
        node = stack.pop()
        if node in seen:
            raise r.fail(f"{what} loops")
        seen.add(node)
        r.node()
        leaf, _, n = r.unpack("BBH", node, what)
        if n > block:
            raise r.fail(f"a node of {what} holds {n} items, more than its {block}")
        fmt, width = ("IIIIQQ", 32) if leaf else ("IIIIQ", 24)
        if not n:
            continue
        raw = r.unpack(f"{width * n}s", node + 4, what)[0]
        for item in struct.iter_unpack(r.endian + fmt, raw):
            if not leaf:
                stack.append(item[4])
            elif item[4] + item[5] > r.size:
                raise r.fail(f"a data block of {what} lies past the end of the file")
