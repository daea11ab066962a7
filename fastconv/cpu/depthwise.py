"""Depthwise convolution with the channels in the vector lanes: forward and both gradients.

The stencil kernel (cpu/stencil.py) runs a depthwise layer plane by plane, its vectors
along each plane's rows. Planes narrower than a few of its vectors (the 7x7 to 28x28
planes of a network's later stages) leave much of each tile idle and pay a plane's
set-up for a few hundred multiply-adds, strided or dilated layers do not run on it at
all, and it needs a padded copy of the input. Here a task takes L channels of one
image (L = the host's vector lanes) and moves them channels-last into a buffer
(``xi[row, column, lane]``: register transposes of L x L blocks of the planes, which
are contiguous, then the rows into place inside a zero border, the layer's zero
padding, never materialised in memory). Every output position is then one vector of L
channels: register tiles of 8 positions (4, 2, 1 for a row's last ones) hold their
accumulators while the kh x kw taps run, each tap's lane weights loaded once for all of
them, each input vector read at the position's strided, dilated tap. The output plane,
channels-last, goes back to the L planes by transposes again. The input gradient
scatters grad_out's vectors into such a buffer (only the unpadded input's window goes
back), the weight gradient runs tiles of up to GRAD_TAPS taps over the positions.
Every multiply-add fills all L lanes whatever the plane's width, stride or dilation;
planes up to MAX_BUFFER_BYTES per task.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._common import JIT, U, n_tasks_target
from ._simd import VECTOR_BYTES, _vector_ops
from ._wino_ir import transpose_registers
from .stencil import _item_pointer, _phi_loop

#: buffer bytes per task above which the channel-lane kernels do not run (the padded
#: input's L channels, channels-last; a task holds about three such buffers): 224x224
#: float32 planes (1.6 MB) still ran 0.54-0.87x the stencil's time with its padded copy,
#: larger planes keep the stencil, which streams them
MAX_BUFFER_BYTES = 4 << 20


def lanes(itemsize):
    """Channels per task: the host's vector lanes."""
    return VECTOR_BYTES // itemsize


def fits(padded, itemsize):
    """Whether a task's channels-last copy of (Hp, Wp) padded planes fits MAX_BUFFER_BYTES."""
    return padded[0] * padded[1] * lanes(itemsize) * itemsize <= MAX_BUFFER_BYTES


def _tile_intrinsic(J):
    def tile(typingctx, acc_t, a0_t, xi_t, x0_t, wv_t, kh_t, kw_t, rs_t, cs_t, ds_t):
        """acc[a0 + q*L : +L] = wv[kh*kw*L : +L] + sum_{a, b} wv[(a*kw + b)*L : +L] *
        xi[x0 + a*rs + b*ds + q*cs : +L] for the J positions q of the tile (vectors of
        L lanes, 1-D C-contiguous arrays of one float dtype): the J accumulators stay
        in registers while the taps run, each tap's weights loaded once for all J."""
        if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                    for t in (acc_t, xi_t, wv_t)) and isinstance(acc_t.dtype, types.Float)
                and xi_t.dtype == acc_t.dtype and wv_t.dtype == acc_t.dtype):
            return None
        sig = types.void(acc_t, a0_t, xi_t, x0_t, wv_t, kh_t, kw_t, rs_t, cs_t, ds_t)

        def codegen(context, builder, sig, args):
            isz, L, vty, vptr, fma = _vector_ops(context, builder, acc_t.dtype, VECTOR_BYTES)
            i64 = ir.IntType(64)
            accp = _item_pointer(context, builder, sig, args, 0, [1])
            x0p = _item_pointer(context, builder, sig, args, 2, [3])
            wp = _item_pointer(context, builder, sig, args, 4, [i64(0)])
            kh, kw, rs, cs, ds = (context.cast(builder, args[k], sig.args[k], types.intp)
                                  for k in range(5, 10))

            def vload(ptr, k):
                return builder.load(builder.bitcast(builder.gep(ptr, [k]), vptr), align=isz)

            def row(a, acc):
                xr = builder.gep(x0p, [builder.mul(a, rs)])
                wr = builder.mul(builder.mul(a, kw), i64(L))

                def col(b, acc):
                    wv = vload(wp, builder.add(wr, builder.mul(b, i64(L))))
                    xc = builder.mul(b, ds)
                    return [fma(wv, vload(xr, builder.add(xc, builder.mul(cs, i64(q)))), acc[q])
                            for q in range(J)]

                return _phi_loop(builder, kw, acc, col, "dw.col")

            bias = vload(wp, builder.mul(builder.mul(kh, kw), i64(L)))
            acc = _phi_loop(builder, kh, [bias] * J, row, "dw.row")
            for q in range(J):
                builder.store(acc[q], builder.bitcast(builder.gep(accp, [i64(q * L)]), vptr),
                              align=isz)
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = tile.__qualname__ = f"depthwise_tile_{J}"
    return intrinsic(tile)


