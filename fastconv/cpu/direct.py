"""Direct convolution kernels: the definition, blocked for SIMD registers.

Forward parallelises over (image, group, segment of an output plane, block of 4 output
channels): every task owns distinct outputs, so threads never write the same memory.
A whole output plane is one line read on the padded-width grid, contiguous in the
input; a strided convolution first splits its input into phases (polyphase), so that it
too reads at unit stride. The weight becomes a list of taps (channel, depth, row,
column), each an offset into the image. Along the line, register tiles (cpu/_simd.py)
hold 4 output channels x 6 vectors (AVX-512; 3 on shorter stretches and on AVX2) while
they run over the taps; a single output channel, or a line shorter than a tile, takes
passes of eight taps over its accumulators instead. Images whose planes are shorter
than a tile are interleaved (image index innermost, "batch-minor"), so that one line
covers the whole batch.

Small planes with a batch of images take cpu/minor.py instead (images in the vector
lanes, one output position per register tile, only the taps that reach data: no
wrap-around columns, no zero border in the input gradient), where ``minor_pays`` /
``minor_wgrad_pays`` count fewer multiply-adds for it; the planner's cost features ask
the same functions.

The weight gradient reads the same lines: dW[o, tap] is the dot product of grad_out's
line of channel o (on the padded-width grid, zero in the wrap-around columns) with the
input's line shifted by the tap's offset. Register tiles of output channels x taps
(4 x 6 or 5 x 5 vector accumulators on AVX-512) run along the lines; lanes and images
are summed at the end (see _direct_bwd_weight).
"""
import functools
import math
from typing import NamedTuple

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ._common import (ALIGN_BYTES, JIT, U, any_layout, n_tasks_target, pack_weight,
                      serial_if_small, workspace)
from ._simd import (GRAD_ALT_ROWS, GRAD_ALT_TAPS, GRAD_ROWS, GRAD_TAPS, HOST_AVX512,
                    LONG_TILE_BYTES, TILE_BYTES, VECTOR_BYTES, grad_tile_cost, grad_tile_of,
                    tile4, tile4_add, tile4_long, tile4_long_add, tile_width, vec_copy,
                    vector_width)
from . import depthwise, minor
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
        # stay in L1 while its tiles run along the segment): long tiles (tile4_long) while
        # they fit, then short ones (tile4); a last partial tile is computed over all taps
        # at S - step, overlapping its neighbour (whose outputs it recomputes and
        # overwrites)
        lstep = LONG_TILE_BYTES // acc.itemsize
        step = TILE_BYTES // acc.itemsize
        P = S - S % lstep if S >= lstep else 0
        Q = P + (S - P) // step * step
        for c0 in range(0, T, TAP_CHUNK):
            tc = min(TAP_CHUNK, T - c0)
            oc = off[c0:]
            wc = wg[c0:]
            for p in range(0, P, lstep):
                if c0 == 0:
                    tile4_long(acc, p, xi, base, oc, wc, tc)
                else:
                    tile4_long_add(acc, p, xi, base, oc, wc, tc)
            for p in range(P, Q, step):
                if c0 == 0:
                    tile4(acc, p, xi, base, oc, wc, tc)
                else:
                    tile4_add(acc, p, xi, base, oc, wc, tc)
        if Q < S:
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


