"""Cost model of :mod:`fastconv.signal`: which of direct, FFT and overlap-add (tiled FFT)
is fastest for a :class:`~fastconv.signal._core.Plan`.

Each method's time is modelled as ``overhead + sum(constant * feature)`` with features
counted from the plan (multiply-adds, FFT work ``n log2 n``, bytes copied). The constants
below were fitted on the development machine (2 shared Intel Xeon cores, AVX-512) by

    python bench/signal_report.py --fit

which times each method on a grid of 1-D/2-D/3-D real and complex problems, fits the
constants by non-negative least squares on relative error, and prints this dictionary.
Re-run it (and paste the output here) when the kernels change speed.
"""
from __future__ import annotations

import math

import scipy.fft as sfft

from ..cpu.stencil import fir_chunk, fir_macs
from ._core import Plan, _ntiles, _prod, fft_lengths, oa_cost, tile_steps

# seconds per unit of each feature (see features()): `python bench/signal_report.py --fit
# --repeat 8`, run three times on the development machine (2 cores shared with other
# jobs) and fitted to the best time per case (`--fit --fit-logs run1.txt run2.txt ...`),
# after the FFT method's zero-padded path (_core._fft_zero_padded: shorter transforms,
# no padded copy, so no byte term left) and the stencil kernel's streaming tile for 1-D;
# long 1-D transforms (one thread) have their own constants. Median relative error 0.09
# direct, 0.11 FFT, 0.20 overlap-add (its oa_cost work unit already counts copies and a
# fixed cost per tile). With these, 1024x1024 'same' runs direct up to k = 21 and FFTs
# from k = 25; overlap-add where tiles are much smaller than the input (1-D signals with
# long filters). Problems under 2**17 multiply-adds run direct without asking the model
# (_memory._predict): its fitted overheads are within a microsecond of each other.
CONSTANTS = {
    "direct": {
        "overhead": 3.31e-05,
        "mac": 2.34e-11,
        "mac32": 1.01e-11,
        "mac_1d": 1.87e-11,
        "mac32_1d": 9.72e-12,
        "mac_3d": 6.47e-11,
        "mac32_3d": 3.91e-11,
        "byte": 8.44e-11
    },
    "fft": {
        "overhead": 3.24e-05,
        "fft": 1.85e-10,
        "fft32": 9.83e-11,
        "fft_1d": 3.01e-10,
        "fft32_1d": 2.44e-10,
        "byte": 0.0
    },
    "oa": {
        "overhead": 0.0,
        "fft": 5.73e-10,
        "fft32": 2.93e-10,
        "byte": 0.0
    }
}
METHODS = ("direct", "fft", "oa")


def features(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool,
             fir: bool = False) -> dict:
    """Feature counts per method (the regressors of the cost model).

    ``itemsize``: bytes of a real sample in the computation (8: float64/int64, 4: float32).
    Multiply-adds (direct) and ``n log2 n`` transform work (FFT) are counted separately
    for single and double precision, and for 1-D, 2-D (the stencil kernel) and 3-D or
    more (the engine's direct kernel) direct problems, since the kernels run at
    different speeds on them. ``fir``: real 1-D direct problems long enough for the
    stencil's fast FIR path run it (fastconv.signal._core.fast_fir); their multiply-adds
    are counted as what its time is worth in the direct tile's (stencil.fir_macs)."""
    cplx = x_complex or k_complex
    # direct runs complex on the real kernel: complex x complex is 4 real products
    macs = plan.macs * (4 if x_complex and k_complex else (2 if cplx else 1))
    f32 = itemsize <= 4
    rank = "_1d" if len(plan.n) <= 1 else ("" if len(plan.n) == 2 else "_3d")
    if fir and rank == "_1d" and plan.n and not cplx and fir_chunk(plan.k[0], itemsize,
                                                                   plan.out[0]):
        macs = plan.N * plan.G * plan.out[0] * fir_macs(plan.k[0])
    pad_bytes = plan.N * plan.G * _prod(plan.padded) * itemsize * (2 if x_complex else 1)
    direct = dict.fromkeys(CONSTANTS["direct"], 0.0)
    direct["overhead"] = 1.0
    direct[("mac32" if f32 else "mac") + rank] = float(macs)
    direct["byte"] = pad_bytes
    # FFT: transforms of x (each image/group), of the kernel (each group) and inverse;
    # a complex transform counts as two real ones. Zero padding runs unpadded on
    # transforms of n + max(before, after) (_core._fft_zero_padded), which copy only the
    # cropped result; one long 1-D transform runs on one thread (scipy.fft's workers
    # split batches of transforms), hence its own constant.
    per = 2 if cplx else 1
    feats = {"direct": direct}
    fkey = "fft32" if f32 else "fft"
    F = _prod(fft_lengths(plan, cplx)) if plan.n else 1
    work = per * (2 * plan.N * plan.G + plan.G) * F * math.log2(max(F, 2))
    out_bytes = plan.N * plan.G * _prod(plan.out) * itemsize * per
    serial = len(plan.n) == 1 and plan.N * plan.G == 1
    feats["fft"] = {"overhead": 1.0, fkey + ("_1d" if serial else ""): work, "byte": out_bytes}
    steps = tile_steps(plan, "oa")
    if steps is None:              # one tile: the FFT method itself
        feats["oa"] = None
    else:
        tiles = tuple(s + k - 1 for s, k in zip(steps, plan.k))
        nt = _ntiles(plan.out, steps)
        T = _prod(tiles)
        work = per * (plan.N * plan.G * oa_cost(tiles, nt) + plan.G * T * math.log2(max(T, 2)))
        tile_bytes = plan.N * plan.G * _prod(nt) * T * itemsize * (2 if x_complex else 1)
        feats["oa"] = {"overhead": 1.0, fkey: work, "byte": pad_bytes + 2 * tile_bytes}
    return feats


def estimate(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool,
             fir: bool = False) -> dict:
    """Estimated seconds per method (``fir``: as :func:`features`)."""
    feats = features(plan, itemsize, x_complex, k_complex, fir)
    est = {m: sum(CONSTANTS[m].get(f, 0.0) * v for f, v in feats[m].items())
           for m in METHODS if feats[m] is not None}
    est.setdefault("oa", est["fft"])
    return est
