#!/usr/bin/env bash
# One lease of a GPU machine, prepared as one script: the GPU check (issue 11) and the distillation study on the GPU
# (issue 10), each phase under its own time limit so that a slow phase still leaves the others' results.
#
# Usage (on the GPU machine, in the repo root, with the wheel folder of scripts/gpu_wheels.sh in .whl/):
#     bash scripts/gpu_session.sh [OUTDIR]            # OUTDIR defaults to $OUT if set, else gpu_session_out
# Phase limits in seconds (environment): CHECK_S (default 140), SHORT_S (250), LONG_S (150; 0 skips it). Also from the
# environment, for a dry run on a CPU: CHECK_ARGS (e.g. '--device cpu --smoke'), NUM_GPU (1), JOBS (8), SEEDS
# ('0 1 2'), SHORT_ITERS (600), LONG_ITERS (1800), SHORT_VARIANTS and LONG_VARIANTS (the lists below).
# OUTDIR receives at most 8 files: RESULTS_gpu.md and gpu_check.log (the check), study_<iters>.md and
# study_<iters>.json (the study's table and summary per budget), study_runs.tgz (every run's result and training
# log) and session.log. The study's variants are those of skd_basicsr.tools.demo.VARIANTS; runs are paired within
# a budget (seed k: the same initialisation, batches and noise for every variant).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-gpu_session_out}}
WORK=${WORK:-/tmp/skd_gpu_study}  # a study folder carried there keeps its finished runs (they are not retrained)
JOBS=${JOBS:-8}
mkdir -p "$OUTDIR" "$WORK"
OUTDIR=$(cd "$OUTDIR" && pwd)
exec > >(tee "$OUTDIR/session.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
stamp() { echo "[gpu_session] $(($(date +%s) - start)) s: $*"; }

stamp "GPU check (limit ${CHECK_S:-140} s)"
# shellcheck disable=SC2086
timeout "${CHECK_S:-140}" bash scripts/gpu_check.sh "$OUTDIR" ${CHECK_ARGS:-}
stamp "GPU check exit status $?"
export PYTHONPATH="$PWD:/tmp/skd_gpu_site${PYTHONPATH:+:$PYTHONPATH}"  # installed by gpu_check.sh

# in order of priority: the study trains variant by variant (every seed of one before the next), so that a phase cut
# short by its limit leaves complete variants
SHORT_VARIANTS=${SHORT_VARIANTS:-"scratch scratch_init output_kd_init gkn_kd_init skd_fixed_init cl_kd_init
    gkn_kd_exact_init gkn_kd_tokens_init gkn_kd_weak_init gkn_kd_decay_init skd_fixed_decay_init gkn_kd_cosine_init
    gkn_kd_encoder_init gkn_kd_decoder_init gkn_kd_warmup_init cl_input_kd_init skd_paper_init gk_kd_init"}
LONG_VARIANTS=${LONG_VARIANTS:-"scratch scratch_init output_kd_init gkn_kd_init skd_fixed_init skd_fixed_decay_init
    skd_paper_init cl_kd_init"}

study() {  # study ITERS LIMIT VARIANTS...
    local iters=$1 limit=$2
    shift 2
    # shellcheck disable=SC2206
    local args=(--out "$WORK/study_$iters" --iters "$iters" --seeds ${SEEDS:-0 1 2} --num-gpu "${NUM_GPU:-1}"
                --jobs "$JOBS" --workers 1 --order variant --variants "$@")
    stamp "study, $iters iterations (limit $limit s): $*"
    timeout "$limit" python3 benchmarks/kd_study.py "${args[@]}"
    stamp "study $iters exit status $?; reporting the finished runs"
    OMP_NUM_THREADS=8 python3 benchmarks/kd_study.py "${args[@]}" --no-train --report "$OUTDIR/study_$iters.md" \
        && cp "$WORK/study_$iters/summary.json" "$OUTDIR/study_$iters.json"
}
# shellcheck disable=SC2086
study "${SHORT_ITERS:-600}" "${SHORT_S:-250}" $SHORT_VARIANTS
if [ "${LONG_S:-150}" -gt 0 ]; then
    # shellcheck disable=SC2086
    study "${LONG_ITERS:-1800}" "${LONG_S:-150}" $LONG_VARIANTS
fi

(cd "$WORK" && tar czf "$OUTDIR/study_runs.tgz" study_*/runs study_*/experiments/*/train_*.log \
    study_*/options 2>/dev/null)
stamp "done"