@njit(inline="always", **JIT)
def _fill_lines(buf, d0, tmp, go, n, o0, nr, od, s0, segl, Wq, R):
    # buf[d0 + (sv*R + j)*V + i] = grad_out of channel o0 + j at line position
    # s0 + sv*V + i, for sv*V + i < segl: the R lines of a channel block on the
    # padded-width grid of width Wq (position oh*Wq + ow holds go[n, o0 + j, od, oh, ow];
    # the wrap-around columns, the positions past the last row and rows j >= nr zero),
    # interleaved vector by vector. Each line is laid out in tmp first, whole rows at a
    # time, then copied into place a vector at a time.
    V = VECTOR_BYTES // buf.itemsize
    OH, OW = go.shape[3], go.shape[4]
    for j in range(R):
        if j < nr:
            src = go[n, o0 + j, od]
            oh = s0 // Wq
            q = 0                               # tmp[:q] laid out
            while q < segl:
                b = oh * Wq - s0                # tmp index of column 0 (maybe negative)
                e = min(b + Wq, segl)           # of the row's end
                if oh < OH:
                    row = src[oh]
                    c = min(b + OW, segl)       # of the row's last column + 1
                    i = q
                    while i + V <= c:
                        vec_copy(tmp, i, row, i - b)
                        i += V
                    for i in range(i, c):
                        tmp[U(i)] = row[U(i - b)]
                    q = max(q, c)
                for i in range(q, e):           # wrap-around columns (or past the last row)
                    tmp[U(i)] = 0
                q = e
                oh += 1
        else:
            tmp[:segl] = 0
        for sv in range(segl // V):
            vec_copy(buf, d0 + (sv * R + j) * V, tmp, sv * V)


@njit(parallel=True, **JIT)
def _direct_bwd_weight(part, go, xf, off, omax, xs_n, xs_g, xs_od, Wq, Lp, alt, rb, nchunk,
                       chunk, seg, scratch, gbuf, tbuf):
    # part: (nsplit, G, nob*R, ntb*TB) the gradient's partial sums over the
    #     images of split s (rows: output channels of group g; columns: the tap list, see
    #     _pack); rows and taps past the real ones are padding the caller drops
    # go: grad_out (N, O, OD, OH, OW), read as lines on the padded-width grid of width Wq
    #     (L = (OH - 1)*Wq + OW positions, Lp: L rounded up to whole vectors)
    # xf: the padded input (or its phases) flat, not padded at its end; image n, group g,
    #     output depth od start at n*xs_n + g*xs_g + od*xs_od, tap t at off[t] from there;
    #     omax[b]: the largest offset of tap block b
    # Tiles: R x TB = GRAD_ROWS x GRAD_TAPS, or GRAD_ALT_ROWS x GRAD_ALT_TAPS when alt.
    # Tasks: (split, group, rb blocks of R channels, chunk of `chunk` tap blocks).
    # Per segment of `seg` line positions a task lays its channels' grad_out out in
    # gbuf[thread] (aligned, L1-sized: see _fill_lines), then runs register tiles
    # (cpu/_simd.grad_tile) of R x TB vector accumulators along it for each
    # tap block of its chunk and each of its channel blocks (which reuse the tap block's
    # input rows from L1). Lines shorter than a segment go seg // Lp images at a time
    # (one tile runs over all of them). The last vectors of a line read past position
    # L - 1 (where grad_out is zero); where that would read past xf's end (the last
    # image's last planes) those positions take scalar code up to L instead.
    S, G, Rp, Tp = part.shape
    N, O, OD, OH, OW = go.shape
    Og = O // G
    L = (OH - 1) * Wq + OW
    V = VECTOR_BYTES // part.itemsize
    R = GRAD_ALT_ROWS if alt else GRAD_ROWS
    TB = GRAD_ALT_TAPS if alt else GRAD_TAPS
    nob = Rp // R
    nobg = (nob + rb - 1) // rb
    ntb = Tp // TB
    RT = R * TB
    K = RT * V                                  # accumulators of one tap block
    xsize = xf.shape[0]
    ng = max(1, seg // Lp)                      # images per tile
    for task in prange(S * G * nobg * nchunk):
        ch = task % nchunk                  # chunks innermost: consecutive tasks share
        r = task // nchunk                  # their grad_out rows while they are cached
        obg = r % nobg
        r = r // nobg
        g = r % G
        sp = r // G
        b0 = ch * chunk
        nt = min(chunk, ntb - b0)
        nrb = min(rb, nob - obg * rb)
        tid = get_thread_id()
        acc = scratch[tid]
        buf = gbuf[tid]
        tmp = tbuf[tid]
        acc[:nt * rb * K] = 0
        n1 = (sp + 1) * N // S
        for od in range(OD):
            n = sp * N // S
            while n < n1:
                ni = min(ng, n1 - n)
                xb = n * xs_n + g * xs_g + od * xs_od
                for s0 in range(0, Lp, seg):
                    segl = min(seg, Lp - s0)
                    nv = segl // V
                    gi = segl * R                   # between images in buf
                    for c in range(nrb):            # channel block c at c*ni*gi
                        ob = obg * rb + c
                        o0 = g * Og + ob * R
                        nr = min(R, Og - ob * R)
                        for m in range(ni):
                            _fill_lines(buf, (c * ni + m) * gi, tmp, go, n + m, o0, nr, od,
                                        s0, segl, Wq, R)
                    for b in range(nt):
                        t0 = (b0 + b) * TB
                        xl = xb + (ni - 1) * xs_n + s0  # the last image's reads
                        safe = (xsize - xl - omax[b0 + b]) // V
                        for c in range(nrb):
                            a0 = (b * rb + c) * K
                            g0 = c * ni * gi
                            if safe >= nv:
                                grad_tile_of(alt, acc, a0, buf, g0, xf, xb + s0, off,
                                             t0, nv, ni, gi, xs_n)
                                continue
                            grad_tile_of(alt, acc, a0, buf, g0, xf, xb + s0, off, t0,
                                         nv, ni - 1, gi, xs_n)
                            sf = max(safe, 0)
                            gl0 = g0 + (ni - 1) * gi
                            grad_tile_of(alt, acc, a0, buf, gl0, xf, xl, off, t0, sf, 1, 0, 0)
                            for k in range(RT):     # the rest up to L, one lane each
                                xo = xl + off[t0 + k % TB]
                                j = k // TB
                                a = acc[a0 + k * V]
                                for q in range(sf * V, min(nv * V, L - s0)):
                                    a += buf[gl0 + ((q // V) * R + j) * V + q % V] * xf[xo + q]
                                acc[a0 + k * V] = a
                n += ni
        for b in range(nt):
            for c in range(nrb):
                for k in range(RT):
                    a0 = (b * rb + c) * K + k * V
                    part[sp, g, (obg * rb + c) * R + k // TB,
                         (b0 + b) * TB + k % TB] = acc[a0:a0 + V].sum()


@njit(parallel=True, **JIT)
def embed(u, src, d0, h0, w0):
    """u (N, C, D, H, W) = zeros with src (N, C, sD, sH, sW) at [d0:, h0:, w0:]: one
    parallel pass, each row written once (the padded grad_out of the input gradient)."""
    N, C, D, H, W = u.shape
    SD, SH, SW = src.shape[2], src.shape[3], src.shape[4]
    for t in prange(N * C):
        n = t // C
        c = t % C
        # element loops, not slice assignments: those made views per row, which for
        # small planes cost more than the copy (padding N=8, C=256, 7x7 float32 planes by
        # 1: 0.125 ms with slices, 0.083-0.096 with loops)
        for d in range(D):
            for h in range(H):
                row = u[n, c, d, h]
                if d < d0 or d >= d0 + SD or h < h0 or h >= h0 + SH:
                    for j in range(U(W)):
                        row[j] = 0
                    continue
                s = src[n, c, d - d0, h - h0]
                for j in range(U(w0)):
                    row[j] = 0
                for j in range(U(SW)):
                    row[w0 + j] = s[j]
                for j in range(U(w0 + SW), U(W)):
                    row[j] = 0


def padded_copy(x, origin, padded, name="pad_x"):
    """A zero array of spatial size ``padded`` holding ``x`` (N, C, D, H, W) at ``origin``,
    in this thread's workspace ``name`` (valid until its next use)."""
    u = workspace(name, x.shape[:2] + tuple(padded), x.dtype)
    embed(u, x, *origin)
    return u


def direct_fwd_window(x, w, bias, stride, dilation, groups, out, origin, padded):
    """The forward of a zero input of spatial size ``padded`` holding ``x`` at ``origin``
    (engine.Kernels.forward_window): the channel-lane kernel reads the padding in place;
    the others run on a padded copy, as the forward always did (the batch-minor kernel
    given the window would skip the taps that read the padding, where a NaN or infinite
    weight must meet its zeros)."""
    if runs_lanes(groups, w.shape[1], w.shape[0] // groups, w.shape[2:], out.shape[2:],
                  tuple(stride), tuple(dilation), tuple(padded), out.dtype):
        return direct_fwd(x, w, bias, stride, dilation, groups, out, origin, padded)
    return direct_fwd(padded_copy(x, origin, padded), w, bias, stride, dilation, groups, out)


def direct_fwd(xp, w, bias, stride, dilation, groups, out, origin=None, padded=None):
    """out[n, o] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*stride + k*dilation];
    with ``origin`` and ``padded``: xp is the nonzero part, at ``origin``, of a zero
    input of spatial size ``padded`` (the grad_out of an input gradient)."""
    N, O, OD, OH, OW = out.shape
    kh, kw = w.shape[3], w.shape[4]
    if origin is None:
        origin, padded = (0, 0, 0), xp.shape[2:]
    window = tuple(zip(origin, xp.shape[2:]))
    lanes = runs_lanes(groups, w.shape[1], O // groups, w.shape[2:], out.shape[2:],
                       tuple(stride), tuple(dilation), tuple(padded), out.dtype)
    if not lanes and minor_pays(N, groups, w.shape[1], O // groups, out.shape[2:], w.shape[2:],
                  tuple(stride), tuple(dilation), tuple(padded), window, out.dtype):
        return minor.minor_fwd(xp, w, bias, stride, dilation, groups, out, origin)
    if lanes:                 # (reads the zero padding around xp in place)
        depthwise.depthwise(out[:, :, 0], xp[:, :, 0], w[:, 0, 0], bias, tuple(stride[1:]),
                            tuple(dilation[1:]), tuple(origin[1:]), tuple(padded[1:]))
        return out
    if tuple(padded) != xp.shape[2:]:
        xp = padded_copy(xp, origin, padded, "direct_u")
    if runs_stencil(groups, w.shape[1], O // groups, w.shape[2:], out.shape[2:],
                    tuple(stride), tuple(dilation), xp.shape[2:], xp.dtype):
        stencil2d(out[:, :, 0], xp[:, :, 0, :OH + kh - 1, :OW + kw - 1], w[:, 0, 0], bias)
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


@functools.lru_cache(maxsize=4096)      # (asked on every call, by the window wrappers too)
def runs_lanes(G, Cg, Og, kernel, out, stride, dilation, padded, dtype):
    """Whether direct_fwd (and the direct gradients) run the channel-lane depthwise
    kernels (cpu/depthwise.py; the cost model asks this too): each output channel reads
    one input channel (depthwise) of 2-D float planes (depth 1) whose task buffer fits
    (depthwise.fits) and holds the valid correlation's extent (the input gradient's
    phases pass narrower rows, whose windows wrap into the next row: those run the
    other kernels). At any stride and dilation, and at any width that fits: full calls on
    the AVX2 host (Zen 3, N=2-32, C=16-256, 3x3, float32/64, 40x40 to 224x224, the
    stencil with the padded copy it needs against the lanes reading the padding in
    place) took 0.53-0.91x the forward's time, 0.49-0.70x the input gradient's and
    0.33-0.62x the weight gradient's; planes whose buffer does not fit keep the stencil
    (unit stride) or the line kernels."""
    dtype = np.dtype(dtype)
    return (Cg == 1 and Og == 1 and padded[0] == kernel[0] == 1
            and dtype in (np.float32, np.float64)
            and depthwise.fits(padded[1:], dtype.itemsize)
            and depthwise.covers(out[1:], kernel[1:], stride[1:], dilation[1:], padded[1:]))


def runs_stencil(G, Cg, Og, kernel, out, stride, dilation, padded, dtype):
    """Whether direct_fwd runs the one-channel stencil (cpu/stencil.py; the cost model
    asks this too): each output channel reads one input channel (depthwise, one signal)
    of 2-D planes (depth 1) at unit stride and dilation, and the padded input covers the
    valid correlation's extent (the input gradient's phases pass other extents: the
    stencil reads exactly that extent, the line kernels any other)."""
    return (Cg == 1 and Og == 1 and padded[0] == kernel[0] == 1
            and stride == (1, 1, 1) and dilation == (1, 1, 1)
            and np.dtype(dtype) in (np.float32, np.float64, np.int64)
            and padded[1] >= out[1] + kernel[1] - 1 and padded[2] >= out[2] + kernel[2] - 1)


@functools.lru_cache(maxsize=4096)      # (a shape's answer: asked on every call)
def minor_pays(N, G, Cg, Og, out, kernel, stride, dilation, padded, window, dtype):
    """Whether the batch-minor kernels (cpu/minor.py: images in the lanes, each position
    summing only the taps that read inside ``window``) beat the line kernels here: their
    multiply-adds (lanes rounded up to whole vectors, at MINOR_MAC_COST line tile
    multiply-adds each: shorter runs, the input's transpose; and MINOR_OUT_COST per
    output transposed back) against the lines' (whole tiles over the padded-width grid,
    every tap)."""
    return minor_macs(N, G, Cg, Og, out, kernel, stride, dilation, padded, window, dtype) \
        < line_macs(N, G, Cg, Og, out, kernel, stride, padded, dtype.itemsize)


@functools.lru_cache(maxsize=4096)
def minor_macs(N, G, Cg, Og, out, kernel, stride, dilation, padded, window, dtype):
    """The batch-minor forward's multiply-adds in line-tile units (inf where it does not
    run: dtypes other than float32/float64, a single image)."""
    if dtype not in (np.float32, np.float64) or N < 2:
        return float("inf")
    if window is None:
        window = tuple((0, p) for p in padded)
    taps = minor.valid_taps(*(tuple(int(v) for v in a) for a in (out, kernel, stride, dilation)),
                            tuple((int(a), int(n)) for a, n in window)) * Cg
    R = minor.rows(Og)
    return (MINOR_MAC_COST * minor.lanes(N, dtype.itemsize) * G * -(-Og // R) * R * taps
            + MINOR_OUT_COST * N * G * Og * out[0] * out[1] * out[2])


def line_macs(N, G, Cg, Og, out, kernel, stride, padded, itemsize):
    """The line forward's multiply-adds: whole register tiles along the padded-width grid
    of each plane (of the whole batch when batch-minor), every tap."""
    (od, oh, ow), (kd, kh, kw) = out, kernel
    line = (oh - 1) * -(-padded[2] // stride[2]) + ow
    tw = tile_width(itemsize)
    lines = N * od
    if batch_minor(N, line, itemsize):
        line, lines = line * N, od
    return lines * G * -(-Og // 4) * 4 * -(-line // tw) * tw * Cg * kd * kh * kw


# line-tile multiply-adds per multiply-add of cpu/minor.py's forward tiles: 1.3 on
# AVX-512; on AVX2 (an AMD EPYC, Zen 3: forward A/B over ten small-plane shapes, one
# process) the lanes ran 1.0-1.7x slower than the lines where 1.3 had them 10-18 %
# faster (mnist.conv2 0.73 against 0.57 ms; mnist.conv1's input gradient 2.0 against
# 0.79): their 4 x 3-vector tiles (16 registers) reuse each load less than AVX-512's
# 4 x 4. 1.8 keeps the lanes where they won there (mnist.conv2's input gradient 0.99
# against 1.28 ms)
MINOR_MAC_COST = 1.3 if HOST_AVX512 else 1.8
MINOR_WGRAD_MAC_COST = 1.3   # the same for the weight gradient's tiles (both hosts)
MINOR_OUT_COST = 6.0   # line-tile multiply-adds per output cpu/minor.py transposes back


def grad_alt(Og, T):
    """Whether the weight gradient takes the host's second tile shape: the one whose
    tiles over the channels and taps cost least (_simd.grad_tile_cost; ties: the main
    one), unless GRAD_SHAPE forces one."""
    def cost(R, TB):
        return -(-Og // R) * -(-T // TB) * grad_tile_cost(R, TB)
    alt = cost(GRAD_ALT_ROWS, GRAD_ALT_TAPS) < cost(GRAD_ROWS, GRAD_TAPS)
    return {"main": False, "alt": True}.get(GRAD_SHAPE, alt)


def grad_shape(alt):
    """(rows, taps) of the weight-gradient tile."""
    return (GRAD_ALT_ROWS, GRAD_ALT_TAPS) if alt else (GRAD_ROWS, GRAD_TAPS)


def minor_wgrad_pays(N, G, Cg, Og, out, kernel, stride, padded, dtype):
    """Whether cpu/minor.py's weight gradient (images in the lanes: every output position
    once, lanes rounded up to whole vectors) beats the line kernel's (lines of whole
    vectors on the padded-width grid of each image)."""
    if dtype not in (np.float32, np.float64) or N < 2:
        return False
    (od, oh, ow) = out
    V = vector_width(dtype.itemsize)
    wq = -(-padded[2] // stride[2])
    line = -(-((oh - 1) * wq + ow) // V) * V
    return MINOR_WGRAD_MAC_COST * minor.lanes(N, dtype.itemsize) * oh * ow < N * line


def batch_minor(N, line, itemsize):
    """Whether to interleave the images: when an output line (one plane on the padded-
    width grid) is shorter than a register tile, the tiles cannot run on it and the
    passes' setup dominates; the transposes cost less than that."""
    return N > 1 and line < tile_width(itemsize)


SEG_BYTES = 8192     # bytes of one accumulator row (a task holds four)
TAP_CHUNK = 64       # taps per sweep of the register tiles along a segment


def _phase_split(xp, sh, sw, out=None):
    """(N, C, D, H, W) -> (N, C*sh*sw, D, ceil(H/sh), ceil(W/sw)): plane (c*sh + ph)*sw + pw
    holds xp[n, c, :, ph::sh, pw::sw] (zero where a phase is one row or column short);
    into ``out`` (C-contiguous) when given."""
    N, C, Dp, Hp, Wp = xp.shape
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)
    xq = (workspace("phases", (N, C, sh, sw, Dp, Hq, Wq), xp.dtype) if out is None
          else out.reshape(N, C, sh, sw, Dp, Hq, Wq))
    with serial_if_small(xq.size):
        any_layout(_split_rows, (xq, xp))
    return xq.reshape(N, C * sh * sw, Dp, Hq, Wq)


@njit(parallel=True, **JIT)
def _split_rows(xq, xp):
    # xq[n, c, ph, pw, d, i, j] = xp[n, c, d, i*sh + ph, j*sw + pw], zero past xp's edge:
    # in parallel over the phases' rows (numpy's strided copies of the phases ran on one
    # core: 1.35 ms of the stem's 16 ms weight gradient)
    N, C, sh, sw, D, Hq, Wq = xq.shape
    Hp, Wp = xp.shape[3], xp.shape[4]
    for t in prange(N * C * D * Hq):
        i = t % Hq
        r = t // Hq
        d = r % D
        r = r // D
        c = r % C
        n = r // C
        for ph in range(sh):
            h = i * sh + ph
            for pw in range(sw):
                dst = xq[n, c, ph, pw, d, i]
                if h >= Hp:
                    dst[:] = 0
                    continue
                src = xp[n, c, d, h]
                nj = (Wp - pw + sw - 1) // sw          # the columns of phase pw
                for j in range(nj):
                    dst[j] = src[j * sw + pw]
                for j in range(nj, Wq):
                    dst[j] = 0


def _pack(w, groups, Dp, HWp, Wp, dd, dh, dw, sh, sw, nm=1):
    """The weight as a tap list: tap t = (c, kd, kh, kw) reads the image at offset off[t]
    (from the first plane of its group, od = oh = ow = 0); wp[g, ob, t, j] is its weight
    for output channel g*Og + 4*ob + j (zero past the group's last channel). With
    stride (sh, sw) > 1 the planes are phases (see _phase_split): the tap's row offset
    kh*dh is row kh*dh // sh of phase kh*dh % sh (columns alike). Batch-minor images
    (nm > 1, see _direct_fwd) put nm elements between neighbouring columns."""
    O, Cg, KD, KH, KW = w.shape
    wp = pack_weight(w, groups, 4)
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


def direct_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Gradient of the forward with respect to ``w`` (bias excluded):
    gw[o, c, k] = sum_{n, p} go[n, o, p] * xp[n, g*Cg + c, p*stride + k*dilation]."""
    N, O, OD, OH, OW = go.shape
    C, Dp = xp.shape[1], xp.shape[2]
    KD, KH, KW = kernel
    G = groups
    Cg, Og = C // G, O // G
    T = Cg * KD * KH * KW
    # the tile shape whose tiles over the channels and taps cost least (ties: the main one)
    alt = grad_alt(Og, T)
    R, TB = grad_shape(alt)
    if minor_wgrad_pays(N, G, Cg, Og, go.shape[2:], tuple(kernel), tuple(stride), xp.shape[2:],
                        xp.dtype):
        Np = minor.lanes(N, xp.dtype.itemsize)
        Hp, Wp = xp.shape[3], xp.shape[4]
        off = _tap_blocks(Cg, KD, KH, KW, Dp, Hp * Wp * Np, Wp * Np, *dilation, 1, 1, TB, Np)[0]
        return minor.minor_bwd_weight(xp, go, kernel, stride, groups, off, alt, R, TB)
    sd, sh, sw = stride
    nth = numba.get_num_threads()
    p = _line_wgrad_plan(xp.shape, go.shape, tuple(kernel), tuple(stride), tuple(dilation), G,
                         xp.dtype, alt, nth, n_tasks_target(), GRAD_ROW_BLOCKS, GRAD_SEG_BYTES,
                         GRAD_CHUNK)
    if sh > 1 or sw > 1:
        xf = _phase_split(xp, sh, sw).reshape(-1)
    else:
        xf = np.ascontiguousarray(xp).reshape(-1)
    part = np.empty(p.part, dtype=xp.dtype)
    scratch = _aligned(p.scratch, xp.dtype, "wgrad_acc")
    gbuf = _aligned(p.gbuf, xp.dtype, "wgrad_lines")
    tbuf = workspace("wgrad_line", p.tbuf, xp.dtype)
    with serial_if_small(p.work):
        _direct_bwd_weight(part, np.ascontiguousarray(go), xf, p.off, p.omax, *p.args, alt,
                           p.rb, p.nchunk, p.chunk, p.seg, scratch, gbuf, tbuf)
    gw = part.sum(axis=0) if p.part[0] > 1 else part[0]
    return np.ascontiguousarray(gw[:, :Og, :T]).reshape((O, Cg) + tuple(kernel))


class _WgradPlan(NamedTuple):
    off: np.ndarray          # the tap list (_tap_blocks) and each block's largest offset
    omax: np.ndarray
    args: tuple              # the kernel's strides: xs_n, xs_g, xs_od, Wq, Lp
    rb: int
    nchunk: int
    chunk: int
    seg: int
    part: tuple              # shapes: the partial sums, the scratch buffers
    scratch: tuple
    gbuf: tuple
    tbuf: tuple
    work: int                # multiply-adds (for serial_if_small)


@functools.lru_cache(maxsize=256)
def _line_wgrad_plan(xshape, gshape, kernel, stride, dilation, G, dtype, alt, nth, target,
                     row_blocks, seg_bytes, max_chunk):
    """The line weight gradient's decomposition (every shape-only quantity of a call of
    direct_bwd_weight; the module's tuning constants are arguments, so that changing
    them takes effect)."""
    N, O, OD, OH, OW = gshape
    C, Dp = xshape[1], xshape[2]
    sd, sh, sw = stride
    KD, KH, KW = kernel
    Cg, Og = C // G, O // G
    isz = dtype.itemsize
    V = vector_width(isz)
    # the input's phases (strides > 1, as the forward) or the input itself, flat
    Hq, Wq = -(-xshape[3] // sh), -(-xshape[4] // sw)
    HWq = Hq * Wq
    L = (OH - 1) * Wq + OW
    Lp = -(-L // V) * V
    T = Cg * KD * KH * KW
    R, TB = grad_shape(alt)
    ntb = -(-T // TB)
    off, omax = _tap_blocks(Cg, KD, KH, KW, Dp, HWq, Wq, *dilation, sh, sw, TB)
    nob = -(-Og // R)
    Rp = nob * R
    # tasks: row_blocks channel blocks (sharing the input rows) x chunks of at most
    # max_chunk tap blocks; when the cores need more tasks the images split into partial
    # sums first (each chunk lays its grad_out rows out again, a split only adds a small
    # partial sum), then the chunks get smaller
    # (lines shorter than a segment read little input per tile: one block, more images)
    rb = max(1, min(row_blocks if Lp * isz >= seg_bytes else 1, nob))
    blocks = G * -(-nob // rb)
    nchunk = -(-ntb // max_chunk)
    nsplit = min(N, max(1, -(-target // (blocks * nchunk))))
    nchunk = min(ntb, max(nchunk, -(-target // (blocks * nsplit))))
    chunk = -(-ntb // nchunk)
    nchunk = -(-ntb // chunk)
    seg = max(V, seg_bytes // rb // isz // V * V)  # lines shorter: seg // Lp images
    return _WgradPlan(off, omax, (C * sh * sw * Dp * HWq, Cg * sh * sw * Dp * HWq, sd * HWq,
                                  Wq, Lp),
                      rb, nchunk, chunk, seg, (nsplit, G, Rp, ntb * TB),
                      (nth, chunk * rb * R * TB * V), (nth, rb * seg * R), (nth, seg),
                      N * O * OD * L * T)


@functools.lru_cache(maxsize=256)
def _tap_blocks(Cg, KD, KH, KW, Dp, HWq, Wq, dd, dh, dw, sh, sw, TB, nm=1):
    """The weight gradient's tap list (see _offsets; nm: images innermost, as in
    cpu/minor.py) padded to whole blocks of TB taps (padding taps read tap 0; their sums
    are dropped) and each block's largest offset."""
    T = Cg * KD * KH * KW
    ntb = -(-T // TB)
    off = np.zeros(ntb * TB, dtype=np.int64)
    off[:T] = _offsets(Cg, KD, KH, KW, Dp, HWq, Wq, dd, dh, dw, sh, sw, nm)
    omax = off.reshape(ntb, TB).max(axis=1)
    off.flags.writeable = omax.flags.writeable = False
    return off, omax


def _aligned(shape, dtype, key=None):
    """An uninitialised C-contiguous array starting on a VECTOR_BYTES boundary (the
    thread's workspace ``key`` when given, see _common.workspace)."""
    if key is not None and VECTOR_BYTES <= ALIGN_BYTES:
        buf = workspace(key, shape, dtype)       # (aligned unless beyond the cap)
        if buf.ctypes.data % VECTOR_BYTES == 0:
            return buf
    dtype = np.dtype(dtype)
    n = math.prod(int(s) for s in shape)
    extra = VECTOR_BYTES // dtype.itemsize
    buf = np.empty(n + extra, dtype) if key is None else workspace(key, (n + extra,), dtype)
    k = (-buf.ctypes.data % VECTOR_BYTES) // dtype.itemsize
    return buf[k:k + n].reshape(shape)


GRAD_CHUNK = 128        # most tap blocks per weight-gradient task (each task lays its
                        # grad_out rows out once per segment for all of its tap blocks)
GRAD_SEG_BYTES = 8192   # bytes of one grad_out row segment, divided among the row blocks
                        # (GRAD_ROWS x GRAD_ROW_BLOCKS rows stay in L1)
GRAD_ROW_BLOCKS = 2     # channel blocks per task
GRAD_SHAPE = "auto"     # the weight-gradient tile: "auto" (grad_alt), "main" or "alt"
