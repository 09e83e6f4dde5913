"""A model field for the docks: a path or ``builtin``, Browse, a check, a background load.

:class:`ModelField` is a line edit with a Browse menu (a model folder, or a
BioImage.IO package or file) that emits ``committed`` when the user finishes
typing or picks something; :func:`check_model_source` says at once, in one
line, when the text cannot be a model; :class:`ModelCache` loads each model
once, from whichever job needs it first (never on the GUI thread).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QMenu, QToolButton, QWidget

from napari_dlcb.errors import DlcbError

__all__ = ["ModelCache", "ModelField", "check_model_source", "describe_model"]


def check_model_source(text: str) -> str:
    """A model source the dock can load, or a one-line :class:`DlcbError`.

    ``builtin``/``builtin:<name>``, a napari-dlcb model folder (``metadata.json``),
    a BioImage.IO package folder (``bioimageio.yaml``/``rdf.yaml``) or file
    (such a YAML, or a ``.zip``).

    Examples
    --------
    >>> check_model_source(" builtin ")
    'builtin'
    """
    src = text.strip() or "builtin"
    if src == "builtin" or src.startswith("builtin:"):
        return src
    path = Path(src).expanduser()
    if not path.exists():
        raise DlcbError(f"model not found: {path}")
    if path.is_dir():
        if not any((path / n).is_file() for n in ("metadata.json", "bioimageio.yaml", "rdf.yaml")):
            raise DlcbError(
                f"{path.name} is not a model folder (no metadata.json or bioimageio.yaml)"
            )
    elif path.suffix.lower() not in (".zip", ".yaml", ".yml"):
        raise DlcbError(f"{path.name} is not a model: choose a folder, a .zip or a bioimageio.yaml")
    return str(path)


class ModelCache:
    """Models loaded once per source, from any thread (one lock per source)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._models: dict[str, tuple[Any, Any]] = {}

    def get(self, source: str) -> tuple[Any, Any]:
        """The model and metadata of ``source`` (loaded now if needed; runs in a job)."""
        from napari_dlcb.models import classifier as _classifier  # registers "cellclf"
        from napari_dlcb.models.registry import resolve_base

        del _classifier
        with self._lock:
            lock = self._locks.setdefault(source, threading.Lock())
        with lock:  # a second job for the same source waits for the first load
            if source not in self._models:
                self._models[source] = resolve_base(source)
            return self._models[source]

    def cached(self, source: str) -> bool:
        """Whether ``source`` is loaded."""
        return source in self._models


def describe_model(source: str, meta: Any) -> str:
    """One status line: which model is loaded and what it does."""
    classes = ", ".join(meta.classes[:4]) + ("…" if len(meta.classes) > 4 else "")
    return f"model {source}: {meta.task}, classes {classes}"


class ModelField(QWidget):
    """Line edit + "Browse…" menu for a model source; ``committed`` when one is chosen."""

    committed = Signal()

    def __init__(self, text: str = "builtin", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(text)
        self.edit.setToolTip(
            "'builtin', 'builtin:<name>', a saved model folder or a BioImage.IO package"
        )
        self.browse = QToolButton()
        self.browse.setText("Browse…")
        self.browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.browse)
        menu.addAction("Model folder…", self.browse_folder)
        menu.addAction("BioImage.IO package or file (.zip, .yaml)…", self.browse_file)
        self.browse.setMenu(menu)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(self.browse)
        self.edit.editingFinished.connect(self.committed.emit)

    def text(self) -> str:
        """The field's text."""
        return self.edit.text()

    def browse_folder(self) -> None:
        """Pick a model folder (or an unpacked BioImage.IO package)."""
        path = QFileDialog.getExistingDirectory(self, "Model folder or BioImage.IO package")
        if path:
            self.edit.setText(path)
            self.committed.emit()

    def browse_file(self) -> None:
        """Pick a BioImage.IO package (.zip) or its YAML file."""
        path, _ = QFileDialog.getOpenFileName(
            self, "BioImage.IO package", "", "Model packages (*.zip *.yaml *.yml)"
        )
        if path:
            self.edit.setText(path)
            self.committed.emit()
