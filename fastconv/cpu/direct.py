"""Direct convolution kernels: the definition, loop-blocked for SIMD.

Forward parallelises over (image, group, block of 4 output channels, block of output
rows): every task owns distinct output rows, so threads never write the same memory.
The innermost loop runs along a line of outputs (a row, or for unit stride a whole plane
on the padded-width grid), contiguous in the input, so LLVM vectorises it; four output
channels share each input load and each accumulator update carries up to four taps.
"""
import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ._common import JIT, U, n_tasks_target, serial_if_small

@njit(inline="always", **JIT)
def _taps4(a0, a1, a2, a3, S, xr, base, step, wr0, wr1, wr2, wr3, KW, dw):
    # a_j[t] += sum_kw wr_j[kw] * xr[base + kw*dw + t*step]  for 4 output channels j.
    # Taps go 4 (then 2, then 1) at a time, so every accumulator load/store feeds
    # 4-16 FMAs and the t-loop vectorises along contiguous memory. Input indices are
    # unsigned: numba then skips negative-index wrap-around, which would otherwise block
    # vectorisation.
    us = U(step)
    kw = 0
    while kw + 4 <= KW:
        b0 = U(base + kw * dw)
        b1 = b0 + U(dw)
        b2 = b1 + U(dw)
        b3 = b2 + U(dw)
        w00, w01, w02, w03 = wr0[kw], wr0[kw + 1], wr0[kw + 2], wr0[kw + 3]
        w10, w11, w12, w13 = wr1[kw], wr1[kw + 1], wr1[kw + 2], wr1[kw + 3]
        w20, w21, w22, w23 = wr2[kw], wr2[kw + 1], wr2[kw + 2], wr2[kw + 3]
        w30, w31, w32, w33 = wr3[kw], wr3[kw + 1], wr3[kw + 2], wr3[kw + 3]
        for t in range(S):
            q = U(t) * us
            x0 = xr[b0 + q]
            x1 = xr[b1 + q]
            x2 = xr[b2 + q]
            x3 = xr[b3 + q]
            a0[t] += w00 * x0 + w01 * x1 + w02 * x2 + w03 * x3
            a1[t] += w10 * x0 + w11 * x1 + w12 * x2 + w13 * x3
            a2[t] += w20 * x0 + w21 * x1 + w22 * x2 + w23 * x3
            a3[t] += w30 * x0 + w31 * x1 + w32 * x2 + w33 * x3
        kw += 4
    while kw + 2 <= KW:
        b0 = U(base + kw * dw)
        b1 = b0 + U(dw)
        w00, w01, w10, w11 = wr0[kw], wr0[kw + 1], wr1[kw], wr1[kw + 1]
        w20, w21, w30, w31 = wr2[kw], wr2[kw + 1], wr3[kw], wr3[kw + 1]
        for t in range(S):
            q = U(t) * us
            x0 = xr[b0 + q]
            x1 = xr[b1 + q]
            a0[t] += w00 * x0 + w01 * x1
            a1[t] += w10 * x0 + w11 * x1
            a2[t] += w20 * x0 + w21 * x1
            a3[t] += w30 * x0 + w31 * x1
        kw += 2
    while kw < KW:
        b0 = U(base + kw * dw)
        w00, w10, w20, w30 = wr0[kw], wr1[kw], wr2[kw], wr3[kw]
        for t in range(S):
            x0 = xr[b0 + U(t) * us]
            a0[t] += w00 * x0
            a1[t] += w10 * x0
            a2[t] += w20 * x0
            a3[t] += w30 * x0
        kw += 1


@njit(inline="always", **JIT)
def _taps1(a0, S, xr, base, step, wr0, KW, dw):
    # One output channel: a0[t] += sum_kw wr0[kw] * xr[base + kw*dw + t*step].
    us = U(step)
    kw = 0
    while kw + 4 <= KW:
        b0 = U(base + kw * dw)
        b1 = b0 + U(dw)
        b2 = b1 + U(dw)
        b3 = b2 + U(dw)
        w00, w01, w02, w03 = wr0[kw], wr0[kw + 1], wr0[kw + 2], wr0[kw + 3]
        for t in range(S):
            q = U(t) * us
            a0[t] += w00 * xr[b0 + q] + w01 * xr[b1 + q] + w02 * xr[b2 + q] + w03 * xr[b3 + q]
        kw += 4
    while kw < KW:
        b0 = U(base + kw * dw)
        w00 = wr0[kw]
        for t in range(S):
            a0[t] += w00 * xr[b0 + U(t) * us]
        kw += 1


