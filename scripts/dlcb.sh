#!/usr/bin/env bash
# One-stop set-up and run, for a fresh Debian/Ubuntu machine or an existing checkout.
#
#   bash scripts/dlcb.sh app    # set up, then open napari with the plugin on its sample session
#   bash scripts/dlcb.sh test   # set up, then run ruff, import-linter and the test suite
#
# Everything goes into a project virtual environment (.venv, or $DLCB_VENV): the system
# Python is never modified, so this works where it is "externally managed" (PEP 668,
# Debian 12, Ubuntu 24.04). Each step stops the script with its message if it fails.
#
# PyTorch: DLCB_TORCH=auto (default) installs the CUDA build when `nvidia-smi` finds a
# GPU and the CPU build otherwise; DLCB_TORCH=cpu or DLCB_TORCH=cuda forces one;
# DLCB_TORCH=skip keeps whatever torch the environment already has.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-app}"
shift || true
case "$what" in app | test) ;; *)
  echo "usage: bash scripts/dlcb.sh app|test [args...]" >&2
  exit 2
  ;;
esac

say() { echo "[dlcb] $*"; }
fail() {
  echo "[dlcb] FAILED: $*" >&2
  exit 1
}
step() { # step "what" command...: run it; on failure stop with the step's name
  local name="$1"
  shift
  say "$name"
  "$@" || fail "$name (command: $*)"
}

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() { # apt_install pkg...: install the Debian packages that are missing
  command -v apt-get >/dev/null || return 0
  local missing=""
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != "0" ] && [ -z "$SUDO" ]; then
    fail "system packages missing:$missing (run: apt-get install$missing as root)"
  fi
  say "installing system packages:$missing"
  $SUDO apt-get update -qq || fail "apt-get update"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null \
    || fail "apt-get install$missing"
}

# 1. system libraries napari's Qt/OpenGL needs (+ Xvfb to run without a screen)
apt_install xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 \
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-render-util0 \
  libxcb-image0 libdbus-1-3 libfontconfig1

# 2. a Python >= 3.10 and the project virtual environment
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || fail "no $PY found: install Python 3.10 or newer"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "$("$PY" -V 2>&1) is too old: napari-dlcb needs Python 3.10 or newer"
VENV="${DLCB_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    # Debian/Ubuntu ship venv separately (python3.X-venv)
    apt_install "python3-venv" "python$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    step "creating the virtual environment $VENV" "$PY" -m venv "$VENV"
  else
    say "created the virtual environment $VENV"
  fi
fi
VPY="$VENV/bin/python"
export PATH="$PWD/$VENV/bin:$PATH"

# 3. PyTorch: CPU build unless a GPU is present (a plain `torch` from PyPI is the multi-GB
#    CUDA build on Linux)
torch_kind="${DLCB_TORCH:-auto}"
if [ "$torch_kind" = "auto" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    torch_kind="cuda"
  else
    torch_kind="cpu"
  fi
fi
if [ "$torch_kind" != "skip" ] && ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  case "$torch_kind" in
    cuda) step "installing PyTorch (CUDA build)" "$VPY" -m pip install -q "torch>=2.2" ;;
    cpu)
      # a CPU wheel that pip already has on this machine (its find-links), else the
      # PyTorch CPU index
      local_wheel="$("$VPY" scripts/find_cpu_torch.py || true)"
      if [ -n "$local_wheel" ]; then
        step "installing PyTorch (CPU build, $(basename "$local_wheel"))" \
          "$VPY" -m pip install -q "$local_wheel"
      else
        step "installing PyTorch (CPU build)" "$VPY" -m pip install -q "torch>=2.2" \
          --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
      fi
      ;;
    *) fail "DLCB_TORCH must be auto, cpu, cuda or skip (got '$torch_kind')" ;;
  esac
fi

# 4. the package with its GUI, test and interchange extras (editable: this checkout)
step "installing napari-dlcb and its extras" "$VPY" -m pip install -q -e ".[testing]"

case "$what" in
  app)
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
      say "no display found: running under a virtual X server (xvfb-run)"
      exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/napari-dlcb" "$@"
    fi
    exec "$VENV/bin/napari-dlcb" "$@"
    ;;
  test)
    step "ruff check" "$VPY" -m ruff check napari_dlcb tests benchmarks scripts
    step "ruff format --check" "$VPY" -m ruff format --check napari_dlcb tests benchmarks scripts
    step "import-linter (layers; the core never imports Qt)" "$VENV/bin/lint-imports"
    say "pytest"
    exec "$VPY" -m pytest -p no:cacheprovider "$@"
    ;;
esac
