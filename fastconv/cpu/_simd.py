"""Register-tiled micro-kernels for the direct convolution, written as LLVM vector IR.

LLVM's loop vectoriser only vectorises innermost loops, so a kernel written in Python
keeps its accumulators in memory and reloads them on every pass over the taps. Here the
accumulators of a 4-channel x TILE_VECTORS-vector output tile stay in registers while
the tap loop runs: per tap, TILE_VECTORS input loads and 4 weight broadcasts feed
4 * TILE_VECTORS fused multiply-adds. 12 accumulators + 3 inputs + 1 broadcast fill
the 16 vector registers of AVX2. Vectors are the host's widest (read from LLVM's view of
the CPU): 64 bytes on AVX-512 hosts, 32 otherwise. The vector IR names its width
explicitly, so LLVM emits zmm registers for it (its auto-vectoriser would prefer ymm).
The weight-gradient tile (grad_tile) is sized to the host's registers too.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba import njit
from numba.extending import intrinsic

from ._common import JIT



def _host_avx512():
    """Whether the host has AVX-512 (32 vector registers), from LLVM's view of the CPU."""
    try:
        from llvmlite import binding
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:           # pragma: no cover - an LLVM without host feature queries
        return False


HOST_AVX512 = _host_avx512()
HOST_CLASS = "avx512" if HOST_AVX512 else "avx2"   # the name of this host's tunings
TILE_VECTORS = 3       # output vectors per channel in one tile
VECTOR_BYTES = 64 if HOST_AVX512 else 32   # the host's widest vectors (bytes)


TILE_BYTES = TILE_VECTORS * VECTOR_BYTES   # of one channel of a tile
# the direct forward's long-line tile: 4 channels x 6 vectors; 24 accumulators + 6 inputs
# + 1 broadcast take 31 of AVX-512's 32 registers (AVX2 hosts keep 3 vectors)
LONG_TILE_VECTORS = 6 if HOST_AVX512 else TILE_VECTORS
LONG_TILE_BYTES = LONG_TILE_VECTORS * VECTOR_BYTES


def tile_width(itemsize):
    """Output positions one tile covers (in kernels: TILE_BYTES // itemsize)."""
    return TILE_BYTES // itemsize


def _close_loop(builder, counter, bound, cur, new, init, blocks, dst, vty, isz):
    """End a register-tile loop: step ``counter`` and branch back while it is below
    ``bound`` (``cur``: the accumulators' phis, ``new``: their values after one step),
    then in the exit block store each accumulator (its phi over ``init`` on entry and
    ``new`` from the loop) to ``dst`` (phis first: LLVM wants them at the block's top)."""
    entry, loop, done = blocks
    nxt = builder.add(counter, ir.Constant(ir.IntType(64), 1))
    counter.add_incoming(nxt, loop)
    for ph, v in zip(cur, new):
        ph.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", nxt, bound), loop, done)
    builder.position_at_end(done)
    fins = []
    for v0, v1 in zip(init, new):
        fin = builder.phi(vty)
        fin.add_incoming(v0, entry)
        fin.add_incoming(v1, loop)
        fins.append(fin)
    for d, fin in zip(dst, fins):
        builder.store(fin, d, align=isz)


def _tile_intrinsic(name, accumulate, vector_bytes=VECTOR_BYTES, vectors=TILE_VECTORS, rows=4):
    """The tile kernel as a numba intrinsic; ``accumulate``: add to acc instead of
    overwriting it; ``vector_bytes``: the width of its vectors; ``vectors``: per channel;
    ``rows``: channels (wg: (T, rows))."""

    def tile(typingctx, acc_t, p0_t, xr_t, base_t, off_t, wg_t, T_t):
        arrays = (acc_t, xr_t, off_t, wg_t)
        if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)
                and acc_t.ndim == 2 and isinstance(acc_t.dtype, (types.Float, types.Integer))
                and wg_t.dtype == acc_t.dtype and xr_t.dtype == acc_t.dtype
                and off_t.dtype == types.int64):
            return None                     # the code below assumes contiguous arrays
        return types.void(acc_t, p0_t, xr_t, base_t, off_t, wg_t, T_t), \
            lambda context, builder, sig, args: _codegen(context, builder, sig, args, accumulate,
                                                         vector_bytes, vectors, rows)

    tile.__name__ = tile.__qualname__ = name
    return tile


