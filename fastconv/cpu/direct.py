"""Direct convolution kernels: the definition, blocked for SIMD registers.

Forward parallelises over (image, group, segment of an output plane, block of 4 output
channels): every task owns distinct outputs, so threads never write the same memory.
A whole output plane is one line read on the padded-width grid, contiguous in the
input; a strided convolution first splits its input into phases (polyphase), so that it
too reads at unit stride. The weight becomes a list of taps (channel, depth, row,
column), each an offset into the image. Along the line, register tiles (cpu/_simd.py)
hold 4 output channels x 3 vectors while they run over the taps; a single output
channel, or a line shorter than a tile, takes passes of eight taps over its
accumulators instead. Images whose planes are shorter than a tile are interleaved
(image index innermost, "batch-minor"), so that one line covers the whole batch.
"""
import functools

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ._common import JIT, U, n_tasks_target, serial_if_small, workspace
from ._simd import TILE_BYTES, tile4, tile4_add, tile_width
from .stencil import stencil2d


@njit(inline="always", **JIT)
def _one8(a0, S, xr, base, off, wg, t0, j):
    # one output channel (weight column j), eight taps per pass over its accumulators
    b0 = base + U(off[t0])
    b1 = base + U(off[t0 + 1])
    b2 = base + U(off[t0 + 2])
    b3 = base + U(off[t0 + 3])
    b4 = base + U(off[t0 + 4])
    b5 = base + U(off[t0 + 5])
    b6 = base + U(off[t0 + 6])
    b7 = base + U(off[t0 + 7])
    w0, w1, w2, w3 = wg[t0, j], wg[t0 + 1, j], wg[t0 + 2, j], wg[t0 + 3, j]
    w4, w5, w6, w7 = wg[t0 + 4, j], wg[t0 + 5, j], wg[t0 + 6, j], wg[t0 + 7, j]
    for t in range(S):
        q = U(t)
        a0[t] += ((w0 * xr[b0 + q] + w1 * xr[b1 + q]) + (w2 * xr[b2 + q] + w3 * xr[b3 + q])
                  + ((w4 * xr[b4 + q] + w5 * xr[b5 + q]) + (w6 * xr[b6 + q] + w7 * xr[b7 + q])))


@njit(inline="always", **JIT)
def _one4(a0, S, xr, base, off, wg, t0, j):
    # one output channel: a0[t] += sum_{i<4} wg[t0+i, j] * xr[base + off[t0+i] + t]
    # (indices unsigned: numba then skips negative-index wrap-around, which would
    # otherwise block vectorisation)
    b0 = base + U(off[t0])
    b1 = base + U(off[t0 + 1])
    b2 = base + U(off[t0 + 2])
    b3 = base + U(off[t0 + 3])
    w0, w1, w2, w3 = wg[t0, j], wg[t0 + 1, j], wg[t0 + 2, j], wg[t0 + 3, j]
    for t in range(S):
        q = U(t)
        a0[t] += (w0 * xr[b0 + q] + w1 * xr[b1 + q]) + (w2 * xr[b2 + q] + w3 * xr[b3 + q])


@njit(inline="always", **JIT)
def _one1(a0, S, xr, base, off, wg, t0, j):
    b0 = base + U(off[t0])
    w0 = wg[t0, j]
    for t in range(S):
        a0[t] += w0 * xr[b0 + U(t)]


@njit(inline="always", **JIT)
def _add_run(dst, d0, src, s0, n, bv):
    # dst[d0 + j] = src[s0 + j] + bv for j < n. Output rows are short (tens of values),
    # too short for LLVM's vectorised loops (their scalar remainder would do the work),
    # so add 8 at a time as straight-line code that the SLP vectoriser turns into one
    # vector load, add and store.
    j = 0
    while j + 8 <= n:
        a = U(s0 + j)
        b = U(d0 + j)
        dst[b] = src[a] + bv
        dst[b + U(1)] = src[a + U(1)] + bv
        dst[b + U(2)] = src[a + U(2)] + bv
        dst[b + U(3)] = src[a + U(3)] + bv
        dst[b + U(4)] = src[a + U(4)] + bv
        dst[b + U(5)] = src[a + U(5)] + bv
        dst[b + U(6)] = src[a + U(6)] + bv
        dst[b + U(7)] = src[a + U(7)] + bv
        j += 8
    while j < n:
        dst[U(d0 + j)] = src[U(s0 + j)] + bv
        j += 1