@intrinsic
def _transpose(typingctx, dst_t, d0_t, ds_t, src_t, s0_t, ss_t):
    """dst[d0 + r*ds + l] = src[s0 + l*ss + r] for r, l < L (an L x L block, L the
    vector lanes; 1-D C-contiguous arrays of one float dtype): L vector loads,
    _wino_ir.transpose_registers, L vector stores (no masked loads or stores, as
    _wino_ir.transpose_block's: masked stores are slow on AMD hosts; the block must lie
    inside both arrays)."""
    if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                for t in (dst_t, src_t)) and isinstance(dst_t.dtype, types.Float)
            and src_t.dtype == dst_t.dtype):
        return None
    sig = types.void(dst_t, d0_t, ds_t, src_t, s0_t, ss_t)

    def codegen(context, builder, sig, args):
        isz, L, vty, vptr, _ = _vector_ops(context, builder, dst_t.dtype, VECTOR_BYTES)
        i64 = ir.IntType(64)
        dp = _item_pointer(context, builder, sig, args, 0, [1])
        sp = _item_pointer(context, builder, sig, args, 3, [4])
        ds, ss = (context.cast(builder, args[k], sig.args[k], types.intp) for k in (2, 5))
        rows = [builder.load(builder.bitcast(builder.gep(sp, [builder.mul(ss, i64(l))]), vptr),
                             align=isz) for l in range(L)]
        rows = transpose_registers(builder, rows)
        for r in range(L):
            builder.store(rows[r], builder.bitcast(builder.gep(dp, [builder.mul(ds, i64(r))]),
                                                   vptr), align=isz)
        return context.get_dummy_value()

    return sig, codegen


#: positions per tile (8 accumulators, a weight and an input: 10 of AVX2's 16 registers),
#: and the narrower tiles for a row's last positions
TILE = 8
_t8, _t4, _t2, _t1 = (_tile_intrinsic(J) for J in (8, 4, 2, 1))


def _row_positions(OW):
    """Positions a row's tiles compute (_depthwise: 8 at a time, the last 1-7 by the
    narrowest tile covering them)."""
    full, rest = divmod(OW, TILE)
    return full * TILE + (8 if rest > 4 else 4 if rest > 2 else rest)


