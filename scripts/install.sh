#!/usr/bin/env bash
# Install skd_basicsr and what it needs into the current Python environment.
#   bash scripts/install.sh          the package
#   bash scripts/install.sh --test   the package, the test tools and the deploy extra (onnx, onnxruntime)
# basicsr 1.4.2 is a source package whose setup.py imports torch. Under pip's default build isolation that
# means downloading a second torch just to build it, so torch comes first and basicsr is built against it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
extra=""
[ "${1:-}" = "--test" ] && extra="[test,deploy]"

"$PYTHON" -m pip install --quiet torch torchvision
"$PYTHON" -m pip install --quiet --no-build-isolation basicsr==1.4.2
"$PYTHON" -m pip install --quiet --no-build-isolation -e ".${extra}"
