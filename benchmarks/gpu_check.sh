#!/usr/bin/env bash
# One-call GPU check of mkefast: build and install, `mkefast info`, the GPU tests (every backend against the
# reference, SupCon and CLIP against their peers), then the timing and memory of every op: soft_pu, supcon,
# clip, cosine_rec, the Triton / CUDA crossover over d and the largest batch per backend. Under 9 minutes,
# the build included, on a 16-core GPU machine.
#
# Usage, from the repository root of a GPU machine (no network needed: Python, torch with CUDA, Triton, nvcc,
# pybind11, scikit-build-core, cmake, ninja, pytest and pytorch-metric-learning preinstalled):
#
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# or through the device tool, which sets $OUT and brings its files back:  bash benchmarks/gpu_check.sh
#
# It installs mkefast (not editable) into a virtual environment that sees the system packages, compiling the
# CUDA module only for the visible GPU (MKEFAST_CUDA_ARCHS, e.g. 90a-real on H100 / H200) to save time. Each
# part runs under its own time limit (the BUDGET table below, whose sum is checked against TOTAL_S); a part that
# fails or runs out of time is reported and the next one still runs (without pytest installed, the tests part
# is reported as skipped; without pytorch-metric-learning, the supcon part runs without its `pml` peer).
# Results:
#     $OUT/gpu_check.log          everything printed
#     $OUT/gpu_*.csv              benchmark rows (also appended to benchmarks/results/gpu_*.csv)
#     $OUT/summary.txt            one line per part: name, exit status, seconds
#     $OUT/info.json              `mkefast info --json` (what was built, versions, the GPU)
# Environment: OUT (default benchmarks/results/gpu_check_<time>), PYTHON (default python3),
# MKEFAST_CUDA_ARCHS (default: the visible GPU's), GPU_CHECK_SKIP_BUILD=1 (use the mkefast already importable),
# GPU_CHECK_DRY=1 (no GPU needed: every part runs on the CPU at tiny sizes with the CPU backends, the tests are
# only collected, nothing is built or appended to benchmarks/results/; a check of the script itself, whose time
# limits are the GPU ones times GPU_CHECK_DRY_SCALE, default 6, for a small shared CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."

START=$(date +%s)
DRY="${GPU_CHECK_DRY:-0}"

# Time budget, in seconds, of each part (an upper limit: a part that ends sooner leaves its time to the
# rest). The build is measured at about 100 s on 16 cores for one architecture; `mkefast info` imports torch,
# Triton and both compiled modules (9 s of CPU time on the 2-core development machine); the reference and
# torch.compile providers dominate the benchmark parts (compilation: 20-40 s each).
declare -A BUDGET=(
    [build]=145 [info]=15 [tests]=100
    [bench_soft_pu_goal]=45 [bench_supcon]=35 [bench_clip]=35 [bench_cosine]=20
    [crossover]=45 [bench_soft_pu_16k]=40 [max_batch]=25
)
# 9 minutes = 540 s, everything included: TOTAL_S caps the parts (each gets at most what is left of it), plus
# at most KILL_S for the last part to die after its limit, plus UNBUDGETED_S for the steps outside the parts
# (the venv, `info --json`, a probe for pytorch-metric-learning, copying the CSVs).
TOTAL_S=520 KILL_S=5 UNBUDGETED_S=15
sum=0
for part in "${!BUDGET[@]}"; do sum=$((sum + BUDGET[$part])); done
if ((sum > TOTAL_S - UNBUDGETED_S || TOTAL_S + KILL_S > 540)); then
    echo "gpu_check.sh: budgets: parts ${sum}s > TOTAL_S - UNBUDGETED_S = $((TOTAL_S - UNBUDGETED_S))s, or" \
        "TOTAL_S + KILL_S = $((TOTAL_S + KILL_S))s > 540s" >&2
    exit 2
fi

OUT="${OUT:-benchmarks/results/gpu_check_$(date -u +%Y%m%dT%H%M%S)}"
[[ "$DRY" == "1" ]] && OUT="${OUT%/}/dry"
mkdir -p "$OUT" benchmarks/results
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
exec > >(tee -a "$LOG") 2>&1

SCALE=1
[[ "$DRY" == "1" ]] && SCALE="${GPU_CHECK_DRY_SCALE:-6}"

# Seconds a part may take: its own budget, or what is left of the total if that is less (both times SCALE).
budget() {
    local own=$(($1 * SCALE)) left=$((TOTAL_S * SCALE - ($(date +%s) - START)))
    ((left < own)) && echo $((left > 1 ? left : 1)) || echo "$own"
}

# run_part NAME COMMAND...: runs COMMAND under `timeout` with the part's BUDGET, records its status and time;
# returns its status.
run_part() {
    local name=$1 limit t0 rc
    limit=$(budget "${BUDGET[$name]}")
    shift 1
    echo
    echo "=== $name (limit ${limit}s): $*"
    t0=$(date +%s)
    timeout --kill-after="$KILL_S" "$limit" "$@"
    rc=$?
    local status="ok"
    ((rc == 124 || rc == 137)) && status="timed out"
    ((rc != 0 && rc != 124 && rc != 137)) && status="failed"
    printf '%-28s rc=%-4s %-10s %4ss\n' "$name" "$rc" "$status" "$(($(date +%s) - t0))" | tee -a "$SUMMARY"
    return "$rc"
}

PYTHON="${PYTHON:-python3}"
echo "mkefast GPU check, $(date -u), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "budget: ${sum}s of parts within TOTAL_S=${TOTAL_S}s$([[ "$DRY" == "1" ]] && echo " (dry run on the CPU)")"
if [[ "$DRY" == "1" ]]; then
    # The same parts and options at tiny sizes, on the CPU backends: checks the script, not the GPU.
    DEVICE=cpu DTYPE=float32 FUSED=cpu CROSS=cpu,reference B_GOAL=256 B_MID=256 B_COS=1k DIMS=16,32 B_START=64
    B_MAX=256
    GPU_CHECK_SKIP_BUILD=1
