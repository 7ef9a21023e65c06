#!/usr/bin/env bash
# One-call GPU check of mkefast: build and install, `mkefast info`, the GPU tests, the benchmark sweep of the
# issue's GPU goals, the Triton / CUDA crossover over d and the largest batch per backend. Under 10 minutes.
#
# Usage, from the repository root of a GPU machine (no network needed: Python, torch with CUDA, Triton, nvcc,
# pybind11, scikit-build-core, cmake, ninja and pytest preinstalled):
#
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# or through the device tool, which sets $OUT and brings its files back:  bash benchmarks/gpu_check.sh
#
# It installs mkefast (not editable) into a virtual environment that sees the system packages, compiling the
# CUDA module only for the visible GPU (MKEFAST_CUDA_ARCHS, e.g. 90a-real on H100 / H200) to save time. Each
# part runs under its own time limit inside a 570 s total; a part that fails or runs out of time is reported
# and the next one still runs (without pytest installed, the tests part is reported as skipped). Results:
#     $OUT/gpu_check.log          everything printed
#     $OUT/gpu_*.csv              benchmark rows (also appended to benchmarks/results/gpu_*.csv)
#     $OUT/summary.txt            one line per part: name, exit status, seconds
#     $OUT/info.json              `mkefast info --json` (what was built, versions, the GPU)
# Environment: OUT (default benchmarks/results/gpu_check_<time>), PYTHON (default python3),
# MKEFAST_CUDA_ARCHS (default: the visible GPU's), GPU_CHECK_SKIP_BUILD=1 (use the mkefast already importable).
set -uo pipefail
cd "$(dirname "$0")/.."

START=$(date +%s)
TOTAL_S=570
OUT="${OUT:-benchmarks/results/gpu_check_$(date -u +%Y%m%dT%H%M%S)}"
mkdir -p "$OUT" benchmarks/results
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
exec > >(tee -a "$LOG") 2>&1

# Seconds a part may take: its own budget, or what is left of the total if that is less.
budget() {
    local left=$((TOTAL_S - ($(date +%s) - START)))
    ((left < $1)) && echo $((left > 1 ? left : 1)) || echo "$1"
}

# run_part NAME BUDGET_S COMMAND...: runs COMMAND under `timeout`, records its status and time; returns its status.
run_part() {
    local name=$1 limit t0 rc
    limit=$(budget "$2")
    shift 2
    echo
    echo "=== $name (limit ${limit}s): $*"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    local status="ok"
    ((rc == 124 || rc == 137)) && status="timed out"
    ((rc != 0 && rc != 124 && rc != 137)) && status="failed"
    printf '%-28s rc=%-4s %-10s %4ss\n' "$name" "$rc" "$status" "$(($(date +%s) - t0))" | tee -a "$SUMMARY"
    return "$rc"
}

PYTHON="${PYTHON:-python3}"
echo "mkefast GPU check, $(date -u), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device is visible to torch: this check needs a GPU machine" | tee -a "$SUMMARY"
    exit 1
fi

# ---------------------------------------------------------------- build
if [[ "${GPU_CHECK_SKIP_BUILD:-0}" != "1" ]]; then
    VENV="${TMPDIR:-/tmp}/mkefast-gpu-check-venv"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    PYTHON="$VENV/bin/python"
    if [[ -z "${MKEFAST_CUDA_ARCHS:-}" ]]; then
        CC=$("$PYTHON" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
        # sm_90a SASS (wgmma-capable) for Hopper; plain SASS elsewhere.
        [[ "$CC" == "90" ]] && MKEFAST_CUDA_ARCHS="90a-real" || MKEFAST_CUDA_ARCHS="${CC}-real"
    fi
    export MKEFAST_CUDA_ARCHS
    if ! run_part build 150 "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -q .; then
        echo "the build failed: nothing else can run" | tee -a "$SUMMARY"
        exit 1
    fi
fi
MKEFAST=("$PYTHON" -m mkefast.cli)

# ---------------------------------------------------------------- info
run_part info 30 "${MKEFAST[@]}" info
"${MKEFAST[@]}" info --json >"$OUT/info.json" 2>/dev/null || true

# ---------------------------------------------------------------- GPU tests
# Every backend against the reference (bf16 / fp16 / fp32 / fp64, odd shapes, every label pattern), the cuda
# backend's own cases, the build checks. No -x: one failure should not hide the others.
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    run_part tests 150 "$PYTHON" -m pytest tests/backends tests/test_build.py -q -p no:cacheprovider \
        --maxfail=25 -o addopts="-ra"
else
    echo "=== tests: SKIPPED (pytest is not installed here)" | tee -a "$SUMMARY"
fi

# ---------------------------------------------------------------- benchmarks
# All soft-PU points: fwd+bwd, bf16, d = 256, M = 2, 5% labeled in 10 classes, pseudo labels for the rest.
BENCH=("${MKEFAST[@]}" bench)
# The goal point first: Triton at B = 65536 (goal: >= 300 TFLOP/s), with the chunked cuda backend beside it.
run_part bench_soft_pu_goal 60 "${BENCH[@]}" soft_pu --device cuda --backends triton,cuda --dtype bfloat16 \
    --B 64k --d 256 --M 2 --modes fwd+bwd --repeats 5 --csv "$OUT/gpu_soft_pu.csv"
# Cosine reconstruction fwd+bwd at 256k rows x 1024 (memory bound: the GB/s column).
run_part bench_cosine 30 "${BENCH[@]}" cosine_rec --device cuda --backends triton,cuda,reference \
    --dtype bfloat16 --B 256k --d 1024 --M 1 --modes fwd+bwd --repeats 5 --csv "$OUT/gpu_cosine_rec.csv"
# The d from which the chunked cuda path beats the fused Triton tiles (mkefast.backends.CHUNKED_MIN_DIM).
run_part crossover 70 "$PYTHON" benchmarks/gpu_check.py crossover --B 16384 --M 2 --dtype bfloat16 \
    --dims 64,128,256,512,1024,2048,4096 --budget-s 55 --csv "$OUT/gpu_crossover.csv"
# B >= 16384: Triton against the reference and torch.compile(reference) (and cuda).
run_part bench_soft_pu_16k 100 "${BENCH[@]}" soft_pu --device cuda \
    --backends triton,cuda,reference,reference_compiled --dtype bfloat16 --B 16k --d 256 --M 2 \
    --modes fwd+bwd --repeats 3 --csv "$OUT/gpu_soft_pu.csv"
# The largest batch that fits for d = 256, M = 2: reference (B x B logits) vs triton (tiles), up to 1M.
run_part max_batch 90 "$PYTHON" benchmarks/gpu_check.py max-batch --d 256 --M 2 --dtype bfloat16 \
    --backends reference,triton --start-B 16384 --max-B 1048576 --budget-s 80 --csv "$OUT/gpu_max_batch.csv"

# Keep every run: append the rows to benchmarks/results/ (the header only when the file is new).
for f in "$OUT"/gpu_*.csv; do
    [[ -f "$f" ]] || continue
    target="benchmarks/results/$(basename "$f")"
    if [[ -f "$target" ]]; then tail -n +2 "$f" >>"$target"; else cp "$f" "$target"; fi
done
echo
echo "=== summary ($(($(date +%s) - START)) s)"
cat "$SUMMARY"
