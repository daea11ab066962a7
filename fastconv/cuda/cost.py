"""The GPU cost table: estimated seconds per algorithm (it only estimates; the choice is
:func:`fastconv.dispatch.plan`'s).

Estimates are throughput-bound: FLOPs over (peak x the kernel's efficiency on this
shape) plus bytes over memory bandwidth plus a per-launch overhead. The efficiencies
describe our kernels: the implicit GEMM wastes the unused part of its 64 x 128 tiles,
the direct kernel of its 8 x 16 output tiles and 8-channel register blocks, and the FFT
is bound by the memory traffic of its radix-2 passes. ``GPU_TABLE`` holds the constants
(H100/H200 class); ``bench/bench_gpu.py`` measures the real ratios.
"""
from __future__ import annotations

import math

from .._spec import ConvSpec, _prod

GPU_TABLE = {
    "peak_flops": {"float32": 67e12, "float64": 34e12},   # H200 SXM, dense (no tensor cores)
    "bandwidth": 3.5e12,            # bytes / s, global memory
    "launch": 1.5e-5,               # seconds per kernel launch (Python dispatch included)
    "im2col_eff": 0.45,             # fraction of peak of the implicit GEMM on full tiles
    "direct_eff": 0.12,             # fraction of peak of the shared-memory direct kernel
    "direct_global_eff": 0.01,      # the no-shared-memory fallback
    "contract_eff": 0.08,           # FFT channel contraction (complex, L2 bound)
}


def _fill(n, tile):
    """The used fraction of the tiles covering ``n`` items (1 for n == 0: nothing to waste)."""
    if n <= 0:
        return 1.0
    return n / (math.ceil(n / tile) * tile)


def _base(spec: ConvSpec):
    """(peak FLOP/s, per-call seconds: launches and the padding/output traffic)."""
    t = GPU_TABLE
    peak = t["peak_flops"].get(spec.dtype.name, 30e12)
    isz = spec.dtype.itemsize
    pad_bytes = 2 * spec.N * spec.C_in * _prod(spec.padded_size) * isz
    out_bytes = spec.N * spec.C_out * _prod(spec.out_size) * isz
    return peak, t["launch"] * 2 + (pad_bytes + out_bytes) / t["bandwidth"]


def im2col(spec: ConvSpec) -> float:
    """Implicit GEMM: tile fill along both GEMM axes; short reductions pipeline poorly."""
    peak, base = _base(spec)
    Og = spec.C_out // spec.groups
    R = spec.C_in // spec.groups * _prod(spec.kernel)
    eff = (GPU_TABLE["im2col_eff"] * _fill(Og, 64) * _fill(spec.N * _prod(spec.out_size), 128)
           * min(1.0, R / 64))
    return base + spec.flops / (peak * max(eff, 1e-3))


def direct(spec: ConvSpec) -> float:
    """8 x 16 output tiles, 8 output channels per thread, strided shared-memory reads."""
    peak, base = _base(spec)
    t = GPU_TABLE
    Og = spec.C_out // spec.groups
    OH = spec.lift(spec.out_size)[1]
    OW = spec.lift(spec.out_size)[2]
    s = spec.stride3
    d = spec.dilation3
    k3 = spec.lift(spec.kernel)
    win = (((k3[0] - 1) * d[0] + 1) * ((8 - 1) * s[1] + (k3[1] - 1) * d[1] + 1)
           * ((16 - 1) * s[2] + (k3[2] - 1) * d[2] + 1))
    if win <= 3072 and _prod(spec.kernel) * 8 <= 2048:
        deff = t["direct_eff"] * _fill(Og, 8) * _fill(OH, 8) * _fill(OW, 16) / s[2]
    else:
        deff = t["direct_global_eff"]
    return base + spec.flops / (peak * max(deff, 1e-4))


def fft(spec: ConvSpec) -> float:
    """Memory-bound radix-2 passes over the spectra plus the channel contraction."""
    peak, base = _base(spec)
    t = GPU_TABLE
    Cg = spec.C_in // spec.groups
    fsz = [1 << max(p - 1, 0).bit_length() for p in spec.lift(spec.padded_size)]
    F = _prod(fsz)
    Fh = F // fsz[2] * (fsz[2] // 2 + 1)
    csz = 2 * spec.dtype.itemsize
    passes = sum(max(f.bit_length() - 1, 0) for f in fsz)
    n_sig = spec.N * spec.C_in + spec.N * spec.C_out + spec.C_out * Cg
    fft_bytes = n_sig * F * csz * 2 * (passes + 2)
    contract = 8.0 * spec.N * spec.C_out * Cg * Fh / (peak * t["contract_eff"])
    return base + t["launch"] * 3 * (passes + 4) + fft_bytes / t["bandwidth"] + contract
