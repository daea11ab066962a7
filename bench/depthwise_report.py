"""Depthwise conv2d (groups = C_in = C_out) against PyTorch, measured in one process.

    python bench/depthwise_report.py [--repeat 15] [--dtype float32] [--all]

The layer of the issue: N=8, C=256, 56x56, 3x3, padding 1, groups=256; with ``--all``
also smaller and strided planes (LAYERS). Both libraries
run round-robin (the machine is shared), each block after a pause (``--pause``: the
other's OpenMP workers spin for milliseconds after a call), and keep their best time;
PyTorch uses as many
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


# (N, C, H=W, k, stride): the layer, then the small and strided planes of a
# network's later stages (MobileNet-like), where the channels run in the vector lanes
LAYERS = [(8, 256, 56, 3, 1), (8, 256, 7, 3, 1), (8, 512, 7, 3, 1), (8, 256, 14, 3, 1),
          (8, 256, 28, 3, 1), (8, 256, 14, 5, 1), (8, 256, 7, 5, 1), (8, 256, 28, 3, 2),
          (8, 128, 56, 3, 2)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--all", action="store_true", help="also the small and strided layers")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds of sleep before each "
                    "block of calls (the other library's OpenMP workers stop spinning)")
    args = ap.parse_args()
    import numba
    import torch
    torch.set_num_threads(numba.get_num_threads())
    print(f"depthwise conv2d (groups = C), padding k // 2, {args.dtype}, "
          f"{numba.get_num_threads()} threads, best of {args.repeat} rounds")
    print("| N | C | HxW | k | stride | fastconv ms | GFLOP/s | torch ms | fastconv / torch | "
          "max rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for N, C, H, k, s in LAYERS if args.all else LAYERS[:1]:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, C, H, H)).astype(args.dtype)
        w = rng.standard_normal((C, 1, k, k)).astype(args.dtype)
        b = rng.standard_normal(C).astype(args.dtype)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        kw = dict(stride=s, padding=k // 2, groups=C)
        ref = torch.nn.functional.conv2d(xt, wt, bt, **kw).numpy()
        got = fastconv.conv2d(x, w, b, **kw)
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        with torch.no_grad():
            t = best_times({
                "fastconv": lambda: fastconv.conv2d(x, w, b, **kw),
                "torch": lambda: torch.nn.functional.conv2d(xt, wt, bt, **kw)}, args.repeat,
                pause=args.pause)
        flops = 2.0 * got.size * k * k
        print(f"| {N} | {C} | {H}x{H} | {k} | {s} | {t['fastconv'] * 1e3:.3f} | "
              f"{flops / t['fastconv'] / 1e9:.1f} | {t['torch'] * 1e3:.3f} | "
              f"{t['fastconv'] / t['torch']:.2f} | {err:.1e} |")


if __name__ == "__main__":
    main()