@njit(**JIT)
def _apply_taps(acc, S, xi, base, off, wg, T, nb):
    # acc[j, :S] += sum_t wg[t, j] * xi[base + off[t] + (0..S)] for the nb (1 or up to 4)
    # output channels of a task (acc[j, :S] = ... when S holds a register tile).
    # Compiled on its own (not inside the parallel kernel): this keeps numba's parfor
    # passes, and so the first compilation, short.
    if nb > 1 and S >= TILE_BYTES // acc.itemsize:
        # register tiles along the line, TAP_CHUNK taps at a time (a chunk's input rows
        # stay in L1 while its tiles run along the segment); a last partial tile is
        # computed over all taps at S - step, overlapping its neighbour (whose outputs it
        # recomputes and overwrites)
        step = TILE_BYTES // acc.itemsize
        P = S - S % step
        for c0 in range(0, T, TAP_CHUNK):
            tc = min(TAP_CHUNK, T - c0)
            oc = off[c0:]
            wc = wg[c0:]
            for p in range(0, P, step):
                if c0 == 0:
                    tile4(acc, p, xi, base, oc, wc, tc)
                else:
                    tile4_add(acc, p, xi, base, oc, wc, tc)
        if P < S:
            tile4(acc, S - step, xi, base, off, wg, T)
        return
    # one output channel (or a line shorter than a tile): passes of 8 taps (then 4, 1)
    # over each channel's accumulators
    for j in range(nb):
        t0 = 0
        while t0 + 8 <= T:
            _one8(acc[j], S, xi, base, off, wg, t0, j)
            t0 += 8
        if t0 + 4 <= T:
            _one4(acc[j], S, xi, base, off, wg, t0, j)
            t0 += 4
        while t0 < T:
            _one1(acc[j], S, xi, base, off, wg, t0, j)
            t0 += 1