def _vector_ops(context, builder, dtype, vector_bytes):
    """(itemsize, lanes, vector type, its pointer type, fma(a, b, c) = a * b + c) for
    vectors of ``dtype`` filling ``vector_bytes``: LLVM's fused multiply-add for floats,
    exact integer arithmetic (wrapping like NumPy) otherwise."""
    isz = dtype.bitwidth // 8
    V = vector_bytes // isz
    vty = ir.VectorType(context.get_value_type(dtype), V)
    if isinstance(dtype, types.Float):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{V}f{isz * 8}")

        def fma(a, b, c):
            return builder.call(fn, [a, b, c])
    else:
        def fma(a, b, c):
            return builder.add(builder.mul(a, b), c)
    return isz, V, vty, vty.as_pointer(), fma


def _codegen(context, builder, signature, args, accumulate, vector_bytes=VECTOR_BYTES,
             TILE_VECTORS=TILE_VECTORS, rows=4):
    acc_t = signature.args[0]
    acc, p0, xr, base, off, wg, T = args
    i64, i32 = ir.IntType(64), ir.IntType(32)
    isz, V, vty, vptr, fma = _vector_ops(context, builder, acc_t.dtype, vector_bytes)
    A = context.make_array(acc_t)(context, builder, acc)
    X = context.make_array(signature.args[2])(context, builder, xr)
    O = context.make_array(signature.args[4])(context, builder, off)
    W = context.make_array(signature.args[5])(context, builder, wg)
    p0 = context.cast(builder, p0, signature.args[1], types.int64)
    base = context.cast(builder, base, signature.args[3], types.int64)
    T = context.cast(builder, T, signature.args[6], types.int64)
    row_stride = builder.sdiv(cgutils.unpack_tuple(builder, A.strides, 2)[0], i64(isz))

    def vec(ptr, k):
        return builder.bitcast(builder.gep(ptr, [i64(k * V)]), vptr)

    dst = []                                # the tile's rows x TILE_VECTORS vectors in acc
    for j in range(rows):
        row = builder.gep(A.data, [builder.add(builder.mul(row_stride, i64(j)), p0)])
        dst += [vec(row, k) for k in range(TILE_VECTORS)]
    if accumulate:
        init = [builder.load(d, align=isz) for d in dst]
    else:
        zero = ir.Constant(vty, [0] * V if isinstance(acc_t.dtype, types.Integer) else [0.0] * V)
        init = [zero] * len(dst)
    xb = builder.gep(X.data, [builder.add(base, p0)])
    entry = builder.block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", T, i64(0)), loop, done)

    builder.position_at_end(loop)           # per tap: load, broadcast, 4 x TILE_VECTORS FMAs
    t = builder.phi(i64)
    t.add_incoming(i64(0), entry)
    cur = []
    for v in init:
        ph = builder.phi(vty)
        ph.add_incoming(v, entry)
        cur.append(ph)
    xp = builder.gep(xb, [builder.load(builder.gep(O.data, [t]))])
    xv = [builder.load(vec(xp, k), align=isz) for k in range(TILE_VECTORS)]
    wrow = builder.gep(W.data, [builder.mul(t, i64(rows))])
    undef = ir.Constant(vty, ir.Undefined)
    splat = ir.Constant(ir.VectorType(i32, V), [0] * V)
    new = []
    for j in range(rows):
        w = builder.load(builder.gep(wrow, [i64(j)]))
        wb = builder.shuffle_vector(builder.insert_element(undef, w, i32(0)), undef, splat)
        for k in range(TILE_VECTORS):
            new.append(fma(wb, xv[k], cur[j * TILE_VECTORS + k]))
    _close_loop(builder, t, T, cur, new, init, (entry, loop, done), dst, vty, isz)
    return context.get_dummy_value()


