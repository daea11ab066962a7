"""Cost model of :mod:`fastconv.signal`: which of direct, FFT and overlap-add (tiled FFT)
is fastest for a :class:`~fastconv._signal_core.Plan`.

Each method's time is modelled as ``overhead + sum(constant * feature)`` with features
counted from the plan (multiply-adds, FFT work ``n log2 n``, bytes copied). The constants
below were fitted on the development machine (2 shared AMD EPYC cores, AVX-512) by

    python bench/signal_report.py --fit

which times each method on a grid of 1-D/2-D/3-D real and complex problems, fits the
constants by non-negative least squares on relative error, and prints this dictionary.
Re-run it (and paste the output here) when the kernels change speed.
"""
from __future__ import annotations

import math

import scipy.fft as sfft

from ._signal_core import Plan, _ntiles, _prod, tile_steps

# seconds per unit of each feature (see features()); fitted by bench/signal_report.py --fit
CONSTANTS = {
    "direct": {"overhead": 3.0e-5, "mac": 2.5e-10, "mac_1d": 5.0e-10, "byte": 2.0e-10},
    "fft": {"overhead": 1.0e-4, "fft": 1.5e-9, "byte": 4.0e-10},
    "oa": {"overhead": 2.0e-4, "fft": 1.2e-9, "byte": 6.0e-10},
}
METHODS = ("direct", "fft", "oa")


def features(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool) -> dict:
    """Feature counts per method (the regressors of the cost model)."""
    both = x_complex and k_complex
    # direct: complex x complex costs 4 real multiply-adds, complex x real 2
    cmul = 4 if both else (2 if (x_complex or k_complex) else 1)
    macs = plan.macs * cmul
    one_d = len(plan.n) <= 1
    pad_bytes = plan.N * plan.G * _prod(plan.padded) * itemsize
    feats = {"direct": {"overhead": 1.0, "mac": 0.0 if one_d else macs,
                        "mac_1d": macs if one_d else 0.0, "byte": pad_bytes}}
    # FFT: real transforms of x (per image/channel), of the kernel, and inverse of y
    nx = 2 if x_complex else 1
    nk = (4 if both else 2) if k_complex else 1
    ny = 2 if (x_complex or k_complex) else 1
    F = _prod(sfft.next_fast_len(int(p), real=True) for p in plan.padded) if plan.n else 1
    work = (plan.N * plan.G * (nx + ny) + plan.G * nk) * F * math.log2(max(F, 2))
    feats["fft"] = {"overhead": 1.0, "fft": work, "byte": pad_bytes}
    steps = tile_steps(plan, "oa") if plan.n else None
    if steps is None:
        feats["oa"] = dict(feats["fft"])
    else:
        nt = _prod(_ntiles(plan.out, steps))
        T = _prod(s + k - 1 for s, k in zip(steps, plan.k))
        work = (plan.N * plan.G * nt * (nx + ny) + plan.G * nk) * T * math.log2(max(T, 2))
        tile_bytes = plan.N * plan.G * nt * T * itemsize * nx
        feats["oa"] = {"overhead": 1.0, "fft": work, "byte": pad_bytes + 2 * tile_bytes}
    return feats


def estimate(plan: Plan, itemsize: int, x_complex: bool, k_complex: bool) -> dict:
    """Estimated seconds per method."""
    feats = features(plan, itemsize, x_complex, k_complex)
    return {m: sum(CONSTANTS[m].get(f, 0.0) * v for f, v in feats[m].items())
            for m in METHODS}
