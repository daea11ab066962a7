"""Depthwise conv2d (groups = C_in = C_out) against PyTorch, measured in one process.

    python bench/depthwise_report.py [--repeat 15] [--dtype float32]

The layer of the issue: N=8, C=256, 56x56, 3x3, padding 1, groups=256. Both libraries
run round-robin (the machine is shared) and keep their best time; PyTorch uses as many
threads as numba. GFLOP/s counts 2 * outputs * taps.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
import fastconv  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from signal_report import best_times  # noqa: E402  (round-robin best-of timing)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    import numba
    import torch
    torch.set_num_threads(numba.get_num_threads())
    N, C, H, W, k = 8, 256, 56, 56, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(args.dtype)
    w = rng.standard_normal((C, 1, k, k)).astype(args.dtype)
    b = rng.standard_normal(C).astype(args.dtype)
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    ref = torch.nn.functional.conv2d(xt, wt, bt, padding=1, groups=C).numpy()
    got = fastconv.conv2d(x, w, b, padding=1, groups=C)
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    with torch.no_grad():
        t = best_times({
            "fastconv": lambda: fastconv.conv2d(x, w, b, padding=1, groups=C),
            "torch": lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=1, groups=C)},
            args.repeat)
    flops = 2.0 * N * C * H * W * k * k
    print(f"depthwise conv2d N={N} C={C} {H}x{W} {k}x{k} groups={C} padding 1, {args.dtype}, "
          f"{numba.get_num_threads()} threads (max rel. diff to PyTorch {err:.1e})")
    for name, s in t.items():
        print(f"  {name:9s} {s * 1e3:7.3f} ms  {flops / s / 1e9:6.1f} GFLOP/s")
    print(f"  fastconv / torch time: {t['fastconv'] / t['torch']:.2f}")


if __name__ == "__main__":
    main()
