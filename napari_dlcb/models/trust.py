"""Consent before running code that came with a model file.

A TorchScript file (``model.pt``, a BioImage.IO package's TorchScript
weights, an external DNA model) is a *program*: loading and running it can
read and overwrite files on this computer, loop forever, or worse. Weights in
safetensors with a known architecture are data and run only our code, so the
project's own models load that way and never need consent.

The rule, the same in the CLI and the GUI:

- a code-carrying file runs only if the user agreed: ``--trust-model`` in the
  CLI, a confirmation dialog in the GUI;
- agreeing records the file's sha256 in an allow-list in the user cache
  (``trusted_models.json``), so the same file is not asked about again; a
  changed file has a new digest and is asked about again;
- without consent, :func:`require_trust` raises :class:`UntrustedModelError`
  (a one-line :class:`~napari_dlcb.errors.DlcbError` that says what to do).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from napari_dlcb.errors import DlcbError

__all__ = [
    "UntrustedModelError",
    "file_sha256",
    "is_trusted",
    "require_trust",
    "trust",
    "trust_file",
    "trust_this_session",
]

TRUST_FILE = "trusted_models.json"
#: set by the CLI's ``--trust-model``: consent for every code-carrying file of this run
_SESSION = {"trust_all": False}


def trust_this_session(value: bool = True) -> None:
    """Consent (``--trust-model``) to run the code-carrying files this process opens."""
    _SESSION["trust_all"] = bool(value)


class UntrustedModelError(DlcbError):
    """A code-carrying model file that the user has not agreed to run."""

    def __init__(self, path: Path, sha256: str, what: str) -> None:
        self.path, self.sha256, self.what = Path(path), sha256, what
        super().__init__(
            f"{what} {self.path.name} can run code on this computer (read or change files); "
            "run it only if you trust its source: pass --trust-model (CLI) or confirm in the dock"
        )


def trust_file() -> Path:
    """The allow-list: ``trusted_models.json`` in the user cache."""
    from napari_dlcb.io.project import user_cache_dir

    return user_cache_dir() / TRUST_FILE


def file_sha256(path: str | os.PathLike, *, limit: int | None = None) -> str:
    """sha256 of a file, read in chunks (at most ``limit`` bytes, else an error)."""
    p = Path(path)
    if not p.is_file():
        raise DlcbError(f"not a regular file: {p}")
    size = p.stat().st_size
    if limit is not None and size > limit:
        raise DlcbError(f"{p.name} is {size:,} bytes, more than the {limit:,} allowed")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load() -> dict[str, dict]:
    try:
        data = json.loads(trust_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_trusted(path: str | os.PathLike, *, sha256: str | None = None) -> bool:
    """Whether the user agreed to run this exact file (by its digest)."""
    digest = sha256 or file_sha256(path)
    return digest in _load()


def trust(path: str | os.PathLike, *, sha256: str | None = None, note: str = "") -> str:
    """Record consent to run this file; return its digest (written atomically)."""
    digest = sha256 or file_sha256(path)
    entries = _load()
    entries[digest] = {
        "file": str(Path(path).resolve()),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "note": note,
    }
    target = trust_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    tmp.replace(target)
    return digest


def require_trust(
    path: str | os.PathLike,
    *,
    trusted: bool = False,
    what: str = "the TorchScript model",
    sha256: str | None = None,
) -> str:
    """Allow running ``path`` if trusted before or ``trusted`` now (recorded); else refuse.

    ``sha256`` is the digest of the code when the caller already has it (the
    weights inside a BioImage.IO ``.zip``: ``path`` is then the package).

    Returns
    -------
    str
        The file's sha256.

    Raises
    ------
    UntrustedModelError
        The user has not agreed to run this file.
    """
    digest = sha256 or file_sha256(path)
    if digest in _load():
        return digest
    if trusted or _SESSION["trust_all"]:
        return trust(path, sha256=digest, note=what)
    raise UntrustedModelError(Path(path), digest, what)
