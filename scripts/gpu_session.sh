#!/usr/bin/env bash
# One lease of a GPU machine, prepared as one script: the GPU check (issues 11, 20) and the distillation study over its
# three regimes (issue 21), each phase under its own time limit so that a slow phase still leaves the others' results.
#
# Usage (on the GPU machine, in the repo root, with the wheel folder of scripts/gpu_wheels.sh in .whl/):
#     bash scripts/gpu_session.sh [OUTDIR]            # OUTDIR defaults to $OUT if set, else gpu_session_out
# Phase limits in seconds (environment): CHECK_S (default 150), MAIN_S (240), LONG_S (120; 0 skips it). Also from the
# environment: CHECK_ARGS (e.g. '--device cpu --smoke' for a dry run on a CPU), NUM_GPU (1), JOBS (16), SEEDS
# ('0 1 2'), REGIMES ('depth cross_family width': the order of priority), STUDY_ARGS (more flags of the main studies,
# e.g. '--iters 4 --variants scratch output_kd' for a dry run).
# Each regime trains its own variants, learning rate and budget (benchmarks/study/regimes.py), variant by variant, so
# that a phase cut short leaves complete variants; the longer phase trains the two best of each regime's main study and
# scratch at 3x its budget (kd_study.py --longer-from). The training photos are decoded once per run and cropped from
# memory (cache_data), so the runs need no loader workers and many share the GPU: the last session's study was bound
# by 12 processes decoding PNGs on 16 cores.
# OUTDIR receives at most 8 files: RESULTS_gpu.md and gpu_check.log (the check), kd_study_gpu.json (every regime's
# sweep-free summary, kd_study.py --collect), study_<phase>.md (the tables), study_runs.tgz (every run's result and
# training log) and session.log. Runs are paired within a device and a study (seed k: the same initialisation,
# batches and noise for every variant); compare GPU numbers with GPU numbers only.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-gpu_session_out}}
WORK=${WORK:-/tmp/skd_gpu_study}  # a study folder carried there keeps its finished runs (they are not retrained)
JOBS=${JOBS:-16}
mkdir -p "$OUTDIR" "$WORK"
OUTDIR=$(cd "$OUTDIR" && pwd)
exec > >(tee "$OUTDIR/session.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
stamp() { echo "[gpu_session] $(($(date +%s) - start)) s: $*"; }

stamp "GPU check (limit ${CHECK_S:-150} s)"
# shellcheck disable=SC2086
timeout "${CHECK_S:-150}" bash scripts/gpu_check.sh "$OUTDIR" ${CHECK_ARGS:-}
stamp "GPU check exit status $?"
export PYTHONPATH="$PWD:/tmp/skd_gpu_site${PYTHONPATH:+:$PYTHONPATH}"  # installed by gpu_check.sh

# shellcheck disable=SC2206
common=(--seeds ${SEEDS:-0 1 2} --num-gpu "${NUM_GPU:-1}" --jobs "$JOBS" --workers 0 --order variant)
phase() {  # phase NAME LIMIT: every regime, its main study (NAME=main) or its longer-budget check (NAME=longer)
    local name=$1 limit=$2 deadline=$(($(date +%s) + $2)) folders=()
    : > "$OUTDIR/study_$name.md"
    for regime in ${REGIMES:-depth cross_family width}; do
        local left=$((deadline - $(date +%s)))
        [ "$left" -gt 10 ] || break
        # shellcheck disable=SC2206
        local args=(--regime "$regime" --out "$WORK/${regime}_main" "${common[@]}" ${STUDY_ARGS:-})
        [ "$name" = longer ] && args=(--longer-from "$WORK/${regime}_main" --out "$WORK/${regime}_longer" "${common[@]}")
        stamp "study $name, regime $regime (at most $left s)"
        timeout "$left" python3 benchmarks/kd_study.py "${args[@]}"
        stamp "study $name $regime exit status $?; reporting its finished runs"
        OMP_NUM_THREADS=8 python3 benchmarks/kd_study.py "${args[@]}" --no-train --report "$WORK/report.md" \
            && cat "$WORK/report.md" >> "$OUTDIR/study_$name.md"
    done
}
phase main "${MAIN_S:-240}"
if [ "${LONG_S:-120}" -gt 0 ]; then
    phase longer "${LONG_S:-120}"
fi
# shellcheck disable=SC2046
OMP_NUM_THREADS=8 python3 benchmarks/kd_study.py --collect $(ls -d "$WORK"/*_main "$WORK"/*_longer 2>/dev/null \
    | while read -r d; do [ -f "$d/summary.json" ] && echo "$d"; done) --json "$OUTDIR/kd_study_gpu.json"
(cd "$WORK" && tar czf "$OUTDIR/study_runs.tgz" */runs */experiments/*/train_*.log */options 2>/dev/null)
stamp "done"