tile4 = intrinsic(_tile_intrinsic("tile4", False))
tile4.__doc__ = """tile4(acc, p0, xr, base, off, wg, T):
    acc[j, p0 + i] = sum_{t < T} wg[t, j] * xr[base + off[t] + p0 + i]
    for the 4 channels j and the tile_width positions i (acc: (4, n) with unit stride
    along n; xr, off, wg: contiguous; wg: (T, 4)). Overwrites acc."""
tile4_add = intrinsic(_tile_intrinsic("tile4_add", True))
tile4_add.__doc__ = """tile4_add(acc, p0, xr, base, off, wg, T): like tile4, adding to acc."""
tile4_long = intrinsic(_tile_intrinsic("tile4_long", False, VECTOR_BYTES, LONG_TILE_VECTORS))
tile4_long.__doc__ = """tile4_long(acc, p0, xr, base, off, wg, T): like tile4, over
    LONG_TILE_BYTES // itemsize positions."""
tile4_long_add = intrinsic(_tile_intrinsic("tile4_long_add", True, VECTOR_BYTES,
                                           LONG_TILE_VECTORS))
tile4_long_add.__doc__ = """tile4_long_add: like tile4_long, adding to acc."""


# --- the weight-gradient tile ----------------------------------------------------------
# A weight-gradient tile: GRAD_ROWS output channels x GRAD_TAPS taps of vector
# accumulators; per step it loads the GRAD_ROWS grad_out vectors once and each tap's
# input vector once: 4 x 6 + 4 + 1 = 29 of AVX-512's 32 registers (measured faster than
# 8 x 3 and level with 6 x 4), 3 x 4 + 3 + 1 = 16 of AVX2's 16. grad_out comes
# row-interleaved (the rows' vectors of one step adjacent), so that one pointer serves
# all rows and the loop keeps few general registers live.
# A second shape per host for weights whose channels and taps it divides better
# (mnist.conv1: 10 x 25 is 2 x 5 tiles of 5 x 5, 3 x 5 of 4 x 6 with 44 % padding):
# 5 x 5 + 5 + 1 = 31 registers on AVX-512, 2 x 5 + 2 + 1 = 13 on AVX2. The shape with
# the lower grad_tile_cost runs (cpu/direct.grad_alt).
# On an AMD EPYC (Zen 3, AVX2), in one process: 3 x 4 ran the stem's weight gradient
# 21 % faster than the earlier 4 x 2, resnet's 15 %; 2 x 5 ran mnist.conv1's 16-18 %
# faster than 4 x 2 and 3 x 3 (no padding).
GRAD_TILES = {"avx512": (4, 6), "avx2": (3, 4), "avx512_alt": (5, 5), "avx2_alt": (2, 5)}


def grad_tile_cost(rows, taps):
    """Half-cycles of one step of a rows x taps weight-gradient tile: its rows*taps FMAs
    at two a cycle, or its rows + taps vector loads at one a cycle (the input's are
    unaligned), whichever bounds it. AVX-512's tiles are bound by their FMAs, AVX2's by
    their loads (measured on Zen 3: 3 x 4 beat 2 x 5 by 15 % on the stem, where it pads
    2 % more)."""
    return max(rows * taps, 2 * (rows + taps))


GRAD_ROWS, GRAD_TAPS = GRAD_TILES[HOST_CLASS]
GRAD_ALT_ROWS, GRAD_ALT_TAPS = GRAD_TILES[HOST_CLASS + "_alt"]


