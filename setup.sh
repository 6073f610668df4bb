#!/usr/bin/env bash
# Installs everything the tracker needs into ./.venv (idempotent; Debian, Python 3.11, no GPU).
set -euo pipefail
cd "$(dirname "$0")"

# pyrealsense2 and open3d load the system libusb.
if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --disable-pip-version-check --upgrade pip
# The CPU build of torch first: anything that depends on torch then finds it satisfied.
$pip install -q --disable-pip-version-check torch==2.13.0
$pip install -q --disable-pip-version-check -e ".[test]"