else
    DEVICE=cuda DTYPE=bfloat16 FUSED=triton,cuda CROSS=triton,cuda B_GOAL=64k B_MID=16k B_COS=256k
    DIMS=64,128,256,512,1024,2048,4096 B_START=16384 B_MAX=1048576
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA device is visible to torch: this check needs a GPU machine (GPU_CHECK_DRY=1 checks the script)" \
            | tee -a "$SUMMARY"
        exit 1
    fi
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
    if ! run_part build "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -q .; then
        echo "the build failed: nothing else can run" | tee -a "$SUMMARY"
        exit 1
    fi
fi
MKEFAST=("$PYTHON" -m mkefast.cli)

# ---------------------------------------------------------------- info
run_part info "${MKEFAST[@]}" info
"${MKEFAST[@]}" info --json >"$OUT/info.json" 2>/dev/null || true

# ---------------------------------------------------------------- GPU tests
# Every backend against the reference (bf16 / fp16 / fp32 / fp64, odd shapes, every label pattern), the cuda
# backend's own cases, SupCon against pytorch-metric-learning and CLIP against open_clip's formula on every
# backend, the build checks. No -x: one failure should not hide the others.
TESTS=(tests/backends tests/ops/test_supcon.py tests/ops/test_clip.py tests/test_build.py)
if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "=== tests: SKIPPED (pytest is not installed here)" | tee -a "$SUMMARY"
elif [[ "$DRY" == "1" ]]; then
    run_part tests "$PYTHON" -m pytest "${TESTS[@]}" -qq -p no:cacheprovider --collect-only
else
    run_part tests "$PYTHON" -m pytest "${TESTS[@]}" -q -p no:cacheprovider --maxfail=25 -o addopts="-ra"
fi

# ---------------------------------------------------------------- benchmarks
# Every point: fwd+bwd, one CSV per op. soft_pu: d = 256, M = 2, 5% labeled in 10 classes, pseudo labels for
# the rest.
BENCH=("${MKEFAST[@]}" bench --device "$DEVICE" --dtype "$DTYPE" --modes fwd+bwd)
PML=$("$PYTHON" -c "import pytorch_metric_learning" 2>/dev/null && echo ",pml")
# The goal point first: the fused backends at B = 65536 (goal: >= 300 TFLOP/s for triton).
run_part bench_soft_pu_goal "${BENCH[@]}" soft_pu --backends "$FUSED" --B "$B_GOAL" --d 256 --M 2 --repeats 5 \
    --csv "$OUT/gpu_soft_pu.csv"
# SupCon, single view, against pytorch-metric-learning's SupConLoss (every pair as a B x B matrix).
run_part bench_supcon "${BENCH[@]}" supcon --backends "$FUSED,reference$PML" --B "$B_MID" --d 128 --repeats 3 \
    --csv "$OUT/gpu_supcon.csv"
# CLIP with a learnable logit scale against open_clip's dense formula (two B x B logit matrices).
run_part bench_clip "${BENCH[@]}" clip --backends "$FUSED,dense_clip" --B "$B_MID" --d 512 --repeats 3 \
    --csv "$OUT/gpu_clip.csv"
# Cosine reconstruction at 256k rows x 1024 (memory bound: the GB/s column).
run_part bench_cosine "${BENCH[@]}" cosine_rec --backends "$FUSED,reference" --B "$B_COS" --d 1024 --M 1 \
    --repeats 5 --csv "$OUT/gpu_cosine_rec.csv"
# The d from which the chunked cuda path beats the fused Triton tiles (mkefast.backends.CHUNKED_MIN_DIM).
run_part crossover "$PYTHON" benchmarks/gpu_check.py crossover --device "$DEVICE" --providers "$CROSS" \
    --B "$B_MID" --M 2 --dtype "$DTYPE" --dims "$DIMS" --budget-s $(((BUDGET[crossover] - 15) * SCALE)) \
    --csv "$OUT/gpu_crossover.csv"
# B = 16384: the fused backends against the reference and torch.compile(reference), soft-PU.
run_part bench_soft_pu_16k "${BENCH[@]}" soft_pu --backends "$FUSED,reference,reference_compiled" --B "$B_MID" \
    --d 256 --M 2 --repeats 3 --csv "$OUT/gpu_soft_pu.csv"
# The largest batch that fits for d = 256, M = 2: reference (B x B logits) vs the fused tiles, up to 1M.
run_part max_batch "$PYTHON" benchmarks/gpu_check.py max-batch --device "$DEVICE" --d 256 --M 2 --dtype "$DTYPE" \
    --backends "reference,${FUSED%%,*}" --start-B "$B_START" --max-B "$B_MAX" --budget-s $(((BUDGET[max_batch] - 10) * SCALE)) \
    --csv "$OUT/gpu_max_batch.csv"

# Keep every run: append the rows to benchmarks/results/ (the header only when the file is new).
if [[ "$DRY" != "1" ]]; then
    for f in "$OUT"/gpu_*.csv; do
        [[ -f "$f" ]] || continue
        target="benchmarks/results/$(basename "$f")"
        if [[ -f "$target" ]]; then tail -n +2 "$f" >>"$target"; else cp "$f" "$target"; fi
    done
fi
echo
echo "=== summary ($(($(date +%s) - START)) s of TOTAL_S=${TOTAL_S}s$([[ "$DRY" == "1" ]] && echo " x ${SCALE} (dry run)"))"
cat "$SUMMARY"
