"""Batch-minor direct kernels: small planes with the images in the vector lanes.

A small output plane (MNIST's 8x8 and 24x24, any plane of a few hundred positions) gives
the line kernels of cpu/direct.py little to run along: rows shorter than a vector, the
wrap-around columns of the padded-width grid computed and dropped, and, for the input
gradient, grad_out's zero border read by every tap. Here the images are innermost
instead: the input is copied once to (C, D, H, W, Np), Np = the batch rounded up to whole
vectors (zero lanes past N). Then every output position is a small matrix product:
4 output channels x Np images, summed over the taps (channel, depth, row, column) that
reach it, each tap a run of Np contiguous inputs. Register tiles (cpu/_simd.py) hold the
4 x Np accumulators (in chunks of at most MAX_VECTORS vectors) while the taps run, so no
lane is wasted whatever the plane's width, and each position sums exactly the taps whose
input lies in the data window (``window``: the region outside which the input is known to
be zero, such as the padded grad_out of the input gradient), in a few contiguous runs:
taps are ordered (depth, row, column, channel).

The weight gradient reads the same layout: per output row, grad_out's vectors of 4 or 5
channels (laid out interleaved by the copy that transposes them) against each tap's
input vectors, in the weight-gradient tiles of cpu/_simd.py; the lanes hold partial sums
over the images.
"""
import functools
import math

import numba
import numpy as np
from numba import get_thread_id, njit, prange
from numba.extending import intrinsic

from ._common import JIT, kept, n_tasks_target, pack_weight, serial_if_small, workspace
from ._simd import (GRAD_ALT_ROWS, GRAD_ALT_TAPS, GRAD_ROWS, GRAD_TAPS, HOST_AVX512,
                    VECTOR_BYTES, _tile_intrinsic, grad_tile_of)
from ._wino_ir import transpose_block

_transpose = transpose_block()

#: vectors per channel in one forward tile of 4 or 5 channels: 4 (5) x 4 accumulators + 4
#: inputs + 1 broadcast of AVX-512's 32 registers (a batch of 64 float32 images is one
#: chunk; more vectors per tile would add compile time for larger batches only);
#: 4 x 3 + 3 + 1 of AVX2's 16 (5 x 2 + 2 + 1)
MAX_VECTORS = {4: 4, 5: 4} if HOST_AVX512 else {4: 3, 5: 2}
_T4 = tuple((intrinsic(_tile_intrinsic(f"mtile4x{v}", False, VECTOR_BYTES, v, 4)),
             intrinsic(_tile_intrinsic(f"mtile4x{v}_add", True, VECTOR_BYTES, v, 4)))
            for v in range(1, 5))
_T5 = tuple((intrinsic(_tile_intrinsic(f"mtile5x{v}", False, VECTOR_BYTES, v, 5)),
             intrinsic(_tile_intrinsic(f"mtile5x{v}_add", True, VECTOR_BYTES, v, 5)))
            for v in range(1, 5))
(_t1, _a1), (_t2, _a2), (_t3, _a3), (_t4, _a4) = _T4
(_u1, _b1), (_u2, _b2), (_u3, _b3), (_u4, _b4) = _T5


@njit(inline="always", **JIT)
def _tile4(nv, add, acc, p0, xr, base, off, wg, T):
    # the forward tile of 4 channels x nv vectors (numba needs each intrinsic named)
    if nv == 4:
        if add:
            _a4(acc, p0, xr, base, off, wg, T)
        else:
            _t4(acc, p0, xr, base, off, wg, T)
    elif nv == 3:
        if add:
            _a3(acc, p0, xr, base, off, wg, T)
        else:
            _t3(acc, p0, xr, base, off, wg, T)
    elif nv == 2:
        if add:
            _a2(acc, p0, xr, base, off, wg, T)
        else:
            _t2(acc, p0, xr, base, off, wg, T)
    else:
        if add:
            _a1(acc, p0, xr, base, off, wg, T)
        else:
            _t1(acc, p0, xr, base, off, wg, T)


@njit(inline="always", **JIT)
def _tile5(nv, add, acc, p0, xr, base, off, wg, T):
    # the forward tile of 5 channels x nv vectors
    if nv == 4:
        if add:
            _b4(acc, p0, xr, base, off, wg, T)
        else:
            _u4(acc, p0, xr, base, off, wg, T)
    elif nv == 3:
        if add:
            _b3(acc, p0, xr, base, off, wg, T)
        else:
            _u3(acc, p0, xr, base, off, wg, T)
    elif nv == 2:
        if add:
            _b2(acc, p0, xr, base, off, wg, T)
        else:
            _u2(acc, p0, xr, base, off, wg, T)
    else:
        if add:
            _b1(acc, p0, xr, base, off, wg, T)
        else:
            _u1(acc, p0, xr, base, off, wg, T)


