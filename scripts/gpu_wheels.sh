#!/usr/bin/env bash
# Build the folder of wheels that scripts/gpu_check.sh installs on a GPU machine without a package index.
#
# Usage (here, where pip reaches PyPI; from any folder):
#   bash scripts/gpu_wheels.sh [DIR]        # DIR defaults to .whl/ in the repo root (git-ignored locally
#                                           # through .git/info/exclude, so it is never committed)
#
# The GPU machine runs CPython 3.12 on x86-64 Linux with torch, torchvision, OpenCV, PyYAML, scikit-image,
# scipy, tqdm, requests and tensorboard, but not the rest of what basicsr 1.4.2 and skd_basicsr need:
#   basicsr==1.4.2  sdist only on PyPI; built here into a pure-Python py3-none-any wheel (BASICSR_EXT unset:
#                   no CUDA extension), with --no-build-isolation because its setup.py imports torch
#   lmdb            binary (cp312, manylinux): imported by basicsr.utils at import time
#   addict, future, yapf (+ platformdirs, yapf's one requirement on 3.12)   in basicsr's install_requires
#   thop            skd_basicsr's MAC counter (skd_basicsr.tools.flops)
# Each is fetched with --no-deps, one version each (two versions of a package stop the install there).
# Versions are the ones this project is tested with; override one with e.g. LMDB_VERSION=1.6.2.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"

env -u BASICSR_EXT "$PYTHON" -m pip wheel --no-deps --no-build-isolation "basicsr==${BASICSR_VERSION:-1.4.2}" -w "$DEST"

# --platform is matched exactly, so name every manylinux tag a wheel may carry; pure-Python wheels match any
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" \
    "lmdb==${LMDB_VERSION:-3.0.0}" \
    "addict==${ADDICT_VERSION:-2.4.0}" \
    "future==${FUTURE_VERSION:-1.0.0}" \
    "yapf==${YAPF_VERSION:-0.43.0}" \
    "platformdirs==${PLATFORMDIRS_VERSION:-4.14.8}" \
    "thop==${THOP_VERSION:-0.1.1.post2209072238}"

ls -l "$DEST"
