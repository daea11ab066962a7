"""First-call latency: a fresh ``python -c`` that imports fastconv and runs one conv2d.

    python bench/first_call.py [--runs 3]

Measures the whole process wall time twice: with an empty numba cache directory (cold:
everything is compiled) and then with that cache populated (warm: the user-visible
latency after the first ever run). ``cache=True`` kernels are compiled once per dtype.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

SNIPPET = ("import numpy as np, fastconv as fc; "
           "fc.conv2d(np.ones((1, 1, 28, 28), np.float32), np.ones((4, 1, 5, 5), np.float32))")


def run(env):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", SNIPPET], env=env, check=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = run(env)
        warm = min(run(env) for _ in range(args.runs))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numba, numpy"], check=True)
    numba_import = time.perf_counter() - t0
    print(f"cold (empty numba cache): {cold:.2f} s")
    print(f"warm (cache populated):   {warm:.2f} s  (best of {args.runs})")
    print(f"of which `import numba, numpy` alone: {numba_import:.2f} s")


if __name__ == "__main__":
    main()
