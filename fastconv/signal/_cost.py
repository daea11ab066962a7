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

from ._core import Plan, _ntiles, _prod, oa_cost, tile_steps

# seconds per unit of each feature (see features()): `python bench/signal_report.py --fit
# --repeat 6` on the development machine (2 shared cores, a quiet moment), after the
# 1-D/2-D direct method moved to the stencil kernel (cpu/stencil.py), with 3-D direct
# problems (the engine's kernel) fitted apart; median relative error 0.42 direct (one
# constant per multiply-add cannot follow the kernel from memory-bound k = 3 to
# compute-bound k = 31), 0.15 FFT, 0.12 overlap-add.
CONSTANTS = {
    "direct": {
        "overhead": 6e-05,
        "mac": 2.23e-11,
        "mac32": 1.61e-11,
        "mac_1d": 2.37e-11,
        "mac32_1d": 1.25e-11,
        "mac_3d": 5.91e-11,
        "mac32_3d": 3.58e-11,
        "byte": 9.25e-11
    },
    "fft": {
        "overhead": 6.51e-05,
        "fft": 1.28e-10,
        "fft32": 7.99e-11,
        "byte": 4.45e-10
    },
    "oa": {
        "overhead": 6.35e-05,
        "fft": 1.53e-10,
        "fft32": 1.02e-10,
        "byte": 2.45e-10
    },
}
METHODS = ("direct", "fft", "oa")


def features(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool) -> dict:
    """Feature counts per method (the regressors of the cost model).

    ``itemsize``: bytes of a real sample in the computation (8: float64/int64, 4: float32).
    Multiply-adds (direct) and ``n log2 n`` transform work (FFT) are counted separately
    for single and double precision, and for 1-D, 2-D (the stencil kernel) and 3-D or
    more (the engine's direct kernel) direct problems, since the kernels run at
    different speeds on them."""
    cplx = x_complex or k_complex
    # direct runs complex on the real kernel: complex x complex is 4 real products
    macs = plan.macs * (4 if x_complex and k_complex else (2 if cplx else 1))
    f32 = itemsize <= 4
    rank = "_1d" if len(plan.n) <= 1 else ("" if len(plan.n) == 2 else "_3d")
    pad_bytes = plan.N * plan.G * _prod(plan.padded) * itemsize * (2 if x_complex else 1)
    direct = dict.fromkeys(CONSTANTS["direct"], 0.0)
    direct["overhead"] = 1.0
    direct[("mac32" if f32 else "mac") + rank] = float(macs)
    direct["byte"] = pad_bytes
    # FFT: transforms of x (each image/group), of the kernel (each group) and inverse;
    # a complex transform counts as two real ones
    per = 2 if cplx else 1
    feats = {"direct": direct}
    fkey = "fft32" if f32 else "fft"
    F = _prod(sfft.next_fast_len(int(p), real=True) for p in plan.padded) if plan.n else 1
    work = per * (2 * plan.N * plan.G + plan.G) * F * math.log2(max(F, 2))
    feats["fft"] = {"overhead": 1.0, fkey: work, "byte": pad_bytes}
    steps = tile_steps(plan, "oa")
    if steps is None:
        feats["oa"] = dict(feats["fft"])
    else:
        tiles = tuple(s + k - 1 for s, k in zip(steps, plan.k))
        nt = _ntiles(plan.out, steps)
        T = _prod(tiles)
        work = per * (plan.N * plan.G * oa_cost(tiles, nt) + plan.G * T * math.log2(max(T, 2)))
        tile_bytes = plan.N * plan.G * _prod(nt) * T * itemsize * (2 if x_complex else 1)
        feats["oa"] = {"overhead": 1.0, fkey: work, "byte": pad_bytes + 2 * tile_bytes}
    return feats


def estimate(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool) -> dict:
    """Estimated seconds per method."""
    feats = features(plan, itemsize, x_complex, k_complex)
    return {m: sum(CONSTANTS[m].get(f, 0.0) * v for f, v in feats[m].items())
            for m in METHODS}
