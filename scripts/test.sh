#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (CPU only; a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec "${PYTHON:-python}" -m pytest -q "$@"
