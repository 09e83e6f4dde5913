"""Print the path of a CPU build of PyTorch that pip already has on this machine, if any.

Used by ``scripts/dlcb.sh``: pip's ``find-links`` folders (from ``PIP_FIND_LINKS`` or
pip's configuration) may hold a ``torch-X+cpu`` wheel (offline machines, CI images).
Prints nothing when there is none; the script then uses the PyTorch CPU index.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

WHEEL = re.compile(
    r"torch-(?P<version>[\d.]+)\+cpu-(?P<py>cp\d+)-(?P<abi>[^-]+)-(?P<plat>.+)\.whl$"
)


def find_links() -> list[Path]:
    """Folders pip searches for wheels (environment first, then pip config)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            values += value.strip().strip("'\"").split()
    return [Path(v.removeprefix("file://")) for v in values if not v.startswith("http")]


def main() -> int:
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    arch = platform.machine().lower()
    best: tuple[tuple[int, ...], Path] | None = None
    for folder in find_links():
        if not folder.is_dir():
            continue
        for whl in folder.glob("torch-*+cpu-*.whl"):
            m = WHEEL.match(whl.name)
            if not m or m["py"] != py or arch not in m["plat"] or "linux" not in m["plat"]:
                continue
            version = tuple(int(x) for x in m["version"].split("."))
            if version >= (2, 2) and (best is None or version > best[0]):
                best = (version, whl)
    if best is not None:
        print(best[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
