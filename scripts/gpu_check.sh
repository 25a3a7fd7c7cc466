#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a CUDA machine that has no package index, from a folder of wheels built beforehand.
#
# The GPU machine has Python 3.12, torch, torchvision, OpenCV, PyYAML, scikit-image, scipy and tqdm, but not
# basicsr, lmdb, thop, addict, yapf (nor platformdirs, yapf's requirement) or future. Neither they nor this repo are
# pip-installed there: the wheels go into a --target folder and the repo root goes on PYTHONPATH.
#
# 1. Here, where pip reaches PyPI, build the wheel folder (.whl/ in the repo root; add `/.whl/` to
#    .git/info/exclude, not to .gitignore, so that it stays out of commits):
#        bash scripts/gpu_wheels.sh
#    which runs, in short:
#        pip wheel --no-deps --no-build-isolation basicsr==1.4.2 -w .whl      # sdist only on PyPI; pure Python
#        pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#            -d .whl lmdb==3.0.0 addict==2.4.0 future==1.0.0 yapf==0.43.0 platformdirs==4.14.8 \
#            thop==0.1.1.post2209072238                                     # lmdb binary, the rest pure Python
# 2. Copy the repo with .whl/ to the GPU machine and, in the repo root, run
#        bash scripts/gpu_check.sh [OUTDIR] [gpu_check.py options]
#    OUTDIR defaults to $OUT if set, else benchmarks/. It receives RESULTS_gpu.md (the report) and gpu_check.log
#    (everything printed). The first four sections took 69 s on one H100 (2026-11-26); issue 20's three (amp_*)
#    are not yet timed on a GPU, and their bf16 + compile case compiles the SKD step first (inductor, minutes).
#    Where one command's time is limited, run them apart:
#        bash scripts/gpu_check.sh "$OUT" --sections amp_iteration amp_training amp_latency
#    The exit status is gpu_check.py's (1 when a section failed or a check missed its tolerance, the report written
#    all the same).
# 3. Back here, copy OUTDIR/RESULTS_gpu.md to benchmarks/RESULTS_gpu.md and commit it.
#
# Variables: WHEELS (wheel folder, default .whl), SITE (install target, default /tmp/skd_gpu_site), PYTHON
# (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/skd_gpu_site}
PYTHON=${PYTHON:-python3}
OUTDIR=${1:-${OUT:-benchmarks}}
shift $(($# > 0 ? 1 : 0))

if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "No wheels in $WHEELS: build them with 'bash scripts/gpu_wheels.sh' where pip reaches PyPI." >&2
    exit 2
fi
PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
set +e
"$PYTHON" benchmarks/gpu_check.py --out "$OUTDIR/RESULTS_gpu.md" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