@njit(inline="always", **JIT)
def _tap_range(p, K, d, lo, hi):
    # the taps k < K with lo <= p + k*d < hi: [k0, k1)
    k0 = 0 if p >= lo else (lo - p + d - 1) // d
    k1 = 0 if hi <= p else min(K, (hi - p + d - 1) // d)
    return k0, max(k0, k1)


@njit(inline="always", **JIT)
def _run(R, nvs, add, acc, p0, xm, base, off, wg, t0, t1, V):
    # the taps [t0, t1) on every lane chunk of the position at acc[:, p0:]
    q = p0
    for nv in nvs:
        if R == 5:
            _tile5(nv, add, acc, q, xm, base, off[t0:], wg[t0:], t1 - t0)
        else:
            _tile4(nv, add, acc, q, xm, base, off[t0:], wg[t0:], t1 - t0)
        q += nv * V


@njit(parallel=True, **JIT)
def _minor_fwd(out, shape, xm, wp, off, bias, dims, scratch, nvs, CC, merge):
    # out: flat, of ``shape`` (N, O, OD, OH, OW); xm: the input's nonzero window
    # (C, Dx, Hx, Wx, Np) flat, at (ad, ah, aw) of the zero-padded input; wp[g, ob, t, j],
    # off[t]: the weight as taps in channel chunks of CC (see _pack); dims = (Dx, Hx, Wx,
    # Np, KD, KH, KW, sd, sh, sw, dd, dh, dw, groups, ad, ah, aw); nvs: the vector counts
    # of the lane chunks of one position; merge: whole rows of taps of one depth run at
    # once (a position whose columns all read inside the window; CC = Cg). Tasks:
    # (group, block of R output channels, output row).
    N, O, OD, OH, OW = shape
    Dx, Hx, Wx, Np, KD, KH, KW, sd, sh, sw, dd, dh, dw, G, ad, ah, aw = dims
    Og = O // G
    R = wp.shape[3]
    nob = wp.shape[1]
    Cg = wp.shape[2] // (KD * KH * KW)
    V = VECTOR_BYTES // out.itemsize
    plane = Dx * Hx * Wx * Np
    for task in prange(G * nob * OD * OH):
        ob = task % nob
        r = task // nob
        oh = r % OH
        r = r // OH
        od = r % OD
        g = r // OD
        o0 = g * Og + ob * R
        nb = min(R, (g + 1) * Og - o0)
        acc = scratch[get_thread_id()]
        wg = wp[g, ob]
        # input coordinates relative to the window: the taps [k0, k1) read inside it
        pd = od * sd - ad
        ph = oh * sh - ah
        kd0, kd1 = _tap_range(pd, KD, dd, 0, Dx)
        kh0, kh1 = _tap_range(ph, KH, dh, 0, Hx)
        rowb = g * Cg * plane + (pd * Hx + ph) * Wx * Np
        if kd0 >= kd1 or kh0 >= kh1:
            acc[:, :OW * Np] = 0
        for kdh in range((kd1 - kd0) * (kh1 - kh0)):
            kd = kd0 + kdh // (kh1 - kh0)
            kh = kh0 + kdh % (kh1 - kh0)
            for c0 in range(0, Cg, CC):
                cc = min(CC, Cg - c0)
                tb = ((kd * KH + kh) * Cg + c0) * KW
                for ow in range(OW):
                    pw = ow * sw - aw
                    kw0, kw1 = _tap_range(pw, KW, dw, 0, Wx)
                    p0 = ow * Np
                    if kw0 >= kw1:
                        if kdh == 0 and c0 == 0:
                            acc[:, p0:p0 + Np] = 0
                        continue
                    base = rowb + (pw - ow) * Np        # (a tile reads from base + p0)
                    t0 = tb + kw0 * cc
                    t1 = tb + kw1 * cc
                    if merge and kw1 - kw0 == KW:       # the kd's rows are one run
                        if kh > kh0:
                            continue
                        t1 = ((kd * KH + kh1) * Cg) * KW
                    _run(R, nvs, kdh > 0 or c0 > 0, acc, p0, xm, base, off, wg, t0, t1, V)
        # out[n, o0 + j, od, oh, ow] = acc[j, ow*Np + n] + bias: L x L blocks transposed in
        # registers
        P = OD * OH * OW
        for j in range(nb):
            aj = acc[j]
            aj[:OW * Np] += bias[o0 + j]
            d0 = (o0 + j) * P + (od * OH + oh) * OW
            for n0 in range(0, N, V):
                for w0 in range(0, OW, V):
                    _transpose(out, d0 + n0 * O * P + w0, O * P, min(V, N - n0), aj,
                               w0 * Np + n0, Np, N - n0, min(V, OW - w0))


@njit(parallel=True, **JIT)
def _to_minor(xm, xp):
    # xm (C, D, H, W, Np) = xp (N, C, D, H, W) with the images innermost, zero lanes past
    # N: L x L blocks (images x columns) transposed in registers
    N = xp.shape[0]
    C, D, H, W, Np = xm.shape
    L = VECTOR_BYTES // xm.itemsize
    CP = C * D * H * W
    mf = xm.reshape(xm.size)
    xf = xp.reshape(xp.size)
    for t in prange(C * D * H):                 # one (c, d, h) row
        if Np > N:
            for w in range(W):
                mf[(t * W + w) * Np + N:(t * W + w + 1) * Np] = 0
        for n0 in range(0, N, L):
            for w0 in range(0, W, L):
                _transpose(mf, (t * W + w0) * Np + n0, Np, min(L, W - w0), xf,
                           n0 * CP + t * W + w0, CP, W - w0, min(L, N - n0))


def lanes(N, itemsize):
    """Np: the batch rounded up to whole vectors."""
    V = VECTOR_BYTES // itemsize
    return -(-N // V) * V


def rows(Og):
    """Output channels per forward tile: 5 where blocks of 5 pad the group's channels less
    than blocks of 4 or as little (fewer loads per multiply-add), else 4."""
    return 5 if -(-Og // 5) * 5 <= -(-Og // 4) * 4 else 4


def chunks(Np, itemsize, R=4):
    """The vector counts of a position's lane chunks (at most MAX_VECTORS[R] each, as equal
    as they come)."""
    nv = Np * itemsize // VECTOR_BYTES
    k = -(-nv // MAX_VECTORS[R])
    # an array, not a tuple: a tuple's length is part of its type, one compile per count
    return np.array([nv // k + (i < nv % k) for i in range(k)], dtype=np.int64)


#: multiply-adds' worth of one element transposed, for serial_if_small: 2 threads halve
#: a 50k-element transpose already (5 -> 3 us, 64x1x28x28) when the workers are awake
MOVE_COST = 8


def to_minor(xp):
    """xp (N, C, D, H, W) -> (C, D, H, W, Np), images innermost (a thread's workspace, or
    a layer's saved copy: _common.reuse)."""
    def make(fresh):
        N, C, D, H, W = xp.shape
        shape = (C, D, H, W, lanes(N, xp.dtype.itemsize))
        xm = np.empty(shape, xp.dtype) if fresh else workspace("minor_x", shape, xp.dtype)
        with serial_if_small(MOVE_COST * xm.size):
            _to_minor(xm, xp)
        return xm
    return kept("minor_x", xp, make)


def minor_fwd(x, w, bias, stride, dilation, groups, out, origin=(0, 0, 0)):
    """The direct forward (see cpu/direct.direct_fwd) with the images in the lanes, of the
    input that is ``x`` at ``origin`` (per axis) and zero elsewhere."""
    N, O, OD, OH, OW = out.shape
    Dx, Hx, Wx = x.shape[2:]
    isz = out.dtype.itemsize
    xm = to_minor(np.ascontiguousarray(x))
    Np = xm.shape[-1]
    CC = channel_chunk(w.shape[1], OW, w.shape[4], stride[2], dilation[2], Np, isz)
    cols = (OW - 1) * stride[2] + (w.shape[4] - 1) * dilation[2] + 1
    merge = CC == w.shape[1] and w.shape[1] * w.shape[3] * cols * Np * isz <= 2 * CHUNK_BYTES
    R = rows(O // groups)
    off, wp = _pack(w, groups, Dx, Hx, Wx, Np, *dilation, CC, R)
    dims = np.array((Dx, Hx, Wx, Np) + tuple(w.shape[2:]) + tuple(stride) + tuple(dilation)
                    + (groups,) + tuple(origin), dtype=np.int64)
    scratch = workspace("minor_acc", (numba.get_num_threads(), R, OW * Np), out.dtype)
    res = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    with serial_if_small(out.size * w[0].size):
        _minor_fwd(res.reshape(-1), out.shape, xm.reshape(-1), wp, off, bias, dims, scratch,
                   chunks(Np, isz, R), CC, merge)
    if res is not out:
        out[...] = res
    return out


def _pack(w, groups, Dp, Hp, Wp, Np, dd, dh, dw, CC, R=4):
    """The weight as taps in chunks of CC channels: t = ((kd*KH + kh)*Cg + c0)*KW
    + kw*cc + (c - c0) for the chunk c0 <= c < c0 + cc (cc = min(CC, Cg - c0)), so that
    a chunk's columns are one run; off[t] is the tap's offset in xm from the position's
    first input, wp[g, ob, t, j] its weight for output channel g*Og + R*ob + j (zero past
    the group's last channel)."""
    O, Cg, KD, KH, KW = w.shape
    off, perm = _taps(Cg, KD, KH, KW, Dp, Hp, Wp, Np, dd, dh, dw, CC)
    return off, pack_weight(w, groups, R, perm)


@functools.lru_cache(maxsize=256)
def _taps(Cg, KD, KH, KW, Dp, Hp, Wp, Np, dd, dh, dw, CC):
    """(off, perm): the taps' offsets (see _pack) and their indices in the weight's
    (c, kd, kh, kw) order."""
    order = []
    for kd in range(KD):
        for kh in range(KH):
            for c0 in range(0, Cg, CC):
                for kw in range(KW):
                    for c in range(c0, min(Cg, c0 + CC)):
                        order.append((c, kd, kh, kw))
    t = np.array(order, dtype=np.int64).reshape(-1, 4)
    c, kd, kh, kw = t.T
    off = ((((c * Dp + kd * dd) * Hp + kh * dh) * Wp + kw * dw) * Np).astype(np.int64)
    perm = ((c * KD + kd) * KH + kh) * KW + kw
    off.flags.writeable = perm.flags.writeable = False
    return off, perm


#: bytes of input one channel chunk's tap row may read over an output row (kept in L1)
CHUNK_BYTES = 24576


def channel_chunk(Cg, OW, KW, sw, dw, Np, itemsize):
    """CC: channels per run, so that a chunk's inputs for a row of outputs stay in L1."""
    cols = (OW - 1) * sw + (KW - 1) * dw + 1
    return max(1, min(Cg, CHUNK_BYTES // (cols * Np * itemsize)))


@functools.lru_cache(maxsize=1024)
def valid_taps(out, kernel, stride, dilation, window):
    """Sum over the output positions of the (depth, row, column) taps that read inside
    ``window`` ((start, size) per axis): what the forward sums, per input channel."""
    total = 1
    for o, k, s, d, (a, n) in zip(out, kernel, stride, dilation, window):
        total *= sum(max(0, k1 - k0) for k0, k1 in
                     (_tap_range.py_func(p * s, k, d, a, a + n) for p in range(o)))
    return total



# --- the weight gradient ---------------------------------------------------------------
@njit(parallel=True, **JIT)
def _go_minor(gm, go, N, O, R):
    # gm[g, ob, od, oh, ow, nv, j, l] = go[nv*V + l, g*Og + ob*R + j, od, oh, ow] (zero for
    # images past N and channels past the group's last): the rows of a channel block
    # interleaved vector by vector, as grad_tile reads them; go: (N, O, OD, OH, OW) flat.
    # V x V blocks (columns x images) transposed in registers.
    G, nob, OD, OH, OW, NV, _, V = gm.shape
    Og = O // G
    P = OD * OH * OW
    step = NV * R * V                           # between columns in gm
    for task in prange(G * nob * OD * OH):
        oh = task % OH
        r = task // OH
        od = r % OD
        r = r // OD
        ob = r % nob
        g = r // nob
        dst = gm[g, ob, od, oh]
        df = gm.reshape(gm.size)
        t0 = task * OW * step
        for j in range(R):
            o = ob * R + j
            if o >= Og:
                dst[:, :, j, :] = 0
                continue
            if NV * V > N:
                dst[:, NV - 1, j, N - (NV - 1) * V:] = 0
            s0 = (g * Og + o) * P + (od * OH + oh) * OW
            for nv in range(NV):
                n0 = nv * V
                for w0 in range(0, OW, V):
                    _transpose(df, t0 + w0 * step + (nv * R + j) * V, step, min(V, OW - w0),
                               go, s0 + n0 * O * P + w0, O * P, OW - w0, min(V, N - n0))


@njit(parallel=True, **JIT)
def _minor_bwd_weight(part, gm, xm, off, dims, alt, scratch):
    # part: (nsplit, G, nob*R, ntb*TB) partial sums over the output rows of each split;
    # gm: grad_out flat, laid out by _go_minor (blocks of R channels); xm: the padded
    # input (C, Dp, Hp, Wp, Np) flat; off: the taps (c, kd, kh, kw) as offsets in xm,
    # padded to whole blocks of TB; dims = (Dp, Hp, Wp, Np, OD, OH, OW, sd, sh, sw, G).
    # Tasks: (split, group, channel block, tap block); per output row one grad_tile run
    # over its positions (unit column stride: one line of OW*Np lanes; else one line of
    # Np per position).
    S, G, Rp, Tp = part.shape
    Dp, Hp, Wp, Np, OD, OH, OW, sd, sh, sw, _ = dims
    R = GRAD_ALT_ROWS if alt else GRAD_ROWS
    TB = GRAD_ALT_TAPS if alt else GRAD_TAPS
    V = VECTOR_BYTES // part.itemsize
    nob = Rp // R
    ntb = Tp // TB
    NV = Np // V
    Cg = xm.shape[0] // (G * Dp * Hp * Wp * Np)
    rows = OD * OH
    rowsz = OW * NV * R * V                     # gm elements of one output row
    if sw == 1:
        n, ni, gi, xi = OW * NV, 1, 0, 0
    else:
        n, ni, gi, xi = NV, OW, NV * R * V, sw * Np
    for task in prange(S * G * nob * ntb):
        b = task % ntb
        r = task // ntb
        ob = r % nob
        r = r // nob
        g = r % G
        sp = r // G
        acc = scratch[get_thread_id()]
        acc[:R * TB * V] = 0
        for row in range(sp * rows // S, (sp + 1) * rows // S):
            od = row // OH
            oh = row % OH
            x0 = ((g * Cg * Dp + od * sd) * Hp + oh * sh) * Wp * Np
            g0 = ((g * nob + ob) * rows + row) * rowsz
            grad_tile_of(alt, acc, 0, gm, g0, xm, x0, off, b * TB, n, ni, gi, xi)
        for k in range(R * TB):
            part[sp, g, ob * R + k // TB, b * TB + k % TB] = acc[k * V:(k + 1) * V].sum()


def minor_bwd_weight(xp, go, kernel, stride, groups, off, alt, R, TB):
    """The direct weight gradient (see cpu/direct.direct_bwd_weight) with the images in
    the lanes: gw[o, c, k] = sum_{n, p} go[n, o, p] * xp[n, g*Cg + c, p*stride + k*dilation],
    in register tiles of R channels x TB taps (cpu/_simd.grad_tile, ``alt``: the second
    shape); ``off``: the taps' offsets in the images-innermost input, padded to whole
    blocks of TB (direct._tap_blocks)."""
    N, O, OD, OH, OW = go.shape
    C, Dp, Hp, Wp = xp.shape[1:]
    G = groups
    Cg, Og = C // G, O // G
    isz = xp.dtype.itemsize
    V = VECTOR_BYTES // isz
    xm = to_minor(np.ascontiguousarray(xp))
    Np = xm.shape[-1]
    nob = -(-Og // R)
    gm = workspace("minor_go", (G, nob, OD, OH, OW, Np // V, R, V), xp.dtype)
    with serial_if_small(MOVE_COST * gm.size):
        _go_minor(gm, np.ascontiguousarray(go).reshape(-1), N, O, R)
    T = Cg * math.prod(kernel)
    ntb = -(-T // TB)
    tasks = G * nob * ntb
    nsplit = max(1, min(OD * OH, -(-n_tasks_target() // tasks)))
    part = np.empty((nsplit, G, nob * R, ntb * TB), dtype=xp.dtype)
    scratch = workspace("minor_wacc", (numba.get_num_threads(), R * TB * V), xp.dtype)
    dims = np.array((Dp, Hp, Wp, Np, OD, OH, OW) + tuple(stride) + (G,), dtype=np.int64)
    with serial_if_small(N * O * OD * OH * OW * T):
        _minor_bwd_weight(part, gm.reshape(-1), xm.reshape(-1), off, dims, alt, scratch)
    gw = part.sum(axis=0) if nsplit > 1 else part[0]
    return np.ascontiguousarray(gw[:, :Og, :T]).reshape((O, Cg) + tuple(kernel))
