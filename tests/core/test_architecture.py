"""House rules that tools cannot express: no Qt in the core, cheap imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "napari_dlcb"
QT = (
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "superqt",
    "napari.qt",
    "napari._qt",
    "napari.window",
    "napari_dlcb._widgets",
)


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_core_never_imports_qt():
    offenders = []
    for f in PKG.rglob("*.py"):
        if "_widgets" in f.parts:
            continue
        for mod in _imports(f):
            if any(mod == q or mod.startswith(q + ".") for q in QT):
                offenders.append(f"{f.relative_to(PKG)}: {mod}")
    assert offenders == []


def test_package_import_is_cheap_and_side_effect_free():
    code = (
        "import os, sys; env = dict(os.environ); import napari_dlcb, napari_dlcb.cli, "
        "napari_dlcb.io._npe2, napari_dlcb._sample_data; "
        "bad = [m for m in ('torch', 'qtpy', 'PyQt6', 'napari', 'dask.distributed') "
        "if m in sys.modules]; assert not bad, bad; assert dict(os.environ) == env"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_private_name_is_imported_across_modules():
    """``from napari_dlcb.x import _helper`` couples to internals: make it public or move it."""
    offenders = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0 and not (node.module or "").startswith("napari_dlcb"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    offenders.append(f"{f.relative_to(PKG)}: {node.module}.{alias.name}")
    assert offenders == []