@njit(parallel=True, **JIT)
def _direct_fwd(out, xs, wp, off, gstride, bias, Wp, HWp, sd, groups, seg, scratch, nm):
    # out: (N, O, OD, OH, OW)   xs: (N, C*Dp*Hp*Wp) the padded input (or its phases)
    # wp, off: the weight as a tap list (see _pack); a group's planes start gstride
    # elements apart in xs[n], its depth planes HWp apart. Height and width strides are 1
    # (direct_fwd splits strided inputs into phases): a whole output plane is one line
    # read on the padded-width grid (the Wp - OW wrap-around columns are computed and
    # dropped). Tasks are (image, group, od, segment of `seg` outputs of the line, block
    # of 4 output channels).
    # Batch-minor (nm = N > 1): xs is (1, C*Dp*Hp*Wp*N) with the image index innermost,
    # so one line holds the output plane of all nm images (position ow*nm + n of a row),
    # long enough to amortise each pass's setup when the images are small.
    N, O, OD, OH, OW = out.shape
    Og = O // groups
    nob = (Og + 3) // 4
    T = off.shape[0]
    OWn = OW * nm                               # a row of the line: OW outputs per image
    tw = TILE_BYTES // out.itemsize
    L = (OH - 1) * Wp + OWn
    nseg = (L + seg - 1) // seg
    for task in prange(xs.shape[0] * groups * nob * OD * nseg):
        ob = task % nob                     # channel blocks innermost: consecutive tasks
        r = task // nob                     # share their input segment while it is cached
        sg = r % nseg
        r = r // nseg
        od = r % OD
        r = r // OD
        g = r % groups
        n = r // groups
        o0 = g * Og + ob * 4
        nb = min(4, (g + 1) * Og - o0)
        s0 = sg * seg
        S = min(seg, L - s0)
        acc = scratch[get_thread_id()]       # this thread's L1-sized accumulators
        if nb == 1 or S < tw:                # (register tiles overwrite them)
            for j in range(nb):
                acc[j, :S] = 0
        wg = wp[g, ob]
        base = U(g * gstride + od * sd * HWp + s0)
        _apply_taps(acc, S, xs[n], base, off, wg, T, nb)
        for j in range(nb):
            bv = bias[o0 + j]
            aj = acc[j]
            tg = s0
            while tg < s0 + S:                      # one output row at a time
                row = tg // Wp
                c0 = tg - row * Wp
                end = min(s0 + S, (row + 1) * Wp)
                c1 = min(OWn, c0 + end - tg)
                a0 = tg - s0 - c0
                if nm == 1:
                    _add_run(out[n, o0 + j, od, row], c0, aj, a0 + c0, c1 - c0, bv)
                else:                               # column c = ow * nm + image
                    for ni in range(nm):
                        orow = out[ni, o0 + j, od, row]
                        for ow in range((c0 - ni + nm - 1) // nm, (c1 - ni + nm - 1) // nm):
                            orow[ow] = aj[a0 + ow * nm + ni] + bv
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
    if _one_channel(xp, w, stride, dilation, groups):          # depthwise 2-D: cpu/stencil.py
        stencil2d(out[:, :, 0], xp[:, :, 0], w[:, 0, 0], bias)
        return out
    Dp = xp.shape[2]
    sd, sh, sw = stride
    if sh > 1 or sw > 1:
        # Polyphase: split each plane into its sh*sw phases (rows i*sh + ph, columns
        # j*sw + pw), so that every tap reads one phase at unit stride and the kernel
        # runs on contiguous, vectorisable lines.
        xp = _phase_split(xp, sh, sw)
    Hp, Wp = xp.shape[3], xp.shape[4]
    nm = N if batch_minor(N, (OH - 1) * Wp + OW, out.dtype.itemsize) else 1
    if nm > 1:                                 # images innermost: (1, C, Dp, Hp, Wp * N)
        xs = workspace("minor", xp.shape[1:] + (N,), xp.dtype)
        np.copyto(xs, xp.transpose(1, 2, 3, 4, 0))
        xs = xs.reshape(1, -1)
    else:
        xs = xp.reshape(N, -1)
    off, wp = _pack(w, groups, Dp, Hp * Wp * nm, Wp * nm, *dilation, sh, sw, nm)
    L = (OH - 1) * Wp * nm + OW * nm
    tasks = xs.shape[0] * groups * -(-(O // groups) // 4) * OD
    nseg = max(1, min(-(-n_tasks_target() // tasks), L // 64))
    seg = min(-(-L // nseg), SEG_BYTES // out.dtype.itemsize)   # accumulators stay in L1
    seg = -(-L // -(-L // seg))     # equal segments: no short tail too small for a tile
    scratch = np.empty((numba.get_num_threads(), 4, seg), dtype=out.dtype)
    with serial_if_small(out.size * w[0].size):
        _direct_fwd(out, xs, wp, off, xp.shape[1] // groups * Dp * Hp * Wp * nm,
                    bias, Wp * nm, Hp * Wp * nm, sd, groups, seg, scratch, nm)
    return out


def _one_channel(xp, w, stride, dilation, groups):
    """Each output channel reads one input channel of 2-D planes (depthwise, one signal)
    at unit stride and dilation: the one-channel stencil kernel's problem."""
    return (w.shape[0] == groups and w.shape[1] == 1 and xp.shape[2] == w.shape[2] == 1
            and stride == (1, 1, 1) and dilation == (1, 1, 1)
            and xp.dtype in (np.float32, np.float64, np.int64))


def batch_minor(N, line, itemsize):
    """Whether to interleave the images: when an output line (one plane on the padded-
    width grid) is shorter than a register tile, the tiles cannot run on it and the
    passes' setup dominates; the transposes cost less than that."""
    return N > 1 and line < tile_width(itemsize)


SEG_BYTES = 8192     # bytes of one accumulator row (a task holds four)
TAP_CHUNK = 64       # taps per sweep of the register tiles along a segment


def _phase_split(xp, sh, sw):
    """(N, C, D, H, W) -> (N, C*sh*sw, D, ceil(H/sh), ceil(W/sw)): plane (c*sh + ph)*sw + pw
    holds xp[n, c, :, ph::sh, pw::sw] (zero where a phase is one row or column short)."""
    N, C, Dp, Hp, Wp = xp.shape
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)
    xq = workspace("phases", (N, C, sh, sw, Dp, Hq, Wq), xp.dtype)
    if Hp % sh:
        xq[:, :, :, :, :, Hq - 1] = 0
    if Wp % sw:
        xq[..., Wq - 1] = 0
    for ph in range(sh):
        for pw in range(sw):
            src = xp[:, :, :, ph::sh, pw::sw]
            xq[:, :, ph, pw, :, :src.shape[3], :src.shape[4]] = src
    return xq.reshape(N, C * sh * sw, Dp, Hq, Wq)


def _pack(w, groups, Dp, HWp, Wp, dd, dh, dw, sh, sw, nm=1):
    """The weight as a tap list: tap t = (c, kd, kh, kw) reads the image at offset off[t]
    (from the first plane of its group, od = oh = ow = 0); wp[g, ob, t, j] is its weight
    for output channel g*Og + 4*ob + j (zero past the group's last channel). With
    stride (sh, sw) > 1 the planes are phases (see _phase_split): the tap's row offset
    kh*dh is row kh*dh // sh of phase kh*dh % sh (columns alike). Batch-minor images
    (nm > 1, see _direct_fwd) put nm elements between neighbouring columns."""
    O, Cg, KD, KH, KW = w.shape
    Og = O // groups
    nob = -(-Og // 4)
    T = Cg * KD * KH * KW
    wp = np.zeros((groups, nob * 4, T), dtype=w.dtype)
    wp[:, :Og] = w.reshape(groups, Og, T)
    wp = np.ascontiguousarray(wp.reshape(groups, nob, 4, T).transpose(0, 1, 3, 2))
    return _offsets(Cg, KD, KH, KW, Dp, HWp, Wp, dd, dh, dw, sh, sw, nm), wp


@functools.lru_cache(maxsize=256)
def _offsets(Cg, KD, KH, KW, Dp, HWp, Wp, dd, dh, dw, sh, sw, nm):
    c = np.arange(Cg).reshape(-1, 1, 1, 1)
    kd = np.arange(KD).reshape(1, -1, 1, 1) * dd
    kh = np.arange(KH).reshape(1, 1, -1, 1) * dh
    kw = np.arange(KW).reshape(1, 1, 1, -1) * dw
    plane = (c * sh + kh % sh) * sw + kw % sw
    off = ((plane * Dp + kd) * HWp + (kh // sh) * Wp + kw // sw * nm).astype(np.int64).ravel()
    off.flags.writeable = False
    return off


def _finite(a):
    # NaN/inf-free: NumPy's max and min propagate NaN (SIMD, no temporary array)
    return bool(np.isfinite(a.max()) and np.isfinite(a.min()))


def direct_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Gradient of the forward with respect to ``w`` (bias excluded)."""
    N, O, OD, OH, OW = go.shape
    Wp = xp.shape[4]
    if stride[1] == 1 and stride[2] == 1 and (OW == Wp or _finite(xp)):
        # one line per plane on the padded-width grid (its wrap-around columns multiply
        # zeros of grad_out with inputs no tap reads: only for finite inputs, where
        # those products are 0 and not inf * 0 = NaN)
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
