#!/usr/bin/env bash
# One prepared check for a machine with a real NVIDIA GPU (no network needed):
#   1. the GPU tests for real (tests/test_cuda.py, no simulator),
#   2. the GPU benchmark (bench/bench_gpu.py) against cuDNN,
#   3. MNIST training steps on the GPU against PyTorch on the GPU (bench/mnist_vs_torch.py).
# Writes $OUT/gpu_check.log, $OUT/gpu_bench.json and $OUT/mnist_gpu.json ($OUT defaults
# to ./gpu_out).
# GPU_CHECK_QUICK=1 runs the same steps under the CUDA simulator on tiny shapes (a logic
# check on a machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/fastconv-numba-cache}"
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0     # tiny test launches are expected
BENCH_ARGS=()
MNIST_ARGS=(--rounds 4 --batches 100)
if [ "${GPU_CHECK_QUICK:-0}" = "1" ]; then
    export NUMBA_ENABLE_CUDASIM=1
    BENCH_ARGS=(--quick --shapes mnist.conv1,resnet --algos im2col,auto)
    MNIST_ARGS=(--rounds 1 --batches 1 --batch-size 2)
else
    unset NUMBA_ENABLE_CUDASIM
fi

# fastconv imports scipy.fft on its CPU path; if the image lacks SciPy, a numpy-backed
# stand-in (only what the CPU references need) goes on the path for this run.
if ! "$PY" -c "import scipy.fft" 2>/dev/null; then
    SHIM="$(mktemp -d)"
    mkdir -p "$SHIM/scipy"
    cat > "$SHIM/scipy/__init__.py" <<'PYEOF'
"""numpy-backed stand-in for the few scipy.fft functions fastconv's CPU path uses."""
PYEOF
    cat > "$SHIM/scipy/fft.py" <<'PYEOF'
import numpy as np


def next_fast_len(n, real=False):
    n = int(n)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def rfftn(x, s=None, axes=None, workers=None):
    return np.fft.rfftn(x, s=s, axes=axes)


def irfftn(x, s=None, axes=None, workers=None):
    return np.fft.irfftn(x, s=s, axes=axes)
PYEOF
    export PYTHONPATH="$PYTHONPATH:$SHIM"
    echo "note: SciPy missing; using a numpy stand-in for scipy.fft" | tee -a "$LOG"
fi

{
    echo "== environment ($(date -u +%FT%TZ))"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$PY" - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "scipy", "numba", "numba_cuda", "torch", "cupy"):
    try:
        m = importlib.import_module(name)
        print(f"{name:10s} {getattr(m, '__version__', '?')}")
    except Exception as exc:
        print(f"{name:10s} missing ({type(exc).__name__})")
from numba import cuda
print("numba.cuda available:", cuda.is_available())
PYEOF
    echo "== tests/test_cuda.py"
    t0=$SECONDS
    timeout 200 "$PY" -m pytest tests/test_cuda.py -q -ra -p no:cacheprovider --noconftest \
        -o addopts="" --durations=5
    echo "pytest exit code: $? ($((SECONDS - t0)) s)"
    echo "== bench/bench_gpu.py"
    t0=$SECONDS
    timeout 190 "$PY" bench/bench_gpu.py --out "$OUT/gpu_bench.json" "${BENCH_ARGS[@]}"
    echo "bench exit code: $? ($((SECONDS - t0)) s)"
    echo "== bench/mnist_vs_torch.py --device cuda (random images: no dataset on the GPU machine)"
    t0=$SECONDS
    timeout 120 "$PY" bench/mnist_vs_torch.py --device cuda --json "$OUT/mnist_gpu.json" \
        "${MNIST_ARGS[@]}"
    echo "mnist exit code: $? ($((SECONDS - t0)) s)"
} 2>&1 | tee -a "$LOG"
