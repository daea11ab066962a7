"""The GPU cost table: estimated seconds per algorithm, and ``choose(spec)``.

Estimates are throughput-bound: FLOPs over (peak x the kernel's efficiency on this
shape) plus bytes over memory bandwidth plus a per-launch overhead. The efficiencies
describe our kernels: the implicit GEMM wastes the unused part of its 64 x 128 tiles,
the direct kernel of its 8 x 16 output tiles and 8-channel register blocks, and the FFT
is bound by the memory traffic of its radix-2 passes. ``GPU_TABLE`` holds the constants
(H100/H200 class); ``bench/bench_gpu.py`` measures the real ratios.
"""
from __future__ import annotations

import math
import time

from .._spec import ConvSpec, _prod

GPU_TABLE = {
    "peak_flops": {"float32": 60e12, "float64": 30e12},
    "bandwidth": 3.5e12,            # bytes / s, global memory
    "launch": 1.5e-5,               # seconds per kernel launch (Python dispatch included)
    "im2col_eff": 0.45,             # fraction of peak of the implicit GEMM on full tiles
    "direct_eff": 0.12,             # fraction of peak of the shared-memory direct kernel
    "direct_global_eff": 0.01,      # the no-shared-memory fallback
    "contract_eff": 0.08,           # FFT channel contraction (complex, L2 bound)
}
ALGORITHMS = ("direct", "im2col", "fft")


def _fill(n, tile):
    """The used fraction of the tiles covering ``n`` items (1 for n == 0: nothing to waste)."""
    if n <= 0:
        return 1.0
    return n / (math.ceil(n / tile) * tile)


def estimate(spec: ConvSpec) -> dict:
    """Estimated seconds per algorithm for ``spec`` on the GPU."""
    t = GPU_TABLE
    peak = t["peak_flops"].get(spec.dtype.name, 30e12)
    bw = t["bandwidth"]
    isz = spec.dtype.itemsize
    Og = spec.C_out // spec.groups
    Cg = spec.C_in // spec.groups
    P = _prod(spec.out_size)
    K = _prod(spec.kernel)
    R = Cg * K
    pad_bytes = 2 * spec.N * spec.C_in * _prod(spec.padded_size) * isz
    out_bytes = spec.N * spec.C_out * P * isz
    base = t["launch"] * 2 + (pad_bytes + out_bytes) / bw

    # implicit GEMM: tile fill along both GEMM axes, and short reductions pipeline poorly
    eff = t["im2col_eff"] * _fill(Og, 64) * _fill(spec.N * P, 128) * min(1.0, R / 64)
    im2col = base + spec.flops / (peak * max(eff, 1e-3))

    # direct: 8 x 16 output tiles, 8 output channels per thread, strided shared reads
    OH = spec.lift(spec.out_size)[1]
    OW = spec.lift(spec.out_size)[2]
    s = spec.stride3
    d = spec.dilation3
    k3 = spec.lift(spec.kernel)
    win = (((k3[0] - 1) * d[0] + 1) * ((8 - 1) * s[1] + (k3[1] - 1) * d[1] + 1)
           * ((16 - 1) * s[2] + (k3[2] - 1) * d[2] + 1))
    if win <= 3072 and K * 8 <= 2048:
        deff = t["direct_eff"] * _fill(Og, 8) * _fill(OH, 8) * _fill(OW, 16) / s[2]
    else:
        deff = t["direct_global_eff"]
    direct = base + spec.flops / (peak * max(deff, 1e-4))

    # fft: memory-bound radix-2 passes over the spectra plus the channel contraction
    fsz = [1 << max(p - 1, 0).bit_length() for p in spec.lift(spec.padded_size)]
    F = _prod(fsz)
    Fh = F // fsz[2] * (fsz[2] // 2 + 1)
    csz = 2 * isz
    passes = sum(max(f.bit_length() - 1, 0) for f in fsz)
    n_sig = spec.N * spec.C_in + spec.N * spec.C_out + spec.C_out * Cg
    fft_bytes = n_sig * F * csz * 2 * (passes + 2)
    contract = 8.0 * spec.N * spec.C_out * Cg * Fh / (peak * t["contract_eff"])
    fft = base + t["launch"] * 3 * (passes + 4) + fft_bytes / bw + contract
    return {"direct": direct, "im2col": im2col, "fft": fft}


_REASONS = {
    "direct": lambda s: (f"{s.C_in // s.groups} input channel(s) per group with a "
                         f"{'x'.join(map(str, s.kernel))} kernel is too little reduction to fill "
                         f"GEMM tiles; shared-memory output tiles do less wasted work"),
    "im2col": lambda s: (f"{s.C_in // s.groups * _prod(s.kernel)}-deep patches and "
                         f"{s.C_out // s.groups} output channels per group fill the implicit "
                         f"GEMM's register-blocked tiles"),
    "fft": lambda s: (f"the {'x'.join(map(str, s.kernel))} kernel is large relative to the "
                      f"{'x'.join(map(str, s.in_size))} input, so the FFTs' O(n log n) traffic "
                      f"beats direct summation"),
}


def choose(spec: ConvSpec):
    """The fastest GPU algorithm for ``spec`` by the cost table (a dispatch.Choice)."""
    from ..dispatch import choice_from
    return choice_from(spec, estimate(spec), _REASONS, where="on the GPU, ")


# --- selection, with optional autotuning -----------------------------------------------
_chosen: dict = {}
_tuned: dict = {}


def select(spec: ConvSpec, algorithm: str, run=None) -> str:
    """The algorithm to run: the caller's, the autotuned (``fastconv.set_autotune``) or the
    cost table's. ``run(algo)`` executes the problem once (used to time candidates)."""
    if algorithm != "auto":
        return algorithm
    from .. import _config
    key = spec.key()
    if _config.AUTOTUNE and run is not None:
        algo = _tuned.get(key)
        if algo is None:
            algo = _autotune(run)
            _tuned[key] = algo
        return algo
    algo = _chosen.get(key)
    if algo is None:
        algo = choose(spec).algorithm
        _chosen[key] = algo
    return algo


def without_fft(spec: ConvSpec) -> str:
    """The cost table's best algorithm other than ``fft`` (used when ``auto`` chose fft but
    an operand holds NaN or inf: an FFT would spread it over the whole output)."""
    est = estimate(spec)
    return min((a for a in ALGORITHMS if a != "fft"), key=est.get)


def _autotune(run) -> str:
    from . import runtime as rt
    cuda = rt.cuda()
    times = {}
    for algo in ALGORITHMS:
        run(algo)                                   # warm-up (compiles on first use)
        cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            run(algo)
        cuda.synchronize()
        times[algo] = time.perf_counter() - t0
    return min(times, key=times.get)
