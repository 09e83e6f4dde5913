"""The npe2 manifest is what the napari hub and napari itself read: it must validate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import napari_dlcb

MANIFEST = Path(napari_dlcb.__file__).resolve().parent / "napari.yaml"


def _npe2_validate(manifest: Path, *, imports: bool = True) -> subprocess.CompletedProcess:
    """``npe2 validate MANIFEST [--imports]`` in a fresh interpreter on this checkout."""
    root = str(Path(napari_dlcb.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")  # importing the widgets' modules loads Qt
    code = "import sys; from npe2.cli import app; sys.argv[0] = 'npe2'; app()"
    cmd = [
        sys.executable,
        "-c",
        code,
        "validate",
        str(manifest),
        *(["--imports"] if imports else []),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_npe2_validate_with_imports():
    run = _npe2_validate(MANIFEST)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout


def test_npe2_validate_fails_on_a_bad_manifest(tmp_path):
    bad = tmp_path / "napari.yaml"
    text = MANIFEST.read_text()
    assert "- id: napari-dlcb.get_reader" in text
    bad.write_text(text.replace("- id: napari-dlcb.get_reader", "- id: other.get_reader"))
    run = _npe2_validate(bad, imports=False)
    assert run.returncode != 0 and "other.get_reader" in run.stdout + run.stderr
