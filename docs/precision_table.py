"""Measure each conv2d algorithm's error; prints the README's "Algorithms and precision" rows.

    python docs/precision_table.py            # both tables
    python docs/precision_table.py levels     # the 3x3 table per precision level only

Two measures per algorithm and dtype, worst over a few layer shapes, against the direct
algorithm in float64:

- *vs largest*: max |y - ref| / max |ref|  (the error relative to the largest output);
- *vs own terms*: max over outputs of |y - ref| / sum |terms|, on inputs whose left half
  is 10**4 smaller than the right (outputs of very different magnitudes side by side).

A direct sum or a GEMM (direct, im2col) keeps every output accurate relative to its own
terms; an FFT's error is spread evenly, relative to the largest output.
"""
import numpy as np

import fastconv as fc

CASES = {  # name: (input shape, weight shape, conv2d keywords)
    "mnist.conv2": ((64, 10, 12, 12), (20, 10, 5, 5), {}),
    "resnet": ((2, 64, 28, 28), (64, 64, 3, 3), dict(padding=1)),
    "stem": ((1, 3, 112, 112), (16, 3, 7, 7), dict(stride=2, padding=3)),
    "31x31 kernel": ((1, 4, 128, 128), (4, 4, 31, 31), dict(padding=15)),
}
ALGORITHMS = ("direct", "im2col", "fft")

#: 3x3 layers for the precision-level table: resnet/vgg shapes with C up to 512, batch
#: cut to keep the float64 reference quick; odd sizes leave ragged Winograd edge tiles
LAYERS_3x3 = {
    "resnet 64x56x56": ((2, 64, 56, 56), 64),
    "vgg 128x56x56": ((1, 128, 56, 56), 128),
    "256x29x29 (ragged)": ((1, 256, 29, 29), 256),
    "512x14x14 (ragged)": ((1, 512, 14, 14), 512),
    "512x7x7 (ragged)": ((2, 512, 7, 7), 512),
}


def level_errors(algorithm, dtype, seed=0):
    """(max, rms) of |y - ref| / max|ref| over LAYERS_3x3, forward and both gradients, on
    ReLU'd standard-normal inputs and He-initialised weights (std sqrt(2 / (9 C)))."""
    rng = np.random.default_rng(seed)
    worst = rms = 0.0
    for xs, O in LAYERS_3x3.values():
        C = xs[1]
        x = np.maximum(rng.standard_normal(xs), 0.0)
        w = rng.standard_normal((O, C, 3, 3)) * np.sqrt(2.0 / (9 * C))
        go = rng.standard_normal((xs[0], O) + xs[2:])
        ref = fc.conv2d(x, w, padding=1, algorithm="direct")
        y = fc.conv2d(x.astype(dtype), w.astype(dtype), padding=1, algorithm=algorithm)
        gref = fc.grad.conv2d_input(xs, w, go, padding=1, algorithm="direct")
        gy = fc.grad.conv2d_input(xs, w.astype(dtype), go.astype(dtype), padding=1,
                                  algorithm=algorithm)
        wref = fc.grad.conv2d_weight(x, w.shape, go, padding=1, algorithm="direct")
        gw = fc.grad.conv2d_weight(x.astype(dtype), w.shape, go.astype(dtype), padding=1,
                                   algorithm=algorithm)
        for got, want in ((y, ref), (gy, gref), (gw, wref)):
            err = np.abs(got.astype(np.float64) - want) / np.abs(want).max()
            worst = max(worst, float(err.max()))
            rms = max(rms, float(np.sqrt(np.mean(err ** 2))))
    return worst, rms


def levels():
    from fastconv import dispatch
    print("| algorithm | precision class | float32 max | float32 rms | float64 max | "
          "float64 rms |\n|---|---|---|---|---|---|")
    for name, entry in dispatch.REGISTRY.items():
        cells = []
        for dtype in ("float32", "float64"):
            worst, rms = level_errors(name, dtype)
            cells += [f"{worst:.1e}", f"{rms:.1e}"]
        print(f"| {name} | {entry.precision} | " + " | ".join(cells) + " |")


def errors(algorithm, dtype, mixed, seed=0):
    rng = np.random.default_rng(seed)
    worst_max = worst_own = 0.0
    for xs, ws, kw in CASES.values():
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        if mixed:
            x[..., : xs[-1] // 2] *= 1e-4
        ref = fc.conv2d(x, w, algorithm="direct", **kw)
        terms = fc.conv2d(np.abs(x), np.abs(w), algorithm="direct", **kw)
        y = fc.conv2d(x.astype(dtype), w.astype(dtype), algorithm=algorithm, **kw)
        err = np.abs(y.astype(np.float64) - ref)
        worst_max = max(worst_max, err.max() / np.abs(ref).max())
        worst_own = max(worst_own, (err / terms).max())
    return worst_max, worst_own


def main():
    print("| algorithm | float32 vs largest | float32 vs own terms | float64 vs largest | "
          "float64 vs own terms |\n|---|---|---|---|---|")
    for algo in ALGORITHMS:
        cells = []
        for dtype in ("float32", "float64"):
            largest, _ = errors(algo, dtype, mixed=False)
            _, own = errors(algo, dtype, mixed=True)
            cells += [f"{largest:.0e}", f"{own:.0e}"]
        if algo == "direct":
            cells[2:] = ["(reference)", "(reference)"]
        print(f"| {algo} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["levels"]:
        main()
    levels()
