#!/usr/bin/env bash
# Installs everything the tracker needs into ./.venv (idempotent; Debian, Python 3.11, no GPU).
set -euo pipefail
cd "$(dirname "$0")"

# System libraries the wheels load: libusb (pyrealsense2, open3d), OpenGL/EGL/X11 (open3d,
# the OpenCV window), GLib (OpenCV's GUI build), OpenMP (open3d); and Xvfb for the tests.
# Install only what is missing.
missing=()
# ldconfig lives in /sbin, which a normal user's PATH on Debian leaves out; and the cache is
# read once, as grep -q on a pipe could kill a long listing with SIGPIPE under pipefail.
library_cache=$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null || true)
need() { grep -qF -- "$1" <<<"$library_cache" || missing+=("$2"); }
need 'libusb-1.0.so.0' libusb-1.0-0
need 'libGL.so.1' libgl1
need 'libEGL.so.1' libegl1
need 'libX11.so.6' libx11-6
need 'libudev.so.1' libudev1
need 'libgthread-2.0.so.0' libglib2.0-0
need 'libgomp.so.1' libgomp1
# Xvfb: a virtual display for the test that opens the live window for real.
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
# Debian's Python makes virtual environments only with its -venv package (ensurepip).
"$python" -c "import ensurepip" >/dev/null 2>&1 || missing+=("$(basename "$python")-venv")
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system libraries: ${missing[*]}"
  $sudo apt-get update -qq
  # GLib's package was renamed in Debian 13; only the updated lists of a fresh machine say
  # which name it has here.
  for i in "${!missing[@]}"; do
    if [ "${missing[$i]}" = libglib2.0-0 ] && apt-cache show libglib2.0-0t64 >/dev/null 2>&1; then
      missing[$i]=libglib2.0-0t64
    fi
  done
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A .venv without pip (made before the -venv package was there) is made again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$python" -m venv .venv
fi
pip=".venv/bin/python -m pip"
$pip install -q --disable-pip-version-check --upgrade pip
# The CPU build of torch first: anything that depends on torch then finds it satisfied.
# From a local wheel or mirror where one offers it, else from PyTorch's CPU index (PyPI's
# Linux wheel would pull several GB of CUDA libraries).
$pip install -q --disable-pip-version-check "torch==2.13.0+cpu" 2>/dev/null \
  || $pip install -q --disable-pip-version-check torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# Two OpenCV builds share one cv2 folder: drop the headless one before the GUI build goes in.
if $pip show -q opencv-python-headless >/dev/null 2>&1; then
  $pip uninstall -y -q opencv-python-headless opencv-python
fi
$pip install -q --disable-pip-version-check -e ".[test]"