def work(N, C, out, kernel, stride, padded, itemsize):
    """(vector multiply-adds, bytes transposed in and out, tasks) of the kernel on (N, C)
    planes: ``out`` (OH, OW), ``kernel`` (kh, kw), ``padded`` (Hp, Wp) the input it
    reads; for the cost model (fastconv.dispatch)."""
    L = lanes(itemsize)
    tasks = N * -(-C // L)
    macs = tasks * out[0] * _row_positions(out[1]) * kernel[0] * kernel[1]
    return macs, N * C * (padded[0] * padded[1] + out[0] * out[1]) * itemsize, tasks


@njit(inline="always", **JIT)
def _lanes_in(dst, src, base, P, nl, L):
    # dst[p*L + l] = src[base + l*P + p] for the P positions of nl planes (contiguous, P
    # apart): transposes of L x L blocks where all L lanes are channels, the rest by
    # elements (lanes past nl are left as they are)
    full = P // L * L if nl == L else 0
    for p in range(0, full, L):
        _transpose(dst, p * L, L, src, base + p, P)
    for l in range(nl):
        for p in range(full, P):
            dst[p * L + l] = src[base + l * P + p]


@njit(inline="always", **JIT)
def _copy_rows(dst, d0, dw, src, s0, sw, rows, n):
    # dst[d0 + r*dw + e] = src[s0 + r*sw + e] for rows r and n elements each (unsigned
    # indices: a vectorised copy)
    for r in range(rows):
        d = U(d0 + r * dw)
        q = U(s0 + r * sw)
        for e in range(U(n)):
            dst[d + e] = src[q + e]


@njit(inline="always", **JIT)
def _lane_weights(wv, w, c0, nl, L):
    # wv[(a*kw + b)*L + l] = w[c0 + l, a, b] for the nl channels' lanes
    kh, kw = w.shape[1], w.shape[2]
    for l in range(nl):
        for a in range(kh):
            for b in range(kw):
                wv[(a * kw + b) * L + l] = w[c0 + l, a, b]


@njit(inline="always", **JIT)
def _padded_in(xi, tmp, xf, base, H, W, pt, pl, Wp, nl, L):
    # the nl (H, W) planes of xf from base, channels-last, into xi's rows of Wp columns at
    # (pt, pl) (xi's other positions are not written): straight in when they are xi's
    # first rows, else through tmp (H * W * L) and row by row into place
    if pt == 0 and pl == 0 and W == Wp:
        _lanes_in(xi, xf, base, H * W, nl, L)
        return
    _lanes_in(tmp, xf, base, H * W, nl, L)
    _copy_rows(xi, (pt * Wp + pl) * L, Wp * L, tmp, 0, W * L, H, W * L)


def _scatter_intrinsic():
    def scatter(typingctx, acc_t, a0_t, gi_t, g0_t, wv_t, kh_t, kw_t, rs_t, ds_t, cs_t, n_t):
        """acc[a0 + j*cs + a*rs + b*ds : +L] += wv[(a*kw + b)*L : +L] * gi[g0 + j*L : +L]
        for the n positions j of a grad_out row and the taps (a, b), in that order
        (vectors of L lanes; 1-D C-contiguous float arrays): the adjoint of a row of
        :func:`_tile_intrinsic`'s sums, each grad_out vector loaded once for its taps."""
        if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                    for t in (acc_t, gi_t, wv_t)) and isinstance(acc_t.dtype, types.Float)
                and gi_t.dtype == acc_t.dtype and wv_t.dtype == acc_t.dtype):
            return None
        sig = types.void(acc_t, a0_t, gi_t, g0_t, wv_t, kh_t, kw_t, rs_t, ds_t, cs_t, n_t)

        def codegen(context, builder, sig, args):
            isz, L, vty, vptr, fma = _vector_ops(context, builder, acc_t.dtype, VECTOR_BYTES)
            i64 = ir.IntType(64)
            ap = _item_pointer(context, builder, sig, args, 0, [1])
            gp = _item_pointer(context, builder, sig, args, 2, [3])
            wp = _item_pointer(context, builder, sig, args, 4, [i64(0)])
            kh, kw, rs, ds, cs, n = (context.cast(builder, args[k], sig.args[k], types.intp)
                                     for k in range(5, 11))

            def ptr(base, k):
                return builder.bitcast(builder.gep(base, [k]), vptr)

            def position(j, _):
                gv = builder.load(ptr(gp, builder.mul(j, i64(L))), align=isz)
                aj = builder.gep(ap, [builder.mul(j, cs)])

                def row(a, _):
                    ar = builder.gep(aj, [builder.mul(a, rs)])
                    wr = builder.mul(builder.mul(a, kw), i64(L))

                    def col(b, _):
                        p = ptr(ar, builder.mul(b, ds))
                        wv = builder.load(ptr(wp, builder.add(wr, builder.mul(b, i64(L)))),
                                          align=isz)
                        builder.store(fma(wv, gv, builder.load(p, align=isz)), p, align=isz)
                        return []

                    return _phi_loop(builder, kw, [], col, "dws.col")

                return _phi_loop(builder, kh, [], row, "dws.row")

            _phi_loop(builder, n, [], position, "dws.pos", guarded=True)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(scatter)


_scatter = _scatter_intrinsic()


