#!/usr/bin/env bash
# hoigen set-up and runner for a fresh Debian/Ubuntu machine (root, or a user with sudo).
#
#   bash dev.sh demo    set up, then run the main job on the built-in assets
#   bash dev.sh test    set up, then lint and run the test suite
#   bash dev.sh setup   set up only
#
# Set-up is idempotent: system packages (python venv, headless GL: EGL on Mesa's CPU renderer and OSMesa),
# a virtualenv in .venv (HOIGEN_VENV to change), torch==2.13.0 first (so no CUDA build is pulled in by accident),
# then hoigen with all extras. It reinstalls only when pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${HOIGEN_VENV:-.venv}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglu1-mesa)

log() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

system_packages() {
  local missing=()
  command -v "$PYTHON" >/dev/null || missing+=(python3)
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv python3-pip)
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "not a Debian/Ubuntu system: install the equivalents of ${missing[*]} yourself"; return 0
  fi
  log "installing system packages: ${missing[*]}"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
     || ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    log "could not install ${missing[*]} (need root or sudo); rendering checks may fail"
  fi
}

python_env() {
  local stamp="$VENV/.hoigen-setup"
  local want
  want=$(cat pyproject.toml dev.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/hoigen" ]; then return 0; fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  "${pip[@]}" --upgrade pip setuptools wheel
  if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    log "installing torch==2.13.0"
    "${pip[@]}" torch==2.13.0
  fi
  log "installing hoigen with all extras"
  "${pip[@]}" -e ".[all,test,dev]"
  # pyrender pins PyOpenGL 3.1.0, whose OSMesa binding is broken; 3.1.7 works with EGL and OSMesa.
  "${pip[@]}" --no-deps "PyOpenGL==3.1.7" 2>/dev/null
  # CLIP's BPE vocabulary ships inside open-clip-torch; its torchvision dependency must not replace the CPU torch.
  "${pip[@]}" --no-deps "open-clip-torch>=2.20"
  echo "$want" > "$stamp"
}

cmd=${1:-demo}
case "$cmd" in
  setup) system_packages; python_env ;;
  demo)
    system_packages; python_env
    "$VENV/bin/hoigen" doctor --no-gl
    "$VENV/bin/hoigen" synth --objects builtin:nocs --n 24 --size 256 256 --frames 8 --workers 2 \
      --samples-per-shard 6 --out out/demo --seed 0
    "$VENV/bin/hoigen" inspect out/demo
    "$VENV/bin/hoigen" preview out/demo
    ;;
  test)
    system_packages; python_env
    "$VENV/bin/ruff" check hoigen tests benchmarks
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *) echo "usage: bash dev.sh [demo|test|setup]" >&2; exit 2 ;;
esac
