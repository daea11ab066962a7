"""Direct convolution on the GPU: output-tiled, with the input tile and the filter slice
staged in shared memory.

A block computes a TH x TW tile of output positions (one output depth of one image) for
OB output channels of one group: each thread owns one output position and keeps OB
accumulators in registers. Input channels are walked in stages of CB channels: the block
loads the CB-channel input window its tile reads (``(TH-1)*stride + (k-1)*dilation + 1``
rows, likewise columns and depth) and the matching OB x CB filter taps, synchronises and
accumulates. When a window does not fit the shared-memory budget (huge dilations or
kernels) :func:`direct_fwd` falls back to a kernel that reads global memory directly.
"""
from __future__ import annotations

import math

from numba import cuda

from . import runtime as rt

TH, TW = (2, 4) if rt.simulator() else (8, 16)   # output tile (rows x columns) = block shape
NT = TH * TW            # threads per block
OB = 8                  # output channels per thread (register block)
XS = 3072               # shared input window capacity (elements)
WS = 2048               # shared filter capacity (elements)
ALIGN = rt.smem_align()


@rt.kernel
def _direct_fwd(out, xp, w, bias, KD, KH, KW, sd, sh, sw, dd, dh, dw, groups, CB,
                TID, TIH, TIW, tiles_h, tiles_w):
    # out: (N, O, OD, OH, OW)   xp: (N, C, Dp, Hp, Wp) padded   w: (O * Cg * KD*KH*KW,) flat
    xs = cuda.shared.array(XS, dtype=out.dtype)          # [cc, a, b, q]: input window
    ws = cuda.shared.array(WS, dtype=out.dtype, alignment=ALIGN)   # [cc, k, j]: filter taps
    acc = cuda.local.array(OB, dtype=out.dtype)
    N, O, OD, OH, OW = out.shape
    C, Hp, Wp = xp.shape[1], xp.shape[3], xp.shape[4]
    Cg = C // groups
    Og = O // groups
    K = KD * KH * KW
    nob = (Og + OB - 1) // OB
    g = cuda.blockIdx.y // nob
    o0 = g * Og + (cuda.blockIdx.y % nob) * OB
    nb = min(OB, (g + 1) * Og - o0)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TW + tx
    for tile in range(cuda.blockIdx.x, tiles_h * tiles_w, cuda.gridDim.x):
        th0 = (tile // tiles_w) * TH
        tw0 = (tile % tiles_w) * TW
        oh = th0 + ty
        ow = tw0 + tx
        for zi in range(cuda.blockIdx.z, N * OD, cuda.gridDim.z):
            n = zi // OD
            od = zi % OD
            for j in range(OB):
                acc[j] = 0
            for c0 in range(0, Cg, CB):
                cb = min(CB, Cg - c0)
                # the input window: rows (cc, a, b) split over ty, columns q over tx
                for row in range(ty, cb * TID * TIH, TH):
                    b = row % TIH
                    ca = row // TIH
                    a = ca % TID
                    cc = ca // TID
                    y = th0 * sh + b
                    z = od * sd + a
                    for q in range(tx, TIW, TW):
                        x = tw0 * sw + q
                        if y < Hp and x < Wp:
                            xs[row * TIW + q] = xp[n, g * Cg + c0 + cc, z, y, x]
                        else:
                            xs[row * TIW + q] = 0
                # the filter taps of this block's output channels
                for e in range(tid, cb * K * OB, NT):
                    j = e % OB
                    r = e // OB
                    if j < nb:
                        ws[e] = w[((o0 + j) * Cg + c0 + r // K) * K + r % K]
                    else:
                        ws[e] = 0
                cuda.syncthreads()
                if oh < OH and ow < OW:
                    for cc in range(cb):
                        for kd in range(KD):
                            for kh in range(KH):
                                xrow = ((cc * TID + kd * dd) * TIH + ty * sh + kh * dh) * TIW + tx * sw
                                wrow = ((cc * KD + kd) * KH + kh) * KW * OB
                                for kw in range(KW):
                                    v = xs[xrow + kw * dw]
                                    wb = wrow + kw * OB
                                    for j in range(OB):
                                        acc[j] += ws[wb + j] * v
                cuda.syncthreads()
            if oh < OH and ow < OW:
                for j in range(OB):
                    if j < nb:
                        out[n, o0 + j, od, oh, ow] = acc[j] + bias[o0 + j]


@cuda.jit(cache=True)
def _direct_fwd_global(out, xp, w, bias, sd, sh, sw, dd, dh, dw, groups):
    # the same result without shared memory: one thread per output element
    N, O, OD, OH, OW = out.shape
    Cg, KD, KH, KW = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    Og = O // groups
    start = cuda.grid(1)
    for t in range(start, N * O * OD * OH * OW, cuda.gridsize(1)):
        ow = t % OW
        r = t // OW
        oh = r % OH
        r //= OH
        od = r % OD
        r //= OD
        o = r % O
        n = r // O
        ci0 = (o // Og) * Cg
        out[n, o, od, oh, ow] = bias[o]
        for c in range(Cg):
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        out[n, o, od, oh, ow] += w[o, c, kd, kh, kw] * xp[
                            n, ci0 + c, od * sd + kd * dd, oh * sh + kh * dh, ow * sw + kw * dw]


def direct_fwd(xp, w, bias, stride, dilation, groups, out):
    """out[n, o] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*stride + k*dilation]."""
    N, O, OD, OH, OW = out.shape
    Cg = w.shape[1]
    KD, KH, KW = w.shape[2:]
    sd, sh, sw = stride
    dd, dh, dw = dilation
    TID = (KD - 1) * dd + 1
    TIH = (TH - 1) * sh + (KH - 1) * dh + 1
    TIW = (TW - 1) * sw + (KW - 1) * dw + 1
    K = KD * KH * KW
    CB = min(Cg, XS // (TID * TIH * TIW), WS // (K * OB))
    if CB < 1:
        blocks, threads = rt.grid1d(out.size)
        _direct_fwd_global[blocks, threads](out, xp, w, bias, sd, sh, sw, dd, dh, dw, groups)
        return out
    tiles_h = math.ceil(OH / TH)
    tiles_w = math.ceil(OW / TW)
    nob = math.ceil(O // groups / OB)
    rows = N * OD
    zgrid = min(rows, 2 if rt.simulator() else 65535)
    xgrid = min(tiles_h * tiles_w, 2 if rt.simulator() else 1 << 30)
    _direct_fwd[(xgrid, groups * nob, zgrid), (TW, TH)](
        out, xp, rt.flat(w), bias, KD, KH, KW, sd, sh, sw, dd, dh, dw, groups, CB,
        TID, TIH, TIW, tiles_h, tiles_w)
    return out