def _grad_tile_intrinsic(rows, taps, name, vector_bytes):
    def tile(typingctx, acc_t, a0_t, gl_t, g0_t, xr_t, x0_t, off_t, t0_t, n_t, ni_t, gi_t,
             xi_t):
        arrays = (acc_t, gl_t, xr_t, off_t)
        if not (all(isinstance(a, types.Array) and a.layout == "C" and a.ndim == 1
                    for a in arrays)
                and isinstance(acc_t.dtype, (types.Float, types.Integer))
                and gl_t.dtype == acc_t.dtype and xr_t.dtype == acc_t.dtype
                and off_t.dtype == types.int64):
            return None
        sig = types.void(acc_t, a0_t, gl_t, g0_t, xr_t, x0_t, off_t, t0_t, n_t, ni_t, gi_t,
                         xi_t)
        return sig, lambda context, builder, sig, args: _grad_codegen(
            context, builder, sig, args, rows, taps, vector_bytes)

    tile.__name__ = tile.__qualname__ = name
    return tile


def _grad_codegen(context, builder, signature, args, rows, taps, vector_bytes):
    acc_t = signature.args[0]
    i64 = ir.IntType(64)
    isz, V, vty, vptr, fma = _vector_ops(context, builder, acc_t.dtype, vector_bytes)
    arrs = [context.make_array(signature.args[k])(context, builder, args[k]) for k in (0, 2, 4, 6)]
    A, G, X, O = arrs
    a0, g0, x0, t0, n, ni, gi, xi = (
        context.cast(builder, args[k], signature.args[k], types.int64)
        for k in (1, 3, 5, 7, 8, 9, 10, 11))

    def vec(ptr):
        return builder.bitcast(ptr, vptr)

    dst = [vec(builder.gep(A.data, [builder.add(a0, i64(k * V))])) for k in range(rows * taps)]
    init = [builder.load(d, align=isz) for d in dst]
    offs = [builder.load(builder.gep(O.data, [builder.add(t0, i64(i))])) for i in range(taps)]
    entry = builder.block
    line = builder.append_basic_block("gtile.line")
    loop = builder.append_basic_block("gtile.loop")
    latch = builder.append_basic_block("gtile.latch")
    done = builder.append_basic_block("gtile.done")
    live = builder.and_(builder.icmp_signed(">", n, i64(0)), builder.icmp_signed(">", ni, i64(0)))
    builder.cbranch(live, line, done)

    # outer loop: line m, grad_out from g0 + m*gi, input from x0 + m*xi
    builder.position_at_end(line)
    m = builder.phi(i64)
    gb = builder.phi(i64)
    xb = builder.phi(i64)
    outer = [builder.phi(vty) for _ in init]
    for ph, v in zip((m, gb, xb), (i64(0), g0, x0)):
        ph.add_incoming(v, entry)
    for ph, v in zip(outer, init):
        ph.add_incoming(v, entry)
    gp = builder.gep(G.data, [gb])
    xp = [builder.gep(X.data, [builder.add(xb, o)]) for o in offs]
    builder.branch(loop)

    # inner loop: per vector s of the line, the rows' vectors (adjacent) and each tap's
    builder.position_at_end(loop)
    s = builder.phi(i64)
    s.add_incoming(i64(0), line)
    cur = []
    for v in outer:
        ph = builder.phi(vty)
        ph.add_incoming(v, line)
        cur.append(ph)
    q = builder.mul(s, i64(V))
    gq = builder.mul(s, i64(rows * V))
    gv = [builder.load(vec(builder.gep(gp, [builder.add(gq, i64(j * V))])), align=isz)
          for j in range(rows)]
    new = list(cur)
    for i in range(taps):
        xv = builder.load(vec(builder.gep(xp[i], [q])), align=isz)
        for j in range(rows):
            new[j * taps + i] = fma(gv[j], xv, cur[j * taps + i])
    s1 = builder.add(s, i64(1))
    s.add_incoming(s1, loop)
    for ph, v in zip(cur, new):
        ph.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", s1, n), loop, latch)

    builder.position_at_end(latch)
    m1 = builder.add(m, i64(1))
    m.add_incoming(m1, latch)
    gb.add_incoming(builder.add(gb, gi), latch)
    xb.add_incoming(builder.add(xb, xi), latch)
    for ph, v in zip(outer, new):
        ph.add_incoming(v, latch)
    builder.cbranch(builder.icmp_signed("<", m1, ni), line, done)

    builder.position_at_end(done)
    fins = []
    for v0, v1 in zip(init, new):           # phis first: LLVM wants them at the block's top
        fin = builder.phi(vty)
        fin.add_incoming(v0, entry)
        fin.add_incoming(v1, latch)
        fins.append(fin)
    for d, fin in zip(dst, fins):
        builder.store(fin, d, align=isz)
    return context.get_dummy_value()


