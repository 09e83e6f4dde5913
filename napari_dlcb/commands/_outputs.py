"""Every CLI verb's ``--out``: checked before any work, written beside it, renamed when done.

:func:`check_out` refuses, in one line, an output that would lose data or
fail late: a file where a folder is expected (``/dev/null`` included), a path
under a file, a folder that cannot be written, an output that is, contains or
lies inside an input, a folder of someone else's files, and an existing model
or result folder unless ``--overwrite`` is given. It runs before any model is
loaded or any image is read.

:func:`result_folder` builds a result folder (prediction TIFFs...) at a
temporary sibling and renames it into place when complete, so a kill, a
timeout or a full disk leaves the previous results or nothing, never a folder
of half-written files. A finished result folder carries :data:`RESULT_MARK`,
which is how a later run recognises it as replaceable.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import PendingDir, atomic_write, fsync_tree, sweep_stale

__all__ = [
    "RESULT_MARK",
    "check_out",
    "check_out_file",
    "result_folder",
    "write_out_file",
    "write_tsv",
]

#: file that marks a folder as a napari-dlcb result (so ``--overwrite`` may replace it)
RESULT_MARK = ".napari-dlcb-result.json"
#: what each kind of output folder holds when napari-dlcb wrote it
_OURS = {
    "model": ("metadata.json",),
    "study": ("study.json", "study.journal", "trials.tsv"),
    "folder": (RESULT_MARK,),
}
_NOUN = {"model": "a model", "study": "a study", "folder": "results"}


def check_out(
    out: str | os.PathLike,
    *,
    kind: str = "folder",
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    resume: bool = False,
    option: str = "--out",
) -> Path:
    """Check an output folder before any work; return it (absolute).

    Parameters
    ----------
    out : str or path-like
        The ``--out`` folder.
    kind : {"folder", "model", "study"}
        What will be written: a result folder, a model folder or a tuning study.
    inputs : iterable of path
        Files and folders the run reads; ``out`` may not be, contain or lie in one.
    overwrite : bool
        Allow replacing an existing output of the same kind.
    resume : bool
        The run continues what is in ``out`` (a model folder's checkpoints, a
        study): an existing output is expected, not refused.
    option : str
        The option's name, for messages.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DlcbError
        One line naming the option and what is wrong.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "images").mkdir()
    >>> check_out(d / "pred", inputs=[d / "images"]).name
    'pred'
    >>> check_out(d / "images" / "pred", inputs=[d / "images"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: --out ... lies inside the input ...
    """
    out = Path(os.path.abspath(os.fspath(out)))
    _check_not_input(out, inputs, option)
    _check_place(out, option)
    sweep_stale(out)
    if out.is_dir():
        _check_existing(out, kind, overwrite, resume, option)
    _check_writable(out, option)
    return out


def check_out_file(
    out: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str = "--out",
) -> Path:
    """Check an output *file* (a table, a map) before any work; return it (absolute).

    Refuses, in one line, a file that is or lies inside an input, an existing
    folder, a device or pipe (``/dev/null``), a path under a file and a place
    that cannot be written. Write it with :func:`write_out_file` (or :func:`write_tsv`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "t.tsv").write_text("seq")
    >>> check_out_file(d / "p.tsv", inputs=[d / "t.tsv"]).name
    'p.tsv'
    >>> check_out_file(d / "t.tsv", inputs=[d / "t.tsv"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: --out ... is the input ...
    """
    out = Path(os.path.abspath(os.fspath(out)))
    _check_not_input(out, inputs, option)
    st = _stat(out, option)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DlcbError(f"{option} {out} is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DlcbError(f"{option} {out} is not a regular file (a device, a pipe?)")
    _check_parents(out, option, broken_links=False)
    _check_writable(out, option)
    return out


def write_out_file(out: Path, write: Callable[[Path], Any]) -> Path:
    """Write the output file ``out`` checked by :func:`check_out_file`; return it.

    Its folder is created if needed; ``write(tmp)`` writes a temporary file
    renamed onto ``out`` when done (:func:`napari_dlcb.io.atomic.atomic_write`).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, write)


def write_tsv(out: Path, table: Any) -> Path:
    """Write a pandas table to the output file ``out`` as TSV (numbers to 6 significant digits)."""
    return write_out_file(
        out, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    )


def _check_not_input(out: Path, inputs: Iterable[str | os.PathLike | None], option: str) -> None:
    real_out = Path(os.path.realpath(out))
    for given in inputs:
        if given is None or not os.path.lexists(os.fspath(given)):
            continue  # a word ("builtin", "jaspar") or a missing file: nothing to overwrite
        src = Path(os.path.realpath(os.path.abspath(os.fspath(given))))
        if real_out == src:
            how = "is"
        elif real_out.is_relative_to(src):
            how = "lies inside"
        elif src.is_relative_to(real_out):
            how = "contains"
        else:
            continue
        raise DlcbError(
            f"{option} {out} {how} the input {given}; napari-dlcb never writes into its inputs"
        )


def _check_place(out: Path, option: str) -> None:
    """``out`` is a folder or nothing yet, and every existing parent is a folder."""
    st = _stat(out, option)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else "not a regular folder (a device, a pipe?)"
        raise DlcbError(f"{option} {out} is {what}; give a folder")
    _check_parents(out, option, broken_links=True)


def _stat(out: Path, option: str) -> os.stat_result | None:
    """``out``'s status, None when nothing is there yet; one line for any other error."""
    try:
        return out.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DlcbError(f"{option} {out}: {err.strerror or err}") from None


def _check_parents(out: Path, option: str, *, broken_links: bool) -> None:
    """The nearest existing parent of ``out`` is a folder.

    With ``broken_links``, a dangling link met on the way there is refused too.
    """
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DlcbError(f"{option} {out}: {parent} is a file, not a folder")
            break
        if broken_links and parent.is_symlink():  # a dangling link in the path
            raise DlcbError(f"{option} {out}: {parent} is a broken link")


def _check_existing(out: Path, kind: str, overwrite: bool, resume: bool, option: str) -> None:
    try:
        names = {
            p.name for p in out.iterdir() if not p.name.startswith(".") or p.name == RESULT_MARK
        }
    except OSError as err:
        raise DlcbError(f"{option} {out}: {err.strerror or err}") from None
    if not names:
        return
    ours = any(n in names for n in _OURS[kind])
    if kind == "model" and not ours and names <= {"checkpoints"}:
        if resume or overwrite:
            return
        raise DlcbError(
            f"{option} {out} holds the checkpoints of an unfinished run; pass --resume to "
            "continue it or --overwrite to start again"
        )
    if not ours:
        raise DlcbError(
            f"{option} {out} is a folder of other files; choose a new or empty folder "
            f"(napari-dlcb replaces only {_NOUN[kind]} it wrote)"
        )
    if resume or overwrite:
        return
    hint = (
        "; pass --overwrite to replace it or --resume to continue its training"
        if kind == "model" and (out / "checkpoints").is_dir()
        else "; pass --overwrite to replace it"
    )
    raise DlcbError(f"{option} {out} already holds {_NOUN[kind]}{hint}")


def _check_writable(out: Path, option: str) -> None:
    """Create and remove a probe file where ``out`` will be written (works for root too)."""
    target = out if out.is_dir() else next((p for p in out.parents if p.exists()), None)
    if target is None:  # pragma: no cover - "/" always exists
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-dlcb-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DlcbError(
            f"{option} {out} cannot be written ({err.strerror or err} in {target})"
        ) from None


@contextmanager
def result_folder(
    out: str | os.PathLike, *, command: str, overwrite: bool = False
) -> Iterator[Path]:
    """Build a result folder at a temporary sibling; rename it onto ``out`` when complete.

    Parameters
    ----------
    out : str or path-like
        The checked ``--out`` folder (see :func:`check_out`).
    command : str
        The verb, recorded in :data:`RESULT_MARK`.
    overwrite : bool
        Replace an existing result folder.

    Yields
    ------
    pathlib.Path
        The temporary folder to write into. Nothing appears at ``out`` unless
        the block ends without an error.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "pred"
    >>> with result_folder(out, command="demo") as tmp:
    ...     _ = (tmp / "a.txt").write_text("x")
    >>> sorted(p.name for p in out.iterdir())
    ['.napari-dlcb-result.json', 'a.txt']
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DlcbError(f"{out} already holds results; pass --overwrite to replace it")
    try:
        pending = PendingDir(out, overwrite=True, zarr_only=False)
        pending.path.mkdir(parents=True)
    except OSError as err:
        raise DlcbError(f"cannot write {out}: {err.strerror or err}") from None
    try:
        yield pending.path
        (pending.path / RESULT_MARK).write_text(json.dumps({"command": command}) + "\n")
        fsync_tree(pending.path)
        pending.commit()
    except OSError as err:
        where = f" ({Path(err.filename).name})" if getattr(err, "filename", None) else ""
        raise DlcbError(
            f"cannot write the results to {out}: {err.strerror or err}{where}; "
            "nothing was changed there"
        ) from None
    finally:
        pending.discard()
