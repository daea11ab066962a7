"""Elementwise and gather kernels on device arrays: fill and zeros, casts and strided
copies, padding (every mode) and its adjoint, zero-upsampling, the weight's
flip-transpose, the channel-bias add, and the NaN/inf check.

Padding is the gather of :func:`fastconv._pad.source_index`: padded position ``p`` on an
axis reads source index ``src[p]`` (``-1``: zero). The same kernel with other index maps
copies strided or transposed views (identity maps), casts (any dtype in, the output's
dtype out) and zero-upsamples a gradient (``src[p] = (p - off) / s`` where divisible).
The adjoint sums, for each source index, over the padded positions that read it (the
inverse map, in CSR form), so it needs no atomics and is deterministic.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .._pad import source_index
from . import runtime as rt


@cuda.jit(cache=True)
def _fill(a, value):
    # a: 1-D
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, a.shape[0], step):
        a[i] = value


@cuda.jit(cache=True)
def _any_nonfinite(flag, a, b):
    # flag[0] = 1 if any element of a or b (1-D) is NaN or +-inf (every writer writes 1,
    # so the race is benign; flag[0] is zeroed before the launch)
    na = a.shape[0]
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, na + b.shape[0], step):
        v = a[i] if i < na else b[i - na]
        if math.isnan(v) or math.isinf(v):
            flag[0] = 1


@cuda.jit(cache=True)
def _gather5(out, src, idx_d, idx_h, idx_w):
    # out[n, c, z, y, x] = src[n, c, idx_d[z], idx_h[y], idx_w[x]], 0 where an index is -1
    # out: (N, C, D, H, W) C-contiguous; src: any strides and dtype
    N, C, D, H, W = out.shape
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    y = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    for r in range(cuda.blockIdx.z, N * C * D, cuda.gridDim.z):
        z = r % D
        nc = r // D
        c = nc % C
        n = nc // C
        sz = idx_d[z]
        for yy in range(y, H, cuda.gridDim.y * cuda.blockDim.y):
            sy = idx_h[yy]
            for xx in range(x, W, cuda.gridDim.x * cuda.blockDim.x):
                sx = idx_w[xx]
                if sz < 0 or sy < 0 or sx < 0:
                    out[n, c, z, yy, xx] = 0
                else:
                    out[n, c, z, yy, xx] = src[n, c, sz, sy, sx]


@cuda.jit(cache=True)
def _gather5_adjoint(gx, gp, ptr_d, pos_d, ptr_h, pos_h, ptr_w, pos_w):
    # gx[n, c, i, j, k] = sum of gp[n, c, a, b, e] over every padded (a, b, e) whose source is
    # (i, j, k): a in pos_d[ptr_d[i]:ptr_d[i+1]], likewise b and e.
    N, C, D, H, W = gx.shape
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    y = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    for r in range(cuda.blockIdx.z, N * C * D, cuda.gridDim.z):
        i = r % D
        nc = r // D
        c = nc % C
        n = nc // C
        for j in range(y, H, cuda.gridDim.y * cuda.blockDim.y):
            for k in range(x, W, cuda.gridDim.x * cuda.blockDim.x):
                gx[n, c, i, j, k] = 0
                for ia in range(ptr_d[i], ptr_d[i + 1]):
                    a = pos_d[ia]
                    for ib in range(ptr_h[j], ptr_h[j + 1]):
                        b = pos_h[ib]
                        for ie in range(ptr_w[k], ptr_w[k + 1]):
                            gx[n, c, i, j, k] += gp[n, c, a, b, pos_w[ie]]


@cuda.jit(cache=True)
def _transpose_flip(wt, w, groups):
    # wt[g*Cg + c, o, kd, kh, kw] = w[g*Og + o, c, KD-1-kd, KH-1-kh, KW-1-kw]
    # wt: (C, Og, KD, KH, KW)   w: (O, Cg, KD, KH, KW); the weight of the adjoint convolution
    C, Og, KD, KH, KW = wt.shape
    Cg = C // groups
    K = KD * KH * KW
    start = cuda.grid(1)
    for t in range(start, C * Og * K, cuda.gridsize(1)):
        k = t % K
        r = t // K
        o = r % Og
        ci = r // Og
        g = ci // Cg
        kw = k % KW
        kh = (k // KW) % KH
        kd = k // (KW * KH)
        wt[ci, o, kd, kh, kw] = w[g * Og + o, ci % Cg, KD - 1 - kd, KH - 1 - kh, KW - 1 - kw]


@cuda.jit(cache=True)
def _add_channel_bias(y, bias):
    # y[n, c, ...] += bias[c]    y: (N, C, D, H, W)
    N, C, D, H, W = y.shape
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    yi = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    for r in range(cuda.blockIdx.z, N * C * D, cuda.gridDim.z):
        z = r % D
        c = (r // D) % C
        n = r // (D * C)
        for yy in range(yi, H, cuda.gridDim.y * cuda.blockDim.y):
            for xx in range(x, W, cuda.gridDim.x * cuda.blockDim.x):
                y[n, c, z, yy, xx] += bias[c]


# --- index maps ------------------------------------------------------------------------
def _map(key, make):
    return rt.const(key, lambda: np.ascontiguousarray(make(), dtype=np.int64))


def pad_map(n, before, after, mode):
    """Device copy of ``source_index(n, before, after, mode)``."""
    return _map(("pad", n, before, after, mode), lambda: source_index(n, before, after, mode))


def identity_map(n):
    return _map(("id", n), lambda: np.arange(n))


def upsample_map(n_src, n_out, offset, step):
    """Position p reads source (p - offset) / step where that is a whole index in range."""
    def make():
        p = np.arange(n_out) - offset
        q = np.where(p >= 0, p // step, -1)
        ok = (p >= 0) & (p % step == 0) & (q < n_src)
        return np.where(ok, q, -1)
    return _map(("up", n_src, n_out, offset, step), make)


def _inverse(src, n):
    """CSR inverse of an index map: for each source index, the positions that read it."""
    src = np.asarray(src)
    valid = np.nonzero(src >= 0)[0]
    order = valid[np.argsort(src[valid], kind="stable")]
    counts = np.bincount(src[valid], minlength=n)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return ptr.astype(np.int64), order.astype(np.int64)


def adjoint_maps(n, before, after, mode):
    key = ("adj", n, before, after, mode)
    ptr = _map(key + ("ptr",), lambda: _inverse(source_index(n, before, after, mode), n)[0])
    pos = _map(key + ("pos",), lambda: _inverse(source_index(n, before, after, mode), n)[1])
    return ptr, pos


# --- launch wrappers -------------------------------------------------------------------
def fill(a, value):
    """Set every element of a C-contiguous device array."""
    f = rt.flat(a)
    if f.shape[0] == 0:
        return a
    blocks, threads = rt.grid1d(f.shape[0])
    _fill[blocks, threads](f, a.dtype.type(value))
    return a


def all_finite(a, b):
    """True when no element of the C-contiguous device arrays ``a`` and ``b`` is NaN or
    inf: one launch over both and one 4-byte read back."""
    fa, fb = rt.flat(a), rt.flat(b)
    n = fa.shape[0] + fb.shape[0]
    if n == 0:
        return True
    flag = rt.workspace("nonfinite_flag", (1,), np.int32)
    fill(flag, 0)
    blocks, threads = rt.grid1d(n)
    _any_nonfinite[blocks, threads](flag, fa, fb)
    return int(flag.copy_to_host()[0]) == 0


def gather5(out, src, maps):
    """out[n, c, z, y, x] = src[n, c, maps[0][z], maps[1][y], maps[2][x]] (0 for -1)."""
    N, C, D, H, W = out.shape
    if out.size == 0:
        return out
    grid, block = rt.grid_rows(W, H, N * C * D)
    _gather5[grid, block](out, src, *maps)
    return out


def copy5(out, src):
    """Copy (and cast) a 5-D device array of any strides into C-contiguous ``out``."""
    D, H, W = out.shape[2:]
    return gather5(out, src, (identity_map(D), identity_map(H), identity_map(W)))


def pad5(out, x5, padding3, mode):
    """Pad 5-D ``x5`` into ``out`` (shape (N, C) + padded size) per ``padding3``."""
    maps = tuple(pad_map(n, b, a, mode) for n, (b, a) in zip(x5.shape[2:], padding3))
    return gather5(out, x5, maps)


def pad5_adjoint(gx, gp, padding3, mode):
    """gx = the adjoint of :func:`pad5` applied to ``gp`` (folds padded gradients back)."""
    N, C, D, H, W = gx.shape
    if gx.size == 0:
        return gx
    maps = []
    for n, (b, a) in zip((D, H, W), padding3):
        maps.extend(adjoint_maps(n, b, a, mode))
    grid, block = rt.grid_rows(W, H, N * C * D)
    _gather5_adjoint[grid, block](gx, gp, *maps)
    return gx


def transpose_flip(wt, w, groups):
    if wt.size == 0:
        return wt
    blocks, threads = rt.grid1d(wt.size)
    _transpose_flip[blocks, threads](wt, w, groups)
    return wt


def add_channel_bias(y5, bias):
    """y5[:, c] += bias[c] in place."""
    N, C, D, H, W = y5.shape
    if y5.size == 0:
        return y5
    grid, block = rt.grid_rows(W, H, N * C * D)
    _add_channel_bias[grid, block](y5, bias)
    return y5


def zeros(shape, dtype):
    """A device array of zeros."""
    a = rt.empty(shape, dtype)
    fill(a, 0)
    return a


def ascontiguous(a, dtype=None):
    """``a`` as a C-contiguous device array of ``dtype`` (default: its own): ``a`` itself
    when it already is one, else one gather on the device (no host round trip)."""
    dtype = np.dtype(a.dtype if dtype is None else dtype)
    if rt.contiguous(a) and np.dtype(a.dtype) == dtype:
        return a
    out = rt.empty(a.shape, dtype)
    if out.size:
        copy5(rt.view5_any(out), rt.view5_any(a))
    return out
