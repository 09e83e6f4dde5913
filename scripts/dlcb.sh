#!/usr/bin/env bash
# One-stop set-up + run for a fresh Debian machine (root or sudo) or an existing env.
#   bash scripts/dlcb.sh app    -> installs everything, opens napari with the plugin docked
#                                  on the bundled sample session and built-in model
#   bash scripts/dlcb.sh test   -> installs everything, runs ruff, import-linter and pytest
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-app}"
shift || true

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_PKGS="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-render-util0 libxcb-image0 libdbus-1-3 \
libfontconfig1"
if command -v apt-get >/dev/null; then
  missing=""
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[dlcb] installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
# CPU build of torch first (a plain `torch` requirement would pull a multi-GB CUDA build);
# users with a GPU install their CUDA torch before the package instead.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[dlcb] installing torch (CPU build)"
  "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch \
    --index-url https://download.pytorch.org/whl/cpu
fi
echo "[dlcb] installing napari-dlcb and its test/GUI extras"
"$PY" -m pip install -q -e ".[testing]" 2>&1 | grep -v -E "^WARNING: (Location|Running pip)" || true

case "$what" in
  app)
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
      echo "[dlcb] no display found: running under a virtual X server (xvfb-run)"
      exec xvfb-run -a -s "-screen 0 1600x1000x24" napari-dlcb "$@"
    fi
    exec napari-dlcb "$@"
    ;;
  test)
    echo "[dlcb] ruff"
    "$PY" -m ruff check napari_dlcb tests benchmarks scripts
    "$PY" -m ruff format --check napari_dlcb tests benchmarks scripts
    echo "[dlcb] import-linter (the core never imports Qt)"
    lint-imports
    echo "[dlcb] pytest"
    exec "$PY" -m pytest -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: bash scripts/dlcb.sh app|test [args...]" >&2
    exit 2
    ;;
esac