@njit(inline="always", **JIT)
def _taps1_rows3(a0, S, xr, base, rstep, step, wr0, wr1, wr2, KW, dw):
    # One output channel, three kernel rows (input rows base, base+rstep, base+2*rstep)
    # per pass: a0[t] += sum_{r<3, kw} wr_r[kw] * xr[base + r*rstep + kw*dw + t*step].
    # For the single-channel problems of signal processing this cuts the accumulator
    # traffic threefold against one row per pass.
    us = U(step)
    r1 = U(rstep)
    r2 = U(2 * rstep)
    kw = 0
    while kw + 2 <= KW:
        b0 = U(base + kw * dw)
        b1 = b0 + U(dw)
        w00, w01, w10, w11 = wr0[kw], wr0[kw + 1], wr1[kw], wr1[kw + 1]
        w20, w21 = wr2[kw], wr2[kw + 1]
        for t in range(S):
            q = U(t) * us
            a0[t] += (w00 * xr[b0 + q] + w01 * xr[b1 + q]
                      + w10 * xr[b0 + r1 + q] + w11 * xr[b1 + r1 + q]
                      + w20 * xr[b0 + r2 + q] + w21 * xr[b1 + r2 + q])
        kw += 2
    while kw < KW:
        b0 = U(base + kw * dw)
        w00, w10, w20 = wr0[kw], wr1[kw], wr2[kw]
        for t in range(S):
            q = b0 + U(t) * us
            a0[t] += w00 * xr[q] + w10 * xr[q + r1] + w20 * xr[q + r2]
        kw += 1


@njit(parallel=True, **JIT)
def _direct_fwd(out, xf, w, bias, Wp, sd, sh, sw, dd, dh, dw, groups, flat, seg, scratch):
    # out: (N, O, OD, OH, OW)   xf: (N, C, Dp, Hp*Wp) padded planes, flattened
    # w: (O, C/groups, KD, KH, KW)
    # A "line" is a run of outputs whose inputs advance by a fixed step: one output row
    # (flat=False), or, for unit stride, a whole output plane read on the padded width
    # grid (flat=True; the Wp - OW wrap-around columns are computed and dropped). Tasks
    # are (image, group, block of 4 output channels, od, line, segment of `seg` outputs).
    N, O, OD, OH, OW = out.shape
    Cg, KD, KH, KW = w.shape[1], w.shape[2], w.shape[3], w.shape[4]
    Og = O // groups
    nob = (Og + 3) // 4
    if flat:
        nlines = 1
        L = (OH - 1) * Wp + OW
        pitch = Wp
    else:
        nlines = OH
        L = OW
        pitch = OW
    nseg = (L + seg - 1) // seg
    for task in prange(N * groups * nob * OD * nlines * nseg):
        sg = task % nseg
        r = task // nseg
        line = r % nlines
        r = r // nlines
        od = r % OD
        r = r // OD
        ob = r % nob
        r = r // nob
        g = r % groups
        n = r // groups
        o0 = g * Og + ob * 4
        nb = min(4, (g + 1) * Og - o0)
        s0 = sg * seg
        S = min(seg, L - s0)
        acc = scratch[get_thread_id()]       # this thread's L1-sized accumulators
        for j in range(nb):
            acc[j, :S] = 0
        for c in range(Cg):
            xc = xf[n, g * Cg + c]
            for kd in range(KD):
                xr = xc[od * sd + kd * dd]
                base = line * sh * Wp + s0 * sw
                rstep = dh * Wp
                if nb == 4:
                    for kh in range(KH):
                        _taps4(acc[0], acc[1], acc[2], acc[3], S, xr, base + kh * rstep, sw,
                               w[o0, c, kd, kh], w[o0 + 1, c, kd, kh],
                               w[o0 + 2, c, kd, kh], w[o0 + 3, c, kd, kh], KW, dw)
                else:
                    for j in range(nb):
                        wj = w[o0 + j, c, kd]
                        kh = 0
                        while kh + 3 <= KH:       # three kernel rows per pass over acc
                            _taps1_rows3(acc[j], S, xr, base + kh * rstep, rstep, sw,
                                         wj[kh], wj[kh + 1], wj[kh + 2], KW, dw)
                            kh += 3
                        while kh < KH:
                            _taps1(acc[j], S, xr, base + kh * rstep, sw, wj[kh], KW, dw)
                            kh += 1
        for j in range(nb):
            bv = bias[o0 + j]
            oc = out[n, o0 + j, od]
            aj = acc[j]
            tg = s0
            while tg < s0 + S:                      # one output row at a time
                row = tg // pitch
                ow0 = tg - row * pitch
                end = min(s0 + S, (row + 1) * pitch)
                orow = oc[line + row]
                for ow in range(ow0, min(OW, ow0 + end - tg)):
                    orow[ow] = aj[tg - s0 + ow - ow0] + bv
                tg = end