def grad_tile(rows, taps, vector_bytes=VECTOR_BYTES):
    """The weight-gradient tile for ``rows`` x ``taps`` accumulators, as a numba intrinsic:

    grad_tile(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi):
        acc[a0 + (j*taps + i)*V + l] += sum_{m < ni} sum_{s < n}
            gl[g0 + m*gi + (s*rows + j)*V + l] * xr[x0 + m*xi + off[t0 + i] + s*V + l]
    for rows j, taps i and lanes l < V = vector_bytes // itemsize: ni lines of n vectors,
    grad_out row-interleaved (acc, gl, xr, off: 1-D contiguous; off int64). The lanes of
    acc hold partial sums (the caller adds them)."""
    return intrinsic(_grad_tile_intrinsic(rows, taps, f"grad_tile_{rows}x{taps}_{vector_bytes}",
                                          vector_bytes))


def vector_width(itemsize):
    """Elements of one vector (the unit of a grad_tile step)."""
    return VECTOR_BYTES // itemsize


grad_tile_host = grad_tile(GRAD_ROWS, GRAD_TAPS)
grad_tile_alt = grad_tile(GRAD_ALT_ROWS, GRAD_ALT_TAPS)


@njit(inline="always", **JIT)
def grad_tile_of(alt, acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi):
    """The weight-gradient tile of the host's second shape (``alt``) or its main one."""
    if alt:
        grad_tile_alt(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi)
    else:
        grad_tile_host(acc, a0, gl, g0, xr, x0, off, t0, n, ni, gi, xi)


def _vec_copy_intrinsic():
    def vec_copy(typingctx, dst_t, d0_t, src_t, s0_t):
        if not (isinstance(dst_t, types.Array) and isinstance(src_t, types.Array)
                and dst_t.layout == "C" and src_t.layout == "C" and dst_t.ndim == src_t.ndim == 1
                and dst_t.dtype == src_t.dtype
                and isinstance(dst_t.dtype, (types.Float, types.Integer))):
            return None

        def codegen(context, builder, sig, args):
            isz, V, vty, vptr, _ = _vector_ops(context, builder, dst_t.dtype, VECTOR_BYTES)
            D = context.make_array(dst_t)(context, builder, args[0])
            S = context.make_array(src_t)(context, builder, args[2])
            d0 = context.cast(builder, args[1], sig.args[1], types.int64)
            s0 = context.cast(builder, args[3], sig.args[3], types.int64)
            v = builder.load(builder.bitcast(builder.gep(S.data, [s0]), vptr), align=isz)
            builder.store(v, builder.bitcast(builder.gep(D.data, [d0]), vptr), align=isz)
            return context.get_dummy_value()

        return types.void(dst_t, d0_t, src_t, s0_t), codegen

    return vec_copy


vec_copy = intrinsic(_vec_copy_intrinsic())
vec_copy.__doc__ = """vec_copy(dst, d0, src, s0): dst[d0:d0 + V] = src[s0:s0 + V], one vector of the
    host's width (V = VECTOR_BYTES // itemsize; 1-D contiguous arrays, no bounds checks):
    one load and one store, where a loop of V element copies between arrays that may
    overlap stays scalar."""