@njit(inline="always", **JIT)
def _lanes_out(dst, base, src, P, nl, L):
    # dst[base + l*P + p] = src[p*L + l] for the P positions of nl planes: the inverse
    # of _lanes_in
    full = P // L * L if nl == L else 0
    for p in range(0, full, L):
        _transpose(dst, base + p, P, src, p * L, L)
    for l in range(nl):
        for p in range(full, P):
            dst[base + l * P + p] = src[p * L + l]


@njit(parallel=True, **JIT)
def _depthwise_input_grad(gx, go, w, sh, sw, dh, dw, y0, x0, Hp, Wp):
    # gx (N, C, H, W) = the window at (y0, x0) of gxp, the gradient of _depthwise's sums
    # over a (Hp, Wp) input: gxp[n, c, i*sh + a*dh, j*sw + b*dw] += w[c, a, b] *
    # go[n, c, i, j]; C-contiguous arrays
    N, C, H, W = gx.shape
    OH, OW = go.shape[2], go.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    L = VECTOR_BYTES // go.itemsize
    nb = (C + L - 1) // L
    gf = go.reshape(-1)
    xf = gx.reshape(-1)
    for task in prange(N * nb):
        n = task // nb
        c0 = (task % nb) * L
        nl = min(L, C - c0)
        acc = np.zeros(Hp * Wp * L, go.dtype)        # gxp's L channels, [row, column, lane]
        gi = np.zeros(OH * OW * L, go.dtype)
        tmp = np.empty(H * W * L, go.dtype)
        wv = np.zeros(kh * kw * L, go.dtype)
        _lane_weights(wv, w, c0, nl, L)
        _lanes_in(gi, gf, (n * C + c0) * OH * OW, OH * OW, nl, L)
        for i in range(OH):
            _scatter(acc, i * sh * Wp * L, gi, i * OW * L, wv, kh, kw, dh * Wp * L, dw * L,
                     sw * L, OW)
        # the window's rows, contiguous, back to the planes
        _copy_rows(tmp, 0, W * L, acc, (y0 * Wp + x0) * L, Wp * L, H, W * L)
        _lanes_out(xf, (n * C + c0) * H * W, tmp, H * W, nl, L)


def input_grad(go, w, stride, dilation, padded, window=None):
    """The gradient of :func:`depthwise` with respect to its (zero) input of spatial size
    ``padded``, or over ``window`` ((start, size) per axis) of it: (N, C) + the size.
    ``go`` (N, C, OH, OW), ``w`` (C, kh, kw). Every term of the definition, no other."""
    N, C = go.shape[:2]
    if window is None:
        window = tuple((0, n) for n in padded)
    (y0, H), (x0, W) = window
    assert 0 <= y0 and y0 + H <= padded[0] and 0 <= x0 and x0 + W <= padded[1], (window, padded)
    _check_extent(go.shape[2:], w.shape[1:], stride, dilation, padded)
    gx = np.empty((N, C, H, W), go.dtype)
    if gx.size:
        _depthwise_input_grad(gx, np.ascontiguousarray(go), np.ascontiguousarray(w, go.dtype),
                              *stride, *dilation, y0, x0, *padded)
    return gx