@njit(parallel=True, **JIT)
def _direct_bwd_weight(gw, xf, gl, Wp, sd, sh, sw, dd, dh, dw, groups, nlines):
    # gw: (O, C/groups, KD, KH, KW)    xf: (N, C, Dp, Hp*Wp) padded planes, flattened
    # gl: (N, O, OD, nlines * L) grad_out as lines (see _direct_fwd; for unit stride one
    #     line per plane on the padded-width grid with zeros in the wrap-around columns)
    # One task per (o, c, kd, kh, group of 4 kw taps): four dot products share each
    # grad_out load and run along contiguous lines, so they vectorise.
    O, Cg, KD, KH, KW = gw.shape
    N, _, OD, LL = gl.shape
    L = LL // nlines
    Og = O // groups
    nkg = (KW + 3) // 4
    us = U(sw)
    for task in prange(O * Cg * KD * KH * nkg):
        kg = task % nkg
        r = task // nkg
        kh = r % KH
        r = r // KH
        kd = r % KD
        r = r // KD
        c = r % Cg
        o = r // Cg
        ci = (o // Og) * Cg + c
        kw0 = kg * 4
        # the last group may be partial: its extra taps repeat the last one (discarded)
        e1 = U(min(kw0 + 1, KW - 1) * dw)
        e2 = U(min(kw0 + 2, KW - 1) * dw)
        e3 = U(min(kw0 + 3, KW - 1) * dw)
        e0 = U(kw0 * dw)
        a0 = gw[o, c, kd, kh, kw0]     # gw is zero-filled: a zero of the array's precision
        a1 = a0
        a2 = a0
        a3 = a0
        for n in range(N):
            for od in range(OD):
                xr = xf[n, ci, od * sd + kd * dd]
                g = gl[n, o, od]
                for line in range(nlines):
                    base = U((line * sh + kh * dh) * Wp)
                    lo = U(line * L)
                    for t in range(L):
                        gv = g[lo + U(t)]
                        q = base + U(t) * us
                        a0 += gv * xr[q + e0]
                        a1 += gv * xr[q + e1]
                        a2 += gv * xr[q + e2]
                        a3 += gv * xr[q + e3]
        gw[o, c, kd, kh, kw0] = a0
        if kw0 + 1 < KW:
            gw[o, c, kd, kh, kw0 + 1] = a1
        if kw0 + 2 < KW:
            gw[o, c, kd, kh, kw0 + 2] = a2
        if kw0 + 3 < KW:
            gw[o, c, kd, kh, kw0 + 3] = a3


def direct_fwd(xp, w, bias, stride, dilation, groups, out):
    """out[n, o] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*stride + k*dilation]."""
    N, O, OD, OH, OW = out.shape
    Wp = xp.shape[4]
    flat = stride[1] == 1 and stride[2] == 1
    L = (OH - 1) * Wp + OW if flat else OW
    lines = OD * (1 if flat else OH)
    tasks = N * groups * -(-(O // groups) // 4) * lines
    nseg = max(1, min(-(-n_tasks_target() // tasks), L // 64))
    seg = min(-(-L // nseg), 8192 // xp.dtype.itemsize)      # accumulator rows stay in L1
    xf = xp.reshape(xp.shape[:3] + (xp.shape[3] * Wp,))
    scratch = np.empty((numba.get_num_threads(), 4, seg), dtype=out.dtype)
    with serial_if_small(out.size * w[0].size):
        _direct_fwd(out, xf, w, bias, Wp, *stride, *dilation, groups, flat, seg, scratch)
    return out


def direct_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Gradient of the forward with respect to ``w`` (bias excluded)."""
    N, O, OD, OH, OW = go.shape
    Wp = xp.shape[4]
    if stride[1] == 1 and stride[2] == 1:      # one line per plane on the padded-width grid
        L = (OH - 1) * Wp + OW
        gl = np.zeros((N, O, OD, OH * Wp), dtype=go.dtype)
        gl.reshape(N, O, OD, OH, Wp)[..., :OW] = go
        gl = gl[..., :L]
        nlines = 1
    else:                                      # one line per output row
        gl = go.reshape(N, O, OD, OH * OW)
        nlines = OH
    gl = np.ascontiguousarray(gl)
    xf = xp.reshape(xp.shape[:3] + (xp.shape[3] * Wp,))
    gw = np.zeros((O, xp.shape[1] // groups) + tuple(kernel), dtype=xp.dtype)
    _direct_bwd_weight(gw, xf, gl, Wp, *stride, *dilation, groups, nlines)
    return gw
