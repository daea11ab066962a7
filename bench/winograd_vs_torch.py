"""Winograd against PyTorch's CPU backend (oneDNN) on the 3x3 benchmark layers (issue 12).

    python bench/winograd_vs_torch.py [--blocks 5] [--calls 4] [--runs 2]

Forward (conv2d), input and weight gradients (torch.ops.aten.convolution_backward with
one output requested, as its autograd runs) in float32 on 2 threads. Times are taken in blocks of calls that
alternate between the libraries; each block's first call is dropped and the best call
counts. "effective" GFLOP/s divides the direct convolution's FLOPs by the time, "real"
the multiply-adds Winograd performs (its alpha^2 GEMMs over the padded tiles; the
transforms add ~10% more).
"""
import argparse
import time

import numpy as np
import torch

import fastconv as fc
from cases import LAYERS, flops, make
from fastconv import dispatch

ALGOS = ("winograd", "winograd_f2", "direct")


def gemm_flops(name, m):
    N, C, H, W, O, k, s, p = LAYERS[name]
    tiles = N * -(-H // m) * -(-W // m)
    return 2 * (m + 2) ** 2 * tiles * C * O


def block_best(fn, calls):
    best = np.inf
    for i in range(calls + 1):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i:
            best = min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for run in range(args.runs):
        print(f"run {run + 1}: | layer | op | library | ms | vs torch | effective GFLOP/s | "
              "real GFLOP/s |")
        for name in ("resnet", "vgg"):
            x, w, b, kw = make(name)
            y = fc.conv2d(x, w, b, **kw, algorithm="direct")
            go = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
            tx, tw, tb, tgo = map(torch.from_numpy, (x, w, b, go))
            p = kw["padding"]
            fns = {"forward": {"torch": lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=p)},
                   "input_grad": {"torch": lambda: torch.ops.aten.convolution_backward(
                       tgo, tx, tw, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                       [True, False, False])},
                   "weight_grad": {"torch": lambda: torch.ops.aten.convolution_backward(
                       tgo, tx, tw, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                       [False, True, False])}}
            for a in ALGOS:
                fns["forward"][a] = lambda a=a: fc.conv2d(x, w, b, **kw, algorithm=a)
                fns["input_grad"][a] = lambda a=a: fc.grad.conv2d_input(x.shape, w, go, **kw,
                                                                       algorithm=a)
                fns["weight_grad"][a] = lambda a=a: fc.grad.conv2d_weight(x, w.shape, go, **kw,
                                                                         algorithm=a)
            fns["forward"]["auto"] = lambda: fc.conv2d(x, w, b, **kw)
            fns["input_grad"]["auto"] = lambda: fc.grad.conv2d_input(x.shape, w, go, **kw)
            fns["weight_grad"]["auto"] = lambda: fc.grad.conv2d_weight(x, w.shape, go, **kw)
            for op, libs in fns.items():
                best = {k: np.inf for k in libs}
                for _ in range(args.blocks):
                    for lib, fn in libs.items():
                        best[lib] = min(best[lib], block_best(fn, args.calls))
                for lib, t in best.items():
                    m = {"winograd": 4, "winograd_f2": 2}.get(lib)
                    real = f"{gemm_flops(name, m) / t / 1e9:.0f}" if m else "-"
                    print(f"| {name} | {op} | {lib} | {t * 1e3:.2f} | "
                          f"{t / best['torch']:.2f} | {flops(name) / t / 1e9:.0f} | {real} |",
                          flush=True)
        if run == 0:
            print("auto picks:", {(n, op): fc.choose_algorithm(
                LAYERS[n][:4], (LAYERS[n][4], LAYERS[n][1], 3, 3), padding=1, op=op).algorithm
                for n in ("resnet", "vgg") for op in ("forward", "input_grad", "weight_grad")})


if __name__ == "__main__":
    main()