def input_grad_work(N, C, out, kernel, window, itemsize):
    """(vector multiply-adds in units of the forward tiles', bytes transposed in and out,
    tasks) of :func:`input_grad` over ``window`` (H, W), for the cost model: its
    multiply-adds read and write the gradient's buffer, two memory operands each (the
    forward tiles' accumulate in registers), counted twice."""
    L = lanes(itemsize)
    tasks = N * -(-C // L)
    macs = 2 * tasks * out[0] * out[1] * kernel[0] * kernel[1]
    return macs, N * C * (out[0] * out[1] + window[0] * window[1]) * itemsize, tasks


def grad_work(N, C, out, kernel, padded, itemsize):
    """(vector multiply-adds, bytes transposed in, tasks) of :func:`weight_grad`, for
    the cost model."""
    nb = -(-C // lanes(itemsize))
    macs = N * nb * out[0] * out[1] * kernel[0] * kernel[1]
    return macs, N * C * (padded[0] * padded[1] + out[0] * out[1]) * itemsize, \
        _image_groups(N, nb) * nb


def _image_groups(N, nb):
    """Groups of images the weight gradient splits its sums into, for enough tasks for
    the threads with nb blocks of channels (their partial sums added up after)."""
    return max(1, min(N, -(-n_tasks_target() // nb)))


@njit(parallel=True, **JIT)
def _depthwise(out, x, w, bias, sh, sw, dh, dw, pt, pl, Hp, Wp):
    # out (N, C, OH, OW), x (N, C, H, W), w (C, kh, kw), bias (C,): all C-contiguous. x
    # sits at (pt, pl) in a zero input of (Hp, Wp), xp:
    # out[n, c, i, j] = bias[c] + sum_{a, b} w[c, a, b] * xp[n, c, i*sh + a*dh, j*sw + b*dw]
    N, C, OH, OW = out.shape
    H, W = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    L = VECTOR_BYTES // x.itemsize
    nb = (C + L - 1) // L
    xf = x.reshape(-1)
    of = out.reshape(-1)
    P = H * W
    for task in prange(N * nb):
        n = task // nb
        c0 = (task % nb) * L
        nl = min(L, C - c0)
        # xp's L channels, channels-last [row, column, lane], zero outside x (this buffer
        # is only ever written there); past its end, zeros that a row's last tile reads
        # for positions past OW (their results are dropped)
        xi = np.zeros((Hp * Wp + TILE * sw + 1) * L, x.dtype)
        tmp = np.empty(P * L, x.dtype)                # x's L planes, channels-last
        wv = np.zeros((kh * kw + 1) * L, x.dtype)     # [tap, lane], then the bias lanes
        acc = np.empty((OH * OW + TILE) * L, x.dtype)   # the output plane: [position,
        # lane] (a row's last tile spills into the next row's positions, computed after)
        _lane_weights(wv, w, c0, nl, L)
        for l in range(nl):
            wv[kh * kw * L + l] = bias[c0 + l]
        _padded_in(xi, tmp, xf, (n * C + c0) * P, H, W, pt, pl, Wp, nl, L)
        obase = (n * C + c0) * OH * OW
        rs, cs, ds = dh * Wp * L, sw * L, dw * L
        for i in range(OH):
            j = 0
            while j < OW:
                x0 = (i * sh * Wp + j * sw) * L
                a0 = (i * OW + j) * L
                rest = OW - j
                if rest > 4:
                    _t8(acc, a0, xi, x0, wv, kh, kw, rs, cs, ds)
                    j += 8
                elif rest > 2:
                    _t4(acc, a0, xi, x0, wv, kh, kw, rs, cs, ds)
                    j += 4
                elif rest == 2:
                    _t2(acc, a0, xi, x0, wv, kh, kw, rs, cs, ds)
                    j += 2
                else:
                    _t1(acc, a0, xi, x0, wv, kh, kw, rs, cs, ds)
                    j += 1
        _lanes_out(of, obase, acc, OH * OW, nl, L)


def _grad_tile_intrinsic(T):
    def tile(typingctx, acc_t, a0_t, xi_t, gi_t, offs_t, t0_t, OH_t, OW_t, rs_t, cs_t):
        """acc[a0 + q*L : +L] += sum_{i < OH, j < OW} gi[(i*OW + j)*L : +L] *
        xi[offs[t0 + q] + i*rs + j*cs : +L] for the T taps q of the tile (vectors of L
        lanes; 1-D C-contiguous float arrays, offs int64): T accumulators in registers
        while the positions run, each grad_out vector loaded once for all T."""
        if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                    for t in (acc_t, xi_t, gi_t, offs_t)) and isinstance(acc_t.dtype, types.Float)
                and xi_t.dtype == acc_t.dtype and gi_t.dtype == acc_t.dtype
                and offs_t.dtype == types.int64):
            return None
        sig = types.void(acc_t, a0_t, xi_t, gi_t, offs_t, t0_t, OH_t, OW_t, rs_t, cs_t)

        def codegen(context, builder, sig, args):
            isz, L, vty, vptr, fma = _vector_ops(context, builder, acc_t.dtype, VECTOR_BYTES)
            i64 = ir.IntType(64)
            accp = _item_pointer(context, builder, sig, args, 0, [1])
            xp0 = _item_pointer(context, builder, sig, args, 2, [i64(0)])
            gp = _item_pointer(context, builder, sig, args, 3, [i64(0)])
            t0 = context.cast(builder, args[5], sig.args[5], types.intp)
            OH, OW, rs, cs = (context.cast(builder, args[k], sig.args[k], types.intp)
                              for k in range(6, 10))
            xq = [builder.gep(xp0, [builder.load(_item_pointer(
                context, builder, sig, args, 4, [builder.add(t0, i64(q))]))]) for q in range(T)]

            def vload(ptr, k):
                return builder.load(builder.bitcast(builder.gep(ptr, [k]), vptr), align=isz)

            def row(i, acc):
                xr = builder.mul(i, rs)
                gr = builder.mul(builder.mul(i, OW), i64(L))

                def col(j, acc):
                    gv = vload(gp, builder.add(gr, builder.mul(j, i64(L))))
                    xo = builder.add(xr, builder.mul(j, cs))
                    return [fma(gv, vload(xq[q], xo), acc[q]) for q in range(T)]

                return _phi_loop(builder, OW, acc, col, "dwg.col")

            zero = ir.Constant(vty, [0.0] * L)
            acc = _phi_loop(builder, OH, [zero] * T, row, "dwg.row")
            for q in range(T):
                p = builder.bitcast(builder.gep(accp, [i64(q * L)]), vptr)
                builder.store(builder.fadd(builder.load(p, align=isz), acc[q]), p, align=isz)
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = tile.__qualname__ = f"depthwise_grad_tile_{T}"
    return intrinsic(tile)


#: taps per weight-gradient tile, at most (12 accumulators, grad_out's vector and an
#: input: 14 of AVX2's 16 registers); a kernel's taps run in tiles as equal as they come
GRAD_TAPS = 12
(_g1, _g2, _g3, _g4, _g5, _g6, _g7, _g8, _g9, _g10, _g11,
 _g12) = (_grad_tile_intrinsic(T) for T in range(1, GRAD_TAPS + 1))


@njit(inline="always", **JIT)
def _grad_tile(T, acc, a0, xi, gi, offs, t0, OH, OW, rs, cs):
    # the tile of T taps (numba needs each intrinsic named)
    if T == 12:
        _g12(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 11:
        _g11(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 10:
        _g10(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 9:
        _g9(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 8:
        _g8(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 7:
        _g7(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 6:
        _g6(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 5:
        _g5(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 4:
        _g4(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 3:
        _g3(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    elif T == 2:
        _g2(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)
    else:
        _g1(acc, a0, xi, gi, offs, t0, OH, OW, rs, cs)


@njit(parallel=True, **JIT)
def _depthwise_grad(part, x, go, offs, sh, sw, pt, pl, Hp, Wp, ng):
    # part (ng, nb, T * L): per group of images and block of L channels, the weight
    # gradient's sums over those images, [tap, lane]: tap t of offset offs[t] (its
    # row and column in the channels-last buffer, times L) takes
    # sum_{n, i, j} go[n, c, i, j] * xp[n, c, i*sh + a*dh, j*sw + b*dw]; x (N, C, H, W)
    # at (pt, pl) in the zero input xp of (Hp, Wp), go (N, C, OH, OW), C-contiguous
    N, C, H, W = x.shape
    OH, OW = go.shape[2], go.shape[3]
    T = offs.shape[0]
    L = VECTOR_BYTES // x.itemsize
    nb = (C + L - 1) // L
    xf = x.reshape(-1)
    gf = go.reshape(-1)
    nt = (T + GRAD_TAPS - 1) // GRAD_TAPS            # tiles of taps, as equal as they come
    for task in prange(ng * nb):
        g = task // nb
        cb = task % nb
        c0 = cb * L
        nl = min(L, C - c0)
        xi = np.zeros(Hp * Wp * L, x.dtype)          # as in _depthwise
        tmp = np.empty(H * W * L, x.dtype)
        gi = np.zeros(OH * OW * L, x.dtype)          # grad_out's L channels, [position, lane]
        acc = np.zeros(T * L, x.dtype)
        for n in range(g * N // ng, (g + 1) * N // ng):
            _padded_in(xi, tmp, xf, (n * C + c0) * H * W, H, W, pt, pl, Wp, nl, L)
            _lanes_in(gi, gf, (n * C + c0) * OH * OW, OH * OW, nl, L)
            t0 = 0
            for k in range(nt):
                t1 = T * (k + 1) // nt
                _grad_tile(t1 - t0, acc, t0 * L, xi, gi, offs, t0, OH, OW, sh * Wp * L, sw * L)
                t0 = t1
        for q in range(T * L):
            part[g, cb, q] = acc[q]


def weight_grad(x, go, kernel, stride, dilation, origin=(0, 0), padded=None):
    """The depthwise weight gradient, (C, kh, kw): ``gw[c, a, b] = sum_{n, i, j} go[n, c,
    i, j] * xp[n, c, i*sh + a*dh, j*sw + b*dw]`` for ``go`` (N, C, OH, OW) and ``xp`` as in
    :func:`depthwise` (``x``, or a zero input of size ``padded`` holding it at
    ``origin``). The sums run over every position, padding included (the definition's
    terms: a NaN or inf of grad_out meets the padding's zeros, as in im2col's GEMM)."""
    N, C = x.shape[:2]
    kh, kw = kernel
    padded = x.shape[2:] if padded is None else padded
    _check_origin(x.shape[2:], origin, padded)
    _check_extent(go.shape[2:], kernel, stride, dilation, padded)
    assert go.shape[:2] == (N, C), (x.shape, go.shape)
    L = lanes(x.dtype.itemsize)
    nb = -(-C // L)
    ng = _image_groups(N, nb)
    offs = np.array([(a * dilation[0] * padded[1] + b * dilation[1]) * L
                     for a in range(kh) for b in range(kw)], np.int64)
    part = np.empty((ng, nb, kh * kw * L), x.dtype)
    if N and go.size:
        _depthwise_grad(part, np.ascontiguousarray(x), np.ascontiguousarray(go, x.dtype), offs,
                        *stride, *origin, *padded, ng)
    else:
        part[...] = 0
    return np.ascontiguousarray(part.sum(axis=0).reshape(nb, kh * kw, L)
                                .transpose(0, 2, 1).reshape(nb * L, kh, kw)[:C])


def _check_origin(size, origin, padded):
    # x (size) lies inside the padded input: the kernels write its rows there
    assert all(0 <= o and o + n <= p for o, n, p in zip(origin, size, padded)), \
        (size, origin, padded)


def covers(out, kernel, stride, dilation, padded):
    """Whether every window of the ``out`` outputs lies inside the ``padded`` input (per
    axis; the kernels read it without bounds)."""
    return all(p >= (o - 1) * s + (k - 1) * d + 1 for p, o, s, d, k
               in zip(padded, out, stride, dilation, kernel))


def _check_extent(out, kernel, stride, dilation, padded):
    assert covers(out, kernel, stride, dilation, padded), (out, kernel, padded)


def depthwise(out, x, w, bias, stride, dilation, origin=(0, 0), padded=None):
    """``out`` (N, C, OH, OW) = the depthwise correlation of ``xp`` with ``w`` (C, kh,
    kw) at ``stride`` and ``dilation`` (2-tuples), plus ``bias`` (C,); ``xp`` is ``x``
    (N, C, H, W) itself, or with ``padded`` (Hp, Wp) a zero input of that size holding
    ``x`` at ``origin`` (its zero padding: never materialised). float32 or float64.
    Returns ``out``."""
    if out.size == 0:
        return out
    padded = x.shape[2:] if padded is None else padded
    _check_origin(x.shape[2:], origin, padded)
    _check_extent(out.shape[2:], w.shape[1:], stride, dilation, padded)
    assert out.shape[:2] == x.shape[:2] and w.shape[0] == x.shape[1], (out.shape, x.shape)
    o = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    _depthwise(o, np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=out.dtype),
               np.ascontiguousarray(bias, dtype=out.dtype), *stride, *dilation, *origin,
               *padded)
    if o is not out:
        out[...] = o
    return out
