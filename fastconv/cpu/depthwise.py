"""Depthwise convolution with the channels in the vector lanes, for small or strided planes.

The stencil kernel (cpu/stencil.py) runs a depthwise layer plane by plane, its vectors
along each plane's rows. Planes narrower than a few of its vectors (the 7x7 to 28x28
planes of a network's later stages) leave much of each tile idle and pay a plane's
set-up for a few hundred multiply-adds, and strided or dilated layers do not run on it
at all. Here a task takes L channels of one image (L = the host's vector lanes) and
moves them channels-last into a buffer (``xi[row, column, lane]``: register transposes
of L x L blocks of the planes, which are contiguous, then the rows into place inside a
zero border, the layer's zero padding, never materialised in memory). Every output
position is then one vector of L channels: register tiles of 8 positions (4, 2, 1 for a
row's last ones) hold their accumulators while the kh x kw taps run, each tap's lane
weights loaded once for all of them, each input vector read at the position's strided,
dilated tap. The output plane, channels-last, goes back to the L planes by transposes
again. Every multiply-add fills all L lanes whatever the plane's width, stride or
dilation, and a task's buffers stay in L1/L2 (MAX_BUFFER_BYTES).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._common import JIT, U
from ._simd import VECTOR_BYTES, _vector_ops
from .stencil import _item_pointer, _phi_loop

#: buffer bytes per task above which the channel-lane kernel does not run (its padded
#: input's L channels, channels-last): the buffer stays in L2
MAX_BUFFER_BYTES = 256 << 10


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
    vector lanes; 1-D C-contiguous arrays of one float dtype): L vector loads, log2(L)
    stages of two-vector shuffles, L vector stores (no masked loads or stores: those
    are slow on some hosts, the block must lie inside both arrays)."""
    if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                for t in (dst_t, src_t)) and isinstance(dst_t.dtype, types.Float)
            and src_t.dtype == dst_t.dtype):
        return None
    sig = types.void(dst_t, d0_t, ds_t, src_t, s0_t, ss_t)

    def codegen(context, builder, sig, args):
        isz, L, vty, vptr, _ = _vector_ops(context, builder, dst_t.dtype, VECTOR_BYTES)
        i64, i32 = ir.IntType(64), ir.IntType(32)
        dp = _item_pointer(context, builder, sig, args, 0, [1])
        sp = _item_pointer(context, builder, sig, args, 3, [4])
        ds, ss = (context.cast(builder, args[k], sig.args[k], types.intp) for k in (2, 5))
        rows = [builder.load(builder.bitcast(builder.gep(sp, [builder.mul(ss, i64(l))]), vptr),
                             align=isz) for l in range(L)]
        b = L // 2
        while b >= 1:                    # swap the off-diagonal sub-blocks of size b
            nxt = list(rows)
            for i in range(L):
                if (i // b) % 2:
                    continue
                lo = [c if (c // b) % 2 == 0 else L + c - b for c in range(L)]
                hi = [c + b if (c // b) % 2 == 0 else L + c for c in range(L)]
                mk = ir.VectorType(i32, L)
                nxt[i] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mk, lo))
                nxt[i + b] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mk, hi))
            rows = nxt
            b //= 2
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
        for l in range(nl):
            wv[kh * kw * L + l] = bias[c0 + l]
            for a in range(kh):
                for b in range(kw):
                    wv[(a * kw + b) * L + l] = w[c0 + l, a, b]
        base = (n * C + c0) * P
        whole = pt == 0 and pl == 0 and W == Wp      # x's planes are xp's first rows
        t = xi if whole else tmp
        full = P // L * L if nl == L else 0          # whole blocks of L positions
        for p in range(0, full, L):
            _transpose(t, p * L, L, xf, base + p, P)
        for l in range(nl):
            for p in range(full, P):
                t[p * L + l] = xf[base + l * P + p]
        if not whole:
            for r in range(H):                       # x's rows into place
                d = U(((r + pt) * Wp + pl) * L)
                q = U(r * W * L)
                for e in range(U(W * L)):        # (unsigned: a vectorised copy)
                    xi[d + e] = tmp[q + e]
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
        Q = OH * OW
        full = Q // L * L if nl == L else 0
        for p in range(0, full, L):
            _transpose(of, obase + p, Q, acc, p * L, L)
        for l in range(nl):
            for p in range(full, Q):
                of[obase + l * Q + p] = acc[p * L + l]


def depthwise(out, x, w, bias, stride, dilation, origin=(0, 0), padded=None):
    """``out`` (N, C, OH, OW) = the depthwise correlation of ``xp`` with ``w`` (C, kh,
    kw) at ``stride`` and ``dilation`` (2-tuples), plus ``bias`` (C,); ``xp`` is ``x``
    (N, C, H, W) itself, or with ``padded`` (Hp, Wp) a zero input of that size holding
    ``x`` at ``origin`` (its zero padding: never materialised). float32 or float64.
    Returns ``out``."""
    if out.size == 0:
        return out
    padded = x.shape[2:] if padded is None else padded
    o = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    _depthwise(o, np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=out.dtype),
               np.ascontiguousarray(bias, dtype=out.dtype), *stride, *dilation, *origin,
               *padded)
    if o is not out:
        out[...] = o
    return out
