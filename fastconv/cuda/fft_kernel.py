"""FFT convolution on the GPU: Stockham radix-2 FFTs written as numba.cuda kernels.

Correlation theorem, as on the CPU: with FFT sizes F >= the padded input size,
``irfft(rfft(x) * conj(rfft(w)))`` equals the valid correlation on its first
``P - K_eff + 1`` samples; dilation uses a zero-dilated kernel, stride subsamples.

- Sizes are padded to powers of two per axis; each FFT pass is one launch over every
  butterfly of every row (global memory, ping-pong buffers), so any size works.
- Real-to-complex: the real rows are transformed along W as complex rows, only the
  ``FW/2 + 1`` non-redundant bins are kept, and the H and D axes are transformed on
  that half spectrum. The inverse undoes D and H on the half spectrum, restores the W
  bins by Hermitian symmetry, inverts W and keeps the real part.
- The per-frequency channel contraction ``Y[n, o, f] = sum_c X[n, c, f] conj(W[o, c, f])``
  register-blocks 4 images x 4 output channels per thread.
- Images are processed in chunks so the spectra stay within ``FFT_BUDGET_BYTES``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import runtime as rt

FFT_BUDGET_BYTES = 1 << 30
NBK = 4    # images per contraction thread
OBK = 4    # output channels per contraction thread
NOB = NBK * OBK


@cuda.jit(cache=True)
def _pack(buf, src, dd, dh, dw):
    # buf[a, b, z, y, x] = src[a, b, z/dd, y/dh, x/dw] where divisible and in range, else 0
    # buf: (A, B, FD, FH, FW) complex   src: (A, B, D, H, W) real, any strides
    A, B, FD, FH, FW = buf.shape
    D, H, W = src.shape[2], src.shape[3], src.shape[4]
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    y = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    for r in range(cuda.blockIdx.z, A * B * FD, cuda.gridDim.z):
        z = r % FD
        ab = r // FD
        b = ab % B
        a = ab // B
        for yy in range(y, FH, cuda.gridDim.y * cuda.blockDim.y):
            for xx in range(x, FW, cuda.gridDim.x * cuda.blockDim.x):
                if (z % dd == 0 and z // dd < D and yy % dh == 0 and yy // dh < H
                        and xx % dw == 0 and xx // dw < W):
                    buf[a, b, z, yy, xx] = src[a, b, z // dd, yy // dh, xx // dw]
                else:
                    buf[a, b, z, yy, xx] = 0


@cuda.jit(cache=True)
def _fft_pass(dst, src, tw, L, S, p):
    # One radix-2 Stockham pass along an axis of length L (stride S) of flat complex rows:
    # butterfly i of a row reads i and i + L/2, writes j = 2i - k and j + p (k = i mod p).
    # tw[t] = exp(-+2 pi i t / L), t < L/2 (the sign picks forward or inverse).
    half = L // 2
    total = (src.shape[0] // L) * half
    step = L // (2 * p)
    start = cuda.grid(1)
    for t in range(start, total, cuda.gridsize(1)):
        s = t % S
        r = t // S
        i = r % half
        b = r // half
        base = b * L * S + s
        k = i % p
        u0 = src[base + i * S]
        u1 = src[base + (i + half) * S] * tw[k * step]
        j = 2 * i - k
        dst[base + j * S] = u0 + u1
        dst[base + (j + p) * S] = u0 - u1


@cuda.jit(cache=True)
def _take_half(dst, src, FW, FWh):
    # dst[r, k] = src[r, k] for k < FWh   (rows of length FW -> FWh)
    start = cuda.grid(1)
    for t in range(start, dst.shape[0], cuda.gridsize(1)):
        dst[t] = src[(t // FWh) * FW + t % FWh]


@cuda.jit(cache=True)
def _expand_half(dst, src, FW, FWh):
    # dst[r, k] = src[r, k] for k < FWh, conj(src[r, FW - k]) above (Hermitian rows)
    start = cuda.grid(1)
    for t in range(start, dst.shape[0], cuda.gridsize(1)):
        r = t // FW
        k = t % FW
        if k < FWh:
            dst[t] = src[r * FWh + k]
        else:
            dst[t] = src[r * FWh + FW - k].conjugate()


@cuda.jit(cache=True)
def _contract(yf, xf, wf, groups):
    # yf[n, o, f] = sum_c xf[n, g*Cg + c, f] * conj(wf[o, c, f])
    # yf: (N, O, F)   xf: (N, C, F)   wf: (O, Cg, F), complex
    N, O, F = yf.shape
    Cg = wf.shape[1]
    Og = O // groups
    nob = (Og + OBK - 1) // OBK
    f = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if f >= F:
        return
    g = cuda.blockIdx.y // nob
    o0 = g * Og + (cuda.blockIdx.y % nob) * OBK
    ob = min(OBK, (g + 1) * Og - o0)
    acc = cuda.local.array(NOB, dtype=yf.dtype)
    xv = cuda.local.array(NBK, dtype=yf.dtype)
    for n0 in range(cuda.blockIdx.z * NBK, N, cuda.gridDim.z * NBK):
        nb = min(NBK, N - n0)
        for e in range(NOB):
            acc[e] = 0
        for c in range(Cg):
            for a in range(NBK):
                xv[a] = xf[n0 + min(a, nb - 1), g * Cg + c, f]
            for j in range(OBK):
                wv = wf[o0 + min(j, ob - 1), c, f].conjugate()
                for a in range(NBK):
                    acc[a * OBK + j] += xv[a] * wv
        for a in range(NBK):
            if a < nb:
                for j in range(OBK):
                    if j < ob:
                        yf[n0 + a, o0 + j, f] = acc[a * OBK + j]


@cuda.jit(cache=True)
def _crop(out, y, bias, sd, sh, sw, scale):
    # out[n, o, z, yy, x] = real(y[n, o, z*sd, yy*sh, x*sw]) * scale + bias[o]
    N, O, OD, OH, OW = out.shape
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    yi = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    for r in range(cuda.blockIdx.z, N * O * OD, cuda.gridDim.z):
        z = r % OD
        no = r // OD
        o = no % O
        n = no // O
        for yy in range(yi, OH, cuda.gridDim.y * cuda.blockDim.y):
            for xx in range(x, OW, cuda.gridDim.x * cuda.blockDim.x):
                out[n, o, z, yy, xx] = y[n, o, z * sd, yy * sh, xx * sw].real * scale + bias[o]


# --- launch wrappers -------------------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _complex(dtype):
    return np.dtype(np.complex64) if np.dtype(dtype) == np.float32 else np.dtype(np.complex128)


def _twiddles(L, cdtype, inverse):
    sign = 1.0 if inverse else -1.0
    return rt.const(("tw", L, cdtype.str, inverse),
                    lambda: np.exp(sign * 2j * np.pi * np.arange(max(L // 2, 1)) / L).astype(cdtype))


def _fft_axis(a, b, L, S, inverse):
    """FFT every length-L axis (stride S) of flat complex ``a``; returns (result, spare)."""
    if L == 1:
        return a, b
    tw = _twiddles(L, np.dtype(a.dtype), inverse)
    blocks, threads = rt.grid1d(a.shape[0] // 2)
    p = 1
    while p < L:
        _fft_pass[blocks, threads](b, a, tw, L, S, p)
        a, b = b, a
        p *= 2
    return a, b


def spectrum(src5, fshape, dilation, name):
    """Half spectrum (A, B, FD * FH * (FW/2 + 1)) of real 5-D ``src5``, zero-dilated and
    zero-padded to ``fshape``; held in workspaces named after ``name``."""
    A, B = src5.shape[:2]
    FD, FH, FW = fshape
    FWh = FW // 2 + 1
    cd = _complex(src5.dtype)
    full = A * B * FD * FH * FW
    fa = rt.workspace(name + "_fa", (full,), cd)
    fb = rt.workspace(name + "_fb", (full,), cd)
    grid, block = rt.grid_rows(FW, FH, A * B * FD)
    _pack[grid, block](fa.reshape((A, B, FD, FH, FW)), src5, *dilation)
    res, _ = _fft_axis(fa, fb, FW, 1, False)
    nh = A * B * FD * FH * FWh
    ha = rt.workspace(name + "_ha", (nh,), cd)
    hb = rt.workspace(name + "_hb", (nh,), cd)
    blocks, threads = rt.grid1d(nh)
    _take_half[blocks, threads](ha, res, FW, FWh)
    res, spare = _fft_axis(ha, hb, FH, FWh, False)
    res, _ = _fft_axis(res, spare, FD, FH * FWh, False)
    return res.reshape((A, B, FD * FH * FWh))


def fft_fwd(xp, w, bias, stride, dilation, groups, out):
    """out = valid correlation of padded ``xp`` with ``w`` (dilated, strided) + bias."""
    N, C = xp.shape[:2]
    O = w.shape[0]
    fshape = tuple(_pow2(p) for p in xp.shape[2:])
    FD, FH, FW = fshape
    FWh = FW // 2 + 1
    Fh = FD * FH * FWh
    cd = _complex(xp.dtype)
    wf = spectrum(w, fshape, dilation, "fft_w")
    per_image = (C + O) * FD * FH * FW * cd.itemsize * 2
    nb = max(1, min(N, FFT_BUDGET_BYTES // max(per_image, 1)))
    if rt.simulator():
        nb = min(nb, 2)
    scale = 1.0 / (FD * FH * FW)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        xf = spectrum(xp[n0:n0 + m], fshape, (1, 1, 1), "fft_x")
        ya = rt.workspace("fft_y_ha", (m * O * Fh,), cd)
        yb = rt.workspace("fft_y_hb", (m * O * Fh,), cd)
        nob = math.ceil(O // groups / OBK)
        zb = math.ceil(m / NBK)
        if rt.simulator():
            tpb, zb = 8, min(zb, 2)
        else:
            tpb, zb = 128, min(zb, 65535)
        _contract[(math.ceil(Fh / tpb), groups * nob, zb), tpb](ya.reshape((m, O, Fh)), xf, wf, groups)
        res, spare = _fft_axis(ya, yb, FD, FH * FWh, True)
        res, _ = _fft_axis(res, spare, FH, FWh, True)
        full = m * O * FD * FH * FW
        fa = rt.workspace("fft_y_fa", (full,), cd)
        fb = rt.workspace("fft_y_fb", (full,), cd)
        blocks, threads = rt.grid1d(full)
        _expand_half[blocks, threads](fa, res, FW, FWh)
        res, _ = _fft_axis(fa, fb, FW, 1, True)
        o5 = out[n0:n0 + m]
        OD, OH, OW = o5.shape[2:]
        grid, block = rt.grid_rows(OW, OH, m * O * OD)
        _crop[grid, block](o5, res.reshape((m, O, FD, FH, FW)), bias, *stride,
                           xp.dtype.type(scale))
    return out
