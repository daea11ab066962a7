#!/usr/bin/env bash
# One prepared check for a machine with a real NVIDIA GPU (no network needed), sized to
# finish in about 6 minutes in all (GPU_CHECK_TOTAL seconds, default 350: the device
# budget of a session is 15 minutes including the machine's start):
#   0. environment (versions, nvidia-smi),
#   1. a ~10 s preflight: import numba.cuda and fastconv, one small GPU conv2d against the
#      CPU; on failure the script stops at once with a clear message (no wasted minutes),
#   2. the GPU tests for real: tests/cuda/'s GPU tests
#      (the tiny CNN's forward, loss, gradients and optimiser steps, pooling, dropout,
#      state dicts, empty batches; not the MNIST example runs),
#   3. the GPU benchmark (bench/bench_gpu.py) against cuDNN,
#   4. MNIST training steps on the GPU against PyTorch on the GPU (bench/mnist_vs_torch.py).
# Each step's timeout is cut to what is left of the total, so the whole run ends in time.
# Writes $OUT/gpu_check.log, $OUT/gpu_bench.json and $OUT/mnist_gpu.json ($OUT defaults
# to ./gpu_out).
# GPU_CHECK_QUICK=1 runs the same steps under the CUDA simulator on tiny shapes (a logic
# check on a machine without a GPU; a test subset and a longer total).
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
MNIST_ARGS=(--rounds 2 --batches 50)
TEST_SELECT=(-k "not mnist_example")
T_TESTS=150 T_BENCH=110 T_MNIST=60      # each step's longest run (seconds)
if [ "${GPU_CHECK_QUICK:-0}" = "1" ]; then
    T_MNIST=400                         # the full network is slow in the simulator
    export NUMBA_ENABLE_CUDASIM=1
    TOTAL="${GPU_CHECK_TOTAL:-900}"
    BENCH_ARGS=(--quick --shapes mnist.conv1,resnet --algos im2col,auto)
    MNIST_ARGS=(--rounds 1 --batches 1 --batch-size 2)
    TEST_SELECT=(-k "(test_conv2d_forward and plain-f32) or tiny_cnn or empty_batch")
else
    unset NUMBA_ENABLE_CUDASIM
    TOTAL="${GPU_CHECK_TOTAL:-350}"
fi

# limit WANT: a step's timeout, cut to what is left of TOTAL (less a few seconds of slack)
limit() {
    local left=$((TOTAL - SECONDS - 5))
    if [ "$left" -lt "$1" ]; then echo $((left > 1 ? left : 1)); else echo "$1"; fi
}

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
    echo "== environment ($(date -u +%FT%TZ)); total budget ${TOTAL} s"
    command -v nvidia-smi >/dev/null && timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    timeout -k 5 "$(limit 30)" "$PY" - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "scipy", "numba", "numba_cuda", "torch", "cupy"):
    try:
        m = importlib.import_module(name)
        print(f"{name:10s} {getattr(m, '__version__', '?')}")
    except Exception as exc:
        print(f"{name:10s} missing ({type(exc).__name__})")
PYEOF

    echo "== preflight (numba.cuda, fastconv, one small GPU conv2d against the CPU)"
    t0=$SECONDS
    timeout -k 5 "$(limit 60)" "$PY" - <<'PYEOF'
import sys
import time
import traceback

t0 = time.perf_counter()


def fail(msg):
    print(f"PREFLIGHT FAILED: {msg}", flush=True)
    sys.exit(1)


try:
    from numba import cuda
except Exception as exc:
    fail(f"import numba.cuda: {type(exc).__name__}: {exc}")
sim = cuda.jit.__module__.startswith("numba.cuda.simulator")
if not sim and not cuda.is_available():
    fail("numba.cuda.is_available() is False: no usable GPU (driver / numba-cuda install)")
try:
    import numpy as np
    import fastconv as fc
except Exception as exc:
    traceback.print_exc()
    fail(f"import fastconv: {type(exc).__name__}: {exc}")
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
try:
    got = fc.conv2d(cuda.to_device(x), cuda.to_device(w), padding=1, algorithm="direct")
    got = got.copy_to_host()
except Exception as exc:
    traceback.print_exc()
    fail(f"GPU conv2d raised {type(exc).__name__}: {exc}")
want = fc.conv2d(x, w, padding=1)
err = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
if not err < 1e-4:
    fail(f"GPU conv2d differs from the CPU: max relative error {err:.2e}")
print(f"preflight ok: {'simulator' if sim else cuda.get_current_device().name} conv2d matches "
      f"the CPU (error {err:.1e}) in {time.perf_counter() - t0:.1f} s")
PYEOF
    rc=$?
    echo "preflight exit code: $rc ($((SECONDS - t0)) s)"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "PREFLIGHT FAILED: timed out"
        echo "== aborted after the preflight: nothing else was run (see the error above)"
        exit 1
    fi

    echo "== tests/cuda/ (GPU tests, no MNIST example runs)"
    t0=$SECONDS
    timeout -k 5 "$(limit "$T_TESTS")" "$PY" -m pytest tests/cuda \
        "${TEST_SELECT[@]}" -q -ra -p no:cacheprovider --noconftest -o addopts="" \
        --maxfail=15 --durations=5
    echo "pytest exit code: $? ($((SECONDS - t0)) s)"

    echo "== bench/bench_gpu.py"
    t0=$SECONDS
    T=$(limit "$T_BENCH")
    timeout -k 5 "$T" "$PY" bench/bench_gpu.py --out "$OUT/gpu_bench.json" \
        --deadline $((T > 40 ? T - 30 : 10)) "${BENCH_ARGS[@]}"
    echo "bench exit code: $? ($((SECONDS - t0)) s)"

    echo "== bench/mnist_vs_torch.py --device cuda (random images: no dataset on the GPU machine)"
    t0=$SECONDS
    T=$(limit "$T_MNIST")
    if [ "$T" -gt 15 ]; then
        timeout -k 5 "$T" "$PY" bench/mnist_vs_torch.py --device cuda --json "$OUT/mnist_gpu.json" \
            "${MNIST_ARGS[@]}"
        echo "mnist exit code: $? ($((SECONDS - t0)) s)"
    else
        echo "mnist skipped: only ${T} s of the ${TOTAL} s budget left"
    fi
    echo "== done in ${SECONDS} s (budget ${TOTAL} s)"
} 2>&1 | tee -a "$LOG"
