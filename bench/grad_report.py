"""Gradient report: fastconv.grad.conv2d_weight / conv2d_input per algorithm and auto vs
what PyTorch runs for them (torch.ops.aten.convolution_backward with one output
requested, 2 threads), and a ResNet basic block forward+backward through fastconv.nn vs
PyTorch autograd. Everything is timed in this one process, in blocks of calls that
alternate between the candidates; each block's first call is dropped and every
candidate keeps its best time over all blocks. Prints Markdown tables (ms, GFLOP/s and
ratios to PyTorch).

    python bench/grad_report.py [--blocks 4] [--calls 4] [--layers resnet vgg] [--no-block]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from cases import LAYERS, flops, make  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv import dispatch  # noqa: E402

OPS = ("weight_grad", "input_grad")


def block_best(fns, blocks, calls):
    """{name: best seconds}: per block, each fn runs calls + 1 times (the first dropped),
    the fns in turn; the best over all blocks."""
    best = {k: np.inf for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            fn()
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def layer_fns(name, op, torch):
    x, w, b, kw = make(name)
    s, p = kw["stride"], kw["padding"]
    gy = np.random.default_rng(1).standard_normal(fc.conv2d(x, w, **kw).shape).astype(np.float32)
    fns = {}
    c = fc.choose_algorithm(x.shape, w.shape, stride=s, padding=p, op=op)
    for algo in tuple(c.estimates) + ("auto",):      # every algorithm that runs this layer
        if op == "weight_grad":
            fns[algo] = lambda a=algo: fc.grad.conv2d_weight(x, w.shape, gy, algorithm=a, **kw)
        else:
            fns[algo] = lambda a=algo: fc.grad.conv2d_input(x.shape, w, gy, algorithm=a, **kw)
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, gy))
    mask = [False, True, False] if op == "weight_grad" else [True, False, False]
    conv_bwd = torch.ops.aten.convolution_backward

    def run_torch():
        return conv_bwd(tg, tx, tw, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

    fns["torch"] = run_torch
    return fns, c.algorithm


def grad_table(layers, blocks, calls, torch, peak):
    names = tuple(dispatch.REGISTRY)
    print(f"\n| layer | op | {' | '.join(names)} | auto (pick) | torch | auto/torch "
          f"| auto GFLOP/s | % peak | fwd GFLOP/s |")
    print("|---|---|" + "---|" * (len(names) + 7))
    for name in layers:
        x, w, b, kw = make(name)
        fwd = block_best({"f": lambda: fc.conv2d(x, w, b, **kw)}, blocks, calls)["f"]
        for op in OPS:
            fns, pick = layer_fns(name, op, torch)
            t = block_best(fns, blocks, calls)
            gf = flops(name) / t["auto"] / 1e9
            cells = " | ".join(f"{t[a] * 1e3:.2f}" if a in t else "-" for a in names)
            print(f"| {name} | {op} | {cells} | {t['auto'] * 1e3:.2f} ({pick}) "
                  f"| {t['torch'] * 1e3:.2f} | {t['auto'] / t['torch']:.2f}x | {gf:.0f} "
                  f"| {100 * gf / peak:.0f}% | {flops(name) / fwd / 1e9:.0f} |", flush=True)


def block_table(blocks, calls, torch):
    """conv3x3-ReLU-conv3x3, 64 channels, 56x56, batch 8: forward + backward."""
    from fastconv import nn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    net = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    net.train()

    def run_fc():
        y = net(x)
        net.backward(np.ones_like(y))

    tnet = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(64, 64, 3, padding=1))
    tx = torch.from_numpy(x).requires_grad_(True)

    def run_torch():
        tnet.zero_grad()
        tx.grad = None
        y = tnet(tx)
        y.backward(torch.ones_like(y))

    t = block_best({"fastconv": run_fc, "torch": run_torch}, blocks, calls)
    fl = 3 * 2 * 2 * 8 * 64 * 56 * 56 * 64 * 9
    print(f"\n| ResNet block fwd+bwd | fastconv ms | torch ms | ratio | fastconv GFLOP/s |")
    print("|---|---|---|---|---|")
    print(f"| 8x64x56x56 | {t['fastconv'] * 1e3:.2f} | {t['torch'] * 1e3:.2f} "
          f"| {t['fastconv'] / t['torch']:.2f}x | {fl / t['fastconv'] / 1e9:.0f} |")


def sgemm_peak():
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    t = block_best({"g": lambda: a @ a}, 3, 3)["g"]
    return 2 * 2048 ** 3 / t / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--layers", nargs="*", default=list(LAYERS))
    ap.add_argument("--no-block", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    peak = sgemm_peak()
    print(f"fastconv from {os.path.dirname(fc.__file__)}; numpy SGEMM peak {peak:.0f} GFLOP/s")
    grad_table(args.layers, args.blocks, args.calls, torch, peak)
    if not args.no_block:
        block_table(args.blocks, args.calls, torch)


if __name__ == "__main__":
    main()
