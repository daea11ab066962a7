"""Direct convolution kernels: the definition, loop-blocked for SIMD.

Forward parallelises over (image, group, block of 4 output channels, block of output
rows): every task owns distinct output rows, so threads never write the same memory.
The innermost loop runs along an output row (``W_out``), contiguous in the output and,
for stride 1, in the input, so LLVM vectorises it; four output channels share each input
load (register blocking).
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, n_tasks_target

OB = 4  # output channels per task (register block)


@njit(parallel=True, **JIT)
def _direct_fwd(out, xp, w, bias, sd, sh, sw, dd, dh, dw, groups, row_block):
    # out: (N, O, OD, OH, OW)   xp: (N, C, Dp, Hp, Wp) padded   w: (O, C/groups, KD, KH, KW)
    N, O, OD, OH, OW = out.shape
    Cg, KD, KH, KW = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    Og = O // groups
    nob = (Og + OB - 1) // OB
    rows = OD * OH
    nrb = (rows + row_block - 1) // row_block
    for t in prange(N * groups * nob * nrb):
        rb = t % nrb
        r = t // nrb
        ob = r % nob
        r = r // nob
        g = r % groups
        n = r // groups
        o0 = g * Og + ob * OB
        nb = min(OB, (g + 1) * Og - o0)
        for row in range(rb * row_block, min(rows, (rb + 1) * row_block)):
            od = row // OH
            oh = row % OH
            for j in range(nb):
                orow = out[n, o0 + j, od, oh]
                bv = bias[o0 + j]
                for ow in range(OW):
                    orow[ow] = bv
            y0 = out[n, o0, od, oh]
            y1 = out[n, min(o0 + 1, O - 1), od, oh]
            y2 = out[n, min(o0 + 2, O - 1), od, oh]
            y3 = out[n, min(o0 + 3, O - 1), od, oh]
            for c in range(Cg):
                ci = g * Cg + c
                for kd in range(KD):
                    z = od * sd + kd * dd
                    for kh in range(KH):
                        xr = xp[n, ci, z, oh * sh + kh * dh]
                        for kw in range(KW):
                            x0 = kw * dw
                            if nb == OB:
                                w0 = w[o0, c, kd, kh, kw]
                                w1 = w[o0 + 1, c, kd, kh, kw]
                                w2 = w[o0 + 2, c, kd, kh, kw]
                                w3 = w[o0 + 3, c, kd, kh, kw]
                                for ow in range(OW):
                                    v = xr[x0 + ow * sw]
                                    y0[ow] += w0 * v
                                    y1[ow] += w1 * v
                                    y2[ow] += w2 * v
                                    y3[ow] += w3 * v
                            else:
                                for j in range(nb):
                                    wv = w[o0 + j, c, kd, kh, kw]
                                    yj = out[n, o0 + j, od, oh]
                                    for ow in range(OW):
                                        yj[ow] += wv * xr[x0 + ow * sw]


@njit(parallel=True, **JIT)
def _direct_bwd_weight(gw, xp, go, sd, sh, sw, dd, dh, dw, groups):
    # gw: (O, C/groups, KD, KH, KW)   xp: (N, C, Dp, Hp, Wp) padded   go: (N, O, OD, OH, OW)
    O, Cg, KD, KH, KW = gw.shape
    N, _, OD, OH, OW = go.shape
    Og = O // groups
    K = KD * KH * KW
    for t in prange(O * Cg * K):
        k = t % K
        r = t // K
        c = r % Cg
        o = r // Cg
        kw = k % KW
        kh = (k // KW) % KH
        kd = k // (KW * KH)
        ci = (o // Og) * Cg + c
        x0 = kw * dw
        acc = gw[o, c, kd, kh, kw]  # zero-initialised: keeps the array's precision
        for n in range(N):
            for od in range(OD):
                z = od * sd + kd * dd
                for oh in range(OH):
                    xr = xp[n, ci, z, oh * sh + kh * dh]
                    gr = go[n, o, od, oh]
                    for ow in range(OW):
                        acc += gr[ow] * xr[x0 + ow * sw]
        gw[o, c, kd, kh, kw] = acc


def direct_fwd(xp, w, bias, stride, dilation, groups, out):
    """out[n, o] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*stride + k*dilation]."""
    N, O = out.shape[:2]
    rows = out.shape[2] * out.shape[3]
    tasks = N * groups * -(-(O // groups) // OB)
    nrb = min(rows, max(1, -(-n_tasks_target() // tasks)))
    row_block = -(-rows // nrb)
    _direct_fwd(out, xp, w, bias, *stride, *dilation, groups, row_block)
    return out


def direct_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Gradient of the forward with respect to ``w`` (bias excluded)."""
    O = go.shape[1]
    gw = np.zeros((O, xp.shape[1] // groups) + tuple(kernel), dtype=xp.dtype)
    _direct_bwd_weight(gw, xp, go, *stride, *dilation, groups)
    return gw
