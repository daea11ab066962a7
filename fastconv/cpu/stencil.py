"""One-channel 2-D correlation (a stencil) on register tiles, written as LLVM vector IR.

``stencil2d(out, x, w, bias)``: ``out[n, g, i, j] = bias[g] + sum_{a, c} w[g, a, c] *
x[n, g, i + a, j + c]`` -- the valid correlation of each image's channel g with its own
kernel (one signal of fastconv.signal, or one channel of a depthwise convolution).

The micro-kernel holds a tile of R output rows x V vectors in registers while the taps
run. It walks the R + kh - 1 input rows the tile reads, and for each row and kernel
column loads the row's V vectors once: every output row of the tile that uses that input
row (with tap ``a = r - i``) takes it with its own broadcast weight. Per kernel column
that is (R + kh - 1) * V loads for R * kh * V fused multiply-adds, instead of one load
per multiply-add. The rows a tile walks fall in three phases -- the first R - 1 feed a
growing set of output rows, the steady middle all R, the last R - 1 a shrinking set --
so R <= kh; each phase is generated with its rows' sets known at compile time. Outputs
narrower than a tile take half-width tiles, narrower than that the definition; the rest
of a row after whole tiles takes a half tile where one covers it.

Kernels of one row (1-D signals) have no rows to share loads between; their tile is one
row of ROW_VECTORS vectors whose taps run in blocks of one vector's lanes: the V + 1
input vectors under the tile are loaded once per block and each tap's inputs are made by
shifting pairs of them in registers (``valign``), so the loop runs on the FMA and
shuffle ports instead of on one cache-line-straddling load per multiply-add. Kernels of
at least stream_vectors() whole blocks take a tile that runs the 1-D correlation like the
multi-row tile runs 2-D ones, with vectors for rows: it walks the input vectors once,
shifts each pair once per tap of a block, and feeds every output vector of the tile that
uses the shifted input (block u - v) with its own broadcast weight -- L - 1 shuffles per
stream_vectors() * L multiply-adds instead of per ROW_VECTORS, and at two places of the
row at once, so that each weight broadcast feeds two multiply-adds. (Below 64-byte
vectors that tile loads each shifted input unaligned instead: SHIFT_BY_LOADS.)

With ``fir`` (fastconv.signal, below the "highest" precision level), one-row float kernels
of at least FIR_MIN_TAPS taps run the 2-parallel fast FIR algorithm instead
(:func:`_fir_chunk`): the even and odd phases of the taps on the input by a lane-paired
variant of that tile (weights alternating between the lanes, taps two lanes apart), and
their sums on the input's pairwise sums -- 3/4 of the multiply-adds, in chunks that fall
back to the direct sums where an input or output is not finite.

Tasks are strips of columns whose input rows fit in L1, walked downwards block by block
(the block below reuses kh - 1 of the rows); each tile prefetches the R rows the next
block adds, which the hardware prefetchers do not anticipate.

The vector width is the host's (AVX-512: 64 bytes, AVX2: 32), read from LLVM's CPU
features as numba compiles for them. Floats, and integers with exact wrap-around
arithmetic (int64: vpmullq on AVX-512DQ).
"""
import functools
import math
import platform

import numpy as np
from llvmlite import ir
from numba import carray, config, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import JIT, any_layout, n_tasks_target, serial_if_small
from ._simd import _vector_ops


@functools.lru_cache(maxsize=1)
def vector_bytes():
    """Bytes of the widest vector register numba compiles for (NUMBA_CPU_FEATURES, or
    the host's)."""
    feats = config.CPU_FEATURES
    if feats:
        on = {f[1:] for f in feats.split(",") if f.startswith("+")}
    else:
        import llvmlite.binding as llvm
        on = {k for k, v in llvm.get_host_cpu_features().items() if v}
    if config.CPU_NAME == "generic" and not feats:
        return 16
    if "avx512f" in on:
        return 64
    if "avx2" in on or "avx" in on:
        return 32
    return 16


VECTOR_BYTES = vector_bytes()
# AVX-512 has 32 vector registers: 4 x 4 accumulators + 4 inputs + 1 weight; AVX/SSE 16:
# 4 x 3 accumulators + 3 + 1 (at least 8 independent chains hide the FMA latency). Half
# tiles (HALF vectors) take outputs narrower than a tile and the rest of a row that a
# half tile covers. AVX2 tiles of 3 vectors against 2, 1024x1024 'same' in alternating
# processes (AMD Zen 3, ms): float64 k=5 1.15-1.22 vs 1.35-1.38, k=7 1.60-1.66 vs
# 1.77-1.78, k=15 6.55-6.72 vs 7.07-7.16; float32 k=7 0.94-0.99 vs 1.09, k=15 3.12 vs 3.30.
ROWS = 4
VECTORS = 4 if VECTOR_BYTES == 64 else 3
HALF = 2 if VECTOR_BYTES == 64 else 1


def lanes(itemsize):
    return VECTOR_BYTES // itemsize


def tile_width(itemsize):
    """Output columns of one full-width tile."""
    return VECTORS * lanes(itemsize)


def half_width(itemsize):
    """Output columns of one half tile (narrower outputs run the scalar definition)."""
    return HALF * lanes(itemsize)


# non-temporal stores by default for outputs of at least NT_MIN_BYTES of kernels of at
# most NT_MAX_TAPS taps: none at present. Measured on the 2-core development machine
# (float64 1024x1024 'same' right after a SciPy call, A/B in one process, shared and
# noisy): alone, a parallel fill of a cold 8 MB buffer takes 0.26 ms non-temporal
# against 0.58 ms; but in the stencil the gain did not hold up: +10 % to -8 % at 3x3
# from run to run, 12-15 % slower at 5x5 and 7x7 (perhaps: a 4-row x 4-vector tile issues 16
# line writes at once, more than the write-combining buffers drain), neutral for the
# 1-D 101-tap signal. ``stencil2d(..., nt=True)`` still asks for them.
NT_MIN_BYTES = 4 << 20
NT_MAX_TAPS = 0

# How the streaming one-row tile (1-D signals of at least stream_vectors() blocks of
# taps) makes a tap's shifted input: by shifting a pair of aligned vectors in registers
# (a lane shuffle) at 64-byte vectors, where every other load would straddle two cache
# lines; by one unaligned load at 32 bytes and less (the shorter kernels' row tile, whose
# inputs feed one multiply-add each, always shuffles: loads were slower there). On the
# AVX2 development machine (AMD Zen 3), 1e6 samples x 101 taps in one process, best of
# blocks, twice: loads 83-88 GFLOP/s float64 against 72-75 with shuffles (there a
# two-source lane shift is two shuffles, on a pipe the FMAs use), float32 125-149
# against 122. AVX-512 kept the shuffles it was built with (``valign``, one shuffle).
SHIFT_BY_LOADS = VECTOR_BYTES < 64


def _no_unroll(branch):
    """Mark the latch ``branch`` of a loop so that LLVM does not unroll it. The tiles'
    loops already run many independent multiply-adds per step: unrolled, the kernel was
    8x the code, compiled in 22.6 s instead of 12.8-13.7 (float64, 2 cores) and ran 5-20 %
    slower on 2-D images (as fast on the 1-D signal). (cpu/_simd.py's direct tiles ran
    5-15 % faster unrolled, so they stay so.)"""
    module = branch.parent.parent.module
    hint = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = ir.MDValue(module, [hint], name=str(len(module.metadata)))
    # a loop's id names itself first (so llvmlite cannot hash or compare this node: it
    # recurses into its operands; use it only as the branch's metadata, as here)
    loop_id.operands = (loop_id, hint)
    branch.set_metadata("llvm.loop", loop_id)


def _phi_loop(builder, n, state, body, name, guarded=False):
    """for t in range(n): state = body(t, state), as one LLVM loop whose state (a list of
    values) lives in phi nodes, i.e. registers; returns the final state. n >= 1 unless
    ``guarded`` (then n may be 0 and the state passes through unchanged). Not unrolled
    (:func:`_no_unroll`)."""
    i64 = ir.IntType(64)
    pre = builder.block
    head = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    if guarded:
        builder.cbranch(builder.icmp_signed(">", n, i64(0)), head, done)
    else:
        builder.branch(head)
    builder.position_at_end(head)
    t = builder.phi(i64)
    t.add_incoming(i64(0), pre)
    phis = []
    for s in state:
        p = builder.phi(s.type)
        p.add_incoming(s, pre)
        phis.append(p)
    new = body(t, phis)
    t1 = builder.add(t, i64(1))
    latch = builder.block
    t.add_incoming(t1, latch)
    for p, v in zip(phis, new):
        p.add_incoming(v, latch)
    _no_unroll(builder.cbranch(builder.icmp_signed("<", t1, n), head, done))
    builder.position_at_end(done)
    if not guarded:
        return new                          # the loop ran at least once: its last values
    res = []
    for s, v in zip(state, new):
        p = builder.phi(s.type)
        p.add_incoming(s, pre)
        p.add_incoming(v, latch)
        res.append(p)
    return res


def _store_tile(builder, stores, nt, isz):
    """Store the tile's vectors: ``stores`` is a list of (element pointer, vector). When
    ``nt`` (an i64 value) is nonzero and every pointer is aligned to a vector, with
    non-temporal stores (straight to memory: a large output that the cache could not
    keep anyway is written without first reading each line in, and a cold one without
    the read from memory); otherwise ordinary ones."""
    i64 = ir.IntType(64)
    bits = None
    for p, _ in stores:
        a = builder.ptrtoint(p, i64)
        bits = a if bits is None else builder.or_(bits, a)
    aligned = builder.icmp_unsigned("==", builder.and_(bits, i64(VECTOR_BYTES - 1)), i64(0))
    stream = builder.and_(aligned, builder.icmp_signed("!=", nt, i64(0)))
    md = builder.module.add_metadata([ir.IntType(32)(1)])
    with builder.if_else(stream) as (then, otherwise):
        with then:
            for p, v in stores:
                st = builder.store(v, builder.bitcast(p, v.type.as_pointer()),
                                   align=VECTOR_BYTES)
                st.set_metadata("nontemporal", md)
        with otherwise:
            for p, v in stores:
                builder.store(v, builder.bitcast(p, v.type.as_pointer()), align=isz)


def _prefetch_line(builder, ptr, write):
    """Prefetch the cache line at ``ptr`` into L1 (for writing if ``write``): a hint,
    no fault past an array."""
    i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
    pf = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
        "llvm.prefetch.p0i8")
    builder.call(pf, [builder.bitcast(ptr, i8p), i32(int(write)), i32(3), i32(1)])


def _item_pointer(context, builder, sig, args, k, inds):
    """The address of element ``inds`` (LLVM values, or argument positions as ints) of
    the array argument k of an intrinsic."""
    A = context.make_array(sig.args[k])(context, builder, args[k])
    inds = [context.cast(builder, args[i], sig.args[i], types.intp) if isinstance(i, int)
            else i for i in inds]
    return cgutils.get_item_pointer(context, builder, sig.args[k], A, inds)


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@intrinsic
def _store_fence(typingctx):
    """Orders this thread's non-temporal stores before its later stores (the end of a
    parallel task: the result is read by other threads after the join)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


def _stencil_intrinsic(R, V):
    def tile(typingctx, out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, nt_t):
        arrays = (out_t, x_t, w_t)
        if not (all(isinstance(a, types.Array) and a.ndim == 2 for a in arrays)
                and w_t.layout == "C" and isinstance(out_t.dtype, (types.Float, types.Integer))
                and x_t.dtype == out_t.dtype and w_t.dtype == out_t.dtype):
            return None
        sig = types.void(out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, nt_t)
        return sig, lambda context, builder, s, args: _codegen(context, builder, s, args, R, V)

    tile.__name__ = tile.__qualname__ = f"stencil_tile_{R}x{V}"
    return intrinsic(tile)


def _codegen(context, builder, sig, args, R, V):
    out_t, x_t, w_t = sig.args[0], sig.args[3], sig.args[6]
    dt = out_t.dtype
    i64, i32 = ir.IntType(64), ir.IntType(32)
    # (fma: exact integer arithmetic, wrapping like numpy, for integers)
    isz, L, vty, vptr, fma = _vector_ops(context, builder, dt, VECTOR_BYTES)

    def cast(k):
        return context.cast(builder, args[k], sig.args[k], types.int64)

    O = context.make_array(out_t)(context, builder, args[0])
    X = context.make_array(x_t)(context, builder, args[3])
    W = context.make_array(w_t)(context, builder, args[6])
    oi, oj, xi, xj, kh, kw = cast(1), cast(2), cast(4), cast(5), cast(7), cast(8)
    b0 = context.cast(builder, args[9], sig.args[9], dt)
    rso = builder.sdiv(cgutils.unpack_tuple(builder, O.strides, 2)[0], i64(isz))
    rsx = builder.sdiv(cgutils.unpack_tuple(builder, X.strides, 2)[0], i64(isz))
    obase = builder.gep(O.data, [builder.add(builder.mul(oi, rso), oj)])
    xbase = builder.gep(X.data, [builder.add(builder.mul(xi, rsx), xj)])
    undef = ir.Constant(vty, ir.Undefined)
    splat0 = ir.Constant(ir.VectorType(i32, L), [0] * L)

    def splat(v):
        return builder.shuffle_vector(builder.insert_element(undef, v, i32(0)), undef, splat0)

    def vload(ptr, k):
        return builder.load(builder.bitcast(builder.gep(ptr, [i64(k * L)]), vptr), align=isz)

    def loop(n, state, body):
        """for t in range(n): state = body(t, state) (n >= 1), as one LLVM loop whose
        state (a list of vectors) lives in phi nodes: registers."""
        return _phi_loop(builder, n, state, body, "st")

    def row(xrow, taps, acc):
        """One input row: for each kernel column c, its V vectors feed the active output
        rows (taps: {output row i: pointer to its weight row}), one FMA per vector."""
        act = sorted(taps)

        def body(c, st):
            xp = builder.gep(xrow, [c])
            xv = [vload(xp, k) for k in range(V)]
            st = list(st)
            for n, i in enumerate(act):
                wv = splat(builder.load(builder.gep(taps[i], [c])))
                for k in range(V):
                    st[n * V + k] = fma(wv, xv[k], st[n * V + k])
            return st

        res = loop(kw, [acc[i * V + k] for i in act for k in range(V)], body)
        acc = list(acc)
        for n, i in enumerate(act):
            acc[i * V:(i + 1) * V] = res[n * V:(n + 1) * V]
        return acc

    def xrow_at(r):
        return builder.gep(xbase, [builder.mul(r, rsx)])

    def wrow_at(a):
        return builder.gep(W.data, [builder.mul(a, kw)])

    # prefetch the R input rows that the next block of output rows (below this tile)
    # adds, at this tile's columns: walking down a strip, those rows come from memory
    # rows apart, a pattern the hardware prefetchers do not follow
    for p in range(R):
        prow = builder.bitcast(xrow_at(builder.add(kh, i64(R - 1 + p))),
                               ir.IntType(8).as_pointer())
        for m in range(V * VECTOR_BYTES // 64 + 1):
            _prefetch_line(builder, builder.gep(prow, [i64(64 * m)]), False)
    acc = [splat(b0)] * (R * V)
    for r in range(R - 1):                 # ramp-up: input row r feeds rows 0..r
        acc = row(xrow_at(i64(r)), {i: wrow_at(i64(r - i)) for i in range(r + 1)}, acc)

    def steady(t, st):                     # input rows R-1 .. kh-1 feed all R rows
        r = builder.add(t, i64(R - 1))
        return row(xrow_at(r), {i: wrow_at(builder.sub(r, i64(i))) for i in range(R)}, st)

    acc = loop(builder.add(builder.sub(kh, i64(R)), i64(1)), acc, steady)
    for s in range(R - 1):                 # ramp-down: row kh + s feeds rows s+1 .. R-1
        r = builder.add(kh, i64(s))
        acc = row(xrow_at(r), {i: wrow_at(builder.sub(r, i64(i))) for i in range(s + 1, R)},
                  acc)
    stores = []
    for i in range(R):
        orow = builder.gep(obase, [builder.mul(i64(i), rso)])
        stores += [(builder.gep(orow, [i64(k * L)]), acc[i * V + k]) for k in range(V)]
    _store_tile(builder, stores, cast(10), isz)
    return context.get_dummy_value()


def _row_intrinsic(V):
    """A one-row tile of V vectors for kernels of one row (1-D signals): see
    :func:`_codegen_row`."""
    def tile(typingctx, out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, nt_t):
        arrays = (out_t, x_t, w_t)
        if not (all(isinstance(a, types.Array) and a.ndim == 2 for a in arrays)
                and w_t.layout == "C" and isinstance(out_t.dtype, (types.Float, types.Integer))
                and x_t.dtype == out_t.dtype and w_t.dtype == out_t.dtype):
            return None
        sig = types.void(out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, nt_t)
        return sig, lambda context, builder, s, args: _codegen_row(context, builder, s, args, V)

    tile.__name__ = tile.__qualname__ = f"stencil_row_{V}"
    return intrinsic(tile)


def _row_setup(context, builder, sig, args):
    """What the one-row tiles' codegens share: the dtype and its vectors (L lanes of the
    host's width), fused multiply-add (exact integer arithmetic for integers), argument
    casts, the weight array, the bias, the kernel width and the first output / input
    element of the row (with the row strides)."""
    out_t, x_t, w_t = sig.args[0], sig.args[3], sig.args[6]
    dt = out_t.dtype
    i64, i32 = ir.IntType(64), ir.IntType(32)
    isz, L, vty, vptr, fma = _vector_ops(context, builder, dt, VECTOR_BYTES)

    def cast(k):
        return context.cast(builder, args[k], sig.args[k], types.int64)

    O = context.make_array(out_t)(context, builder, args[0])
    X = context.make_array(x_t)(context, builder, args[3])
    W = context.make_array(w_t)(context, builder, args[6])
    b0 = context.cast(builder, args[9], sig.args[9], dt)
    rso = builder.sdiv(cgutils.unpack_tuple(builder, O.strides, 2)[0], i64(isz))
    rsx = builder.sdiv(cgutils.unpack_tuple(builder, X.strides, 2)[0], i64(isz))
    obase = builder.gep(O.data, [builder.add(builder.mul(cast(1), rso), cast(2))])
    xbase = builder.gep(X.data, [builder.add(builder.mul(cast(4), rsx), cast(5))])
    return dt, i64, i32, isz, L, vty, vptr, fma, cast, W, b0, cast(8), obase, xbase, rso, rsx


def _codegen_row(context, builder, sig, args, V):
    """One output row, V vectors of L lanes, kernel row 0 of w (kh = 1). Taps run in
    blocks of L: a block loads the V + 1 input vectors under the tile once and makes the
    input of tap ``s`` of the block for output vector ``v`` by shifting the pair
    (``A[v]``, ``A[v + 1]``) by s lanes (one lane-shuffle, ``valign`` on AVX-512), instead
    of one unaligned load per vector and tap (each straddling two cache lines at 64-byte
    vectors): per block V * L multiply-adds for V + 1 vector loads and L weight
    broadcasts. The blocks stop short of the last tap (reading nothing past the input
    the tile needs); the remaining 1..L taps load their vectors per tap."""
    (dt, i64, i32, isz, L, vty, vptr, fma, cast, W, b0, kw, obase, xbase,
     rso, rsx) = _row_setup(context, builder, sig, args)
    undef = ir.Constant(vty, ir.Undefined)
    splat0 = ir.Constant(ir.VectorType(i32, L), [0] * L)

    def splat(v):
        return builder.shuffle_vector(builder.insert_element(undef, v, i32(0)), undef, splat0)

    def vload(ptr, k):
        return builder.load(builder.bitcast(builder.gep(ptr, [i64(k * L)]), vptr), align=isz)

    def loop(n, state, body, guarded):
        """for t in range(n): state = body(t, state), state in phi nodes (registers);
        ``guarded``: n may be 0."""
        return _phi_loop(builder, n, state, body, "row", guarded)

    def block(m, acc):
        base = builder.gep(xbase, [builder.mul(m, i64(L))])
        wp = builder.gep(W.data, [builder.mul(m, i64(L))])
        A = [vload(base, u) for u in range(V + 1)]
        acc = list(acc)
        for s in range(L):
            wv = splat(builder.load(builder.gep(wp, [i64(s)])))
            mask = ir.Constant(ir.VectorType(i32, L), list(range(s, s + L)))
            for v in range(V):
                sh = A[v] if s == 0 else builder.shuffle_vector(A[v], A[v + 1], mask)
                acc[v] = fma(wv, sh, acc[v])
        return acc

    def tap(t, acc):
        c = builder.add(t, c0)
        xp = builder.gep(xbase, [c])
        wv = splat(builder.load(builder.gep(W.data, [c])))
        return [fma(wv, vload(xp, v), a) for v, a in enumerate(acc)]

    nb = builder.sdiv(builder.sub(kw, i64(1)), i64(L))           # whole blocks
    acc = loop(nb, [splat(b0)] * V, block, guarded=True)
    c0 = builder.mul(nb, i64(L))
    acc = loop(builder.sub(kw, c0), acc, tap, guarded=False)      # 1..L taps
    _store_tile(builder, [(builder.gep(obase, [i64(v * L)]), acc[v]) for v in range(V)],
                cast(10), isz)
    return context.get_dummy_value()


def _stream_intrinsic(S=1, loads=SHIFT_BY_LOADS, pairs=False):
    """A one-row tile of R = stream_vectors(itemsize) vectors (at S places ``dist``
    columns apart) for long one-row kernels, shifted inputs by unaligned ``loads`` or by
    shuffles; with ``pairs`` the lane-paired taps of the fast FIR algorithm: see
    :func:`_codegen_stream`."""
    def tile(typingctx, out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, d_t,
             nt_t):
        arrays = (out_t, x_t, w_t)
        if not (all(isinstance(a, types.Array) and a.ndim == 2 for a in arrays)
                and w_t.layout == "C" and isinstance(out_t.dtype, (types.Float, types.Integer))
                and x_t.dtype == out_t.dtype and w_t.dtype == out_t.dtype):
            return None
        R = _stream_vectors(out_t.dtype.bitwidth // 8)
        sig = types.void(out_t, oi_t, oj_t, x_t, xi_t, xj_t, w_t, kh_t, kw_t, b0_t, d_t, nt_t)
        return sig, lambda context, builder, s, args: _codegen_stream(context, builder, s, args,
                                                                       R, S, loads, pairs)

    tile.__name__ = tile.__qualname__ = \
        f"stencil_stream_{S}{'_loads' if loads else ''}{'_pairs' if pairs else ''}"
    return intrinsic(tile)


def _codegen_stream(context, builder, sig, args, R, S, loads, pairs=False):
    """One output row, R vectors of L lanes, for kernels of one row with at least R whole
    blocks of L taps (nb = (kw - 1) // L >= R). The 1-D correlation as a 2-D one on
    vectors: output vector v takes input vector u = v + j with the taps of block j, and
    the input of tap s of the block is the pair (u, u + 1) shifted by s lanes. So the
    tile walks the input vectors u once (like the multi-row tile walks input rows), makes
    each shifted input once, and every output vector of the tile that uses it (block
    j = u - v) takes it with its own broadcast weight: L - 1 shuffles per R * L
    multiply-adds (the one-row tile: per V * L). Ramp-up, steady and ramp-down phases as
    in :func:`_codegen`; the last 1..L taps load their inputs per tap (never past the
    input the tile needs). With ``loads`` each shifted input is one unaligned load
    instead of a shuffle of the pair (see SHIFT_BY_LOADS).

    With ``pairs``, the lane-paired correlation of the fast FIR algorithm (see
    :func:`_fir_chunk`): ``out[j] = b0 + sum_c W[c, j % 2] * x[j + 2 c]`` for kw taps
    c, even j, the weights a vector per tap (lanes alternating between the even and
    the odd taps' weights): blocks of L / 2 taps, tap s of a block shifting by 2 s."""
    (dt, i64, i32, isz, L, vty, vptr, fma, cast, W, b0, kw, obase0, xbase0,
     rso, rsx) = _row_setup(context, builder, sig, args)
    D = 2 if pairs else 1                                   # input lanes per tap
    B = L // D                                              # taps per block
    dist = cast(10)
    obases = [builder.gep(obase0, [builder.mul(dist, i64(q))]) for q in range(S)]
    xbases = [builder.gep(xbase0, [builder.mul(dist, i64(q))]) for q in range(S)]
    undef = ir.Constant(vty, ir.Undefined)
    splat0 = ir.Constant(ir.VectorType(i32, L), [0] * L)
    masks = [ir.Constant(ir.VectorType(i32, L), list(range(s, s + L))) for s in range(L)]

    def splat(v):
        return builder.shuffle_vector(builder.insert_element(undef, v, i32(0)), undef, splat0)

    def vload(ptr, k):
        return builder.load(builder.bitcast(builder.gep(ptr, [k]), vptr), align=isz)

    def weight(c):
        """The weight of tap c (i64): a broadcast scalar, or a lane vector (pairs)."""
        if pairs:
            return vload(W.data, builder.mul(c, i64(L)))
        return splat(builder.load(builder.gep(W.data, [c])))

    def loop(n, state, body):
        """for t in range(n) (n >= 1): state = body(t, state), state in phi nodes."""
        return _phi_loop(builder, n, state, body, "stream")

    def step(u, active, acc):
        """Input vector u (i64) feeds the output vectors ``active`` (block u - v) of
        each place q (accumulator q * R + v)."""
        ul = builder.mul(u, i64(L))
        vecs = [] if loads else [
            (vload(xb, ul), vload(xb, builder.add(ul, i64(L)))) for xb in xbases]
        acc = list(acc)
        taps = {v: builder.mul(builder.sub(u, i64(v)), i64(B)) for v in active}
        for s in range(B):
            if loads:
                shs = [vload(xb, builder.add(ul, i64(D * s))) for xb in xbases]
            else:
                shs = [a0 if s == 0 else builder.shuffle_vector(a0, a1, masks[D * s])
                       for a0, a1 in vecs]
            for v in active:
                wv = weight(builder.add(taps[v], i64(s)))
                for q, sh in enumerate(shs):
                    acc[q * R + v] = fma(wv, sh, acc[q * R + v])
        return acc

    nb = builder.sdiv(builder.sub(kw, i64(1)), i64(B))     # whole blocks, >= R (caller)
    acc = [splat(b0)] * (R * S)
    for u in range(R - 1):                                  # ramp-up
        acc = step(i64(u), range(u + 1), acc)
    acc = loop(builder.add(builder.sub(nb, i64(R)), i64(1)), acc,      # steady
               lambda t, st: step(builder.add(t, i64(R - 1)), range(R), st))
    for t in range(R - 1):                                  # ramp-down
        acc = step(builder.add(nb, i64(t)), range(t + 1, R), acc)
    c0 = builder.mul(nb, i64(B))

    def tap(t, st):                                         # the last 1..B taps
        c = builder.add(t, c0)
        wv = weight(c)
        xc = builder.mul(c, i64(D))
        return [fma(wv, vload(xbases[k // R], builder.add(xc, i64((k % R) * L))), a)
                for k, a in enumerate(st)]

    acc = loop(builder.sub(kw, c0), acc, tap)
    _store_tile(builder, [(builder.gep(obases[k // R], [i64((k % R) * L)]), acc[k])
                          for k in range(R * S)], cast(11), isz)
    return context.get_dummy_value()


# tiles of R = 1..ROWS output rows (R <= kh, R <= the output's height), VECTORS wide
# and HALF wide (outputs narrower than a full tile: depthwise layers' small planes; and
# the rest of a row after whole tiles where a half tile covers it)
_w1, _w2, _w3, _w4 = (_stencil_intrinsic(R, VECTORS) for R in range(1, ROWS + 1))
_h1, _h2, _h3, _h4 = (_stencil_intrinsic(R, HALF) for R in range(1, ROWS + 1))
# one-row kernels (1-D signals): 4 vectors, their inputs shifted in registers
ROW_VECTORS = 4
_r1 = _row_intrinsic(ROW_VECTORS)
# ... and for kernels of at least stream_vectors() whole blocks of taps, the tile that walks
# its input vectors once, at two places of the row at a time (each weight broadcast feeds
# both: 4 vectors x 2 places measured ~10 % faster than 6 x 1, 4-12 x 1 slower still, at
# 101 float64 taps on AVX-512). On AVX2 (inputs by loads) 5 x 2: 10 accumulators of 16
# registers, for 8-byte elements; 101 float64 taps, 1e6 samples, three runs in one
# process (AMD Zen 3): 94.5-95.2 GFLOP/s against 88.6-89.7 with 4 x 2 (6 x 2: 94.2-96.3).
# float32 ran level, and keeps 4 (5 would need 41 taps, not 33, for this tile)
STREAM_VECTORS = 4
STREAM_VECTORS_8BYTE = 4 if VECTOR_BYTES == 64 else 5      # 8-byte elements


def _stream_vectors(itemsize):
    """Vectors of the streaming tile for elements of ``itemsize`` bytes."""
    return STREAM_VECTORS_8BYTE if itemsize == 8 else STREAM_VECTORS


stream_vectors = njit(inline="always", **JIT)(_stream_vectors)   # (in kernels too)
_s1 = _stream_intrinsic(1)
_s2 = _stream_intrinsic(2)
_p2 = _stream_intrinsic(2, pairs=True)     # the fast FIR algorithm's lane-paired taps


@njit(inline="always", **JIT)
def _tile(out, oi, oj, x, xi, xj, w, kh, kw, b0, R, wide, nt):
    # out[oi + i, oj + j] = b0 + sum_{a, c} w[a, c] * x[xi + i + a, xj + j + c] for the
    # R rows i and the columns j of a full (wide) or half tile
    if wide:
        if R == 4:
            _w4(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        elif R == 3:
            _w3(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        elif R == 2:
            _w2(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        else:
            _w1(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
    else:
        if R == 4:
            _h4(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        elif R == 3:
            _h3(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        elif R == 2:
            _h2(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)
        else:
            _h1(out, oi, oj, x, xi, xj, w, kh, kw, b0, nt)


@njit(**JIT)
def _narrow_rows(out, oi, R, oj0, oj1, x, xi, xj0, w, b0):
    # the definition, for columns [oj0, oj1) of output rows [oi, oi + R) (outputs
    # narrower than a vector); output (oi + i, oj0 + j) reads x from (xi + i, xj0 + j)
    kh, kw = w.shape
    for i in range(R):
        for j in range(oj1 - oj0):
            s = b0
            for a in range(kh):
                for c in range(kw):
                    s += w[a, c] * x[xi + i + a, xj0 + j + c]
            out[oi + i, oj0 + j] = s


@njit(**JIT)
def _rows(out, oi, R, oj0, oj1, x, xi, xj0, w, b0, tw, nt):
    # output rows [oi, oi + R) x columns [oj0, oj1), output (oi + i, oj0 + j) reading x
    # from (xi + i, xj0 + j): tiles from oj0; the rest of the columns after whole tiles
    # in a half tile where one covers it, else in a last tile overlapping its neighbour
    # (its outputs recomputed and overwritten); half tiles below a full tile, the
    # definition below a half tile. One-row kernels: the streaming tile in pairs of
    # adjacent tiles, or the row tile, where they fit
    kh, kw = w.shape
    dx = xj0 - oj0
    if kh == 1:                     # 1-D: the one-row tiles where they fit
        lanes = tw // VECTORS
        sv = stream_vectors(VECTOR_BYTES // lanes)
        sw = lanes * sv
        if (kw - 1) // lanes >= sv and oj1 - oj0 >= sw:
            # pairs of adjacent tiles (places sw apart): one input stream per task, not
            # two half a strip apart; as fast or faster (1e6 x 101 float64, two runs:
            # 2.07-2.08 against 2.09-2.15 ms), and no place distances near a multiple
            # of 4 KB, whose loads and stores would share L1 sets
            for t in range((oj1 - oj0) // sw // 2):
                j = oj0 + 2 * t * sw
                _s2(out, oi, j, x, xi, j + dx, w, kh, kw, b0, sw, nt)
            j = oj0 + (oj1 - oj0) // sw // 2 * 2 * sw
            while j + sw <= oj1:
                _s1(out, oi, j, x, xi, j + dx, w, kh, kw, b0, 0, nt)
                j += sw
            if j < oj1:
                _s1(out, oi, oj1 - sw, x, xi, oj1 - sw + dx, w, kh, kw, b0, 0, nt)
            return
        rw = lanes * ROW_VECTORS
        if oj1 - oj0 >= rw:
            j = oj0
            while j + rw <= oj1:
                _r1(out, oi, j, x, xi, j + dx, w, kh, kw, b0, nt)
                j += rw
            if j < oj1:
                _r1(out, oi, oj1 - rw, x, xi, oj1 - rw + dx, w, kh, kw, b0, nt)
            return
    wide = oj1 - oj0 >= tw
    hw = tw * HALF // VECTORS
    if not wide:
        tw = hw
        if oj1 - oj0 < tw:
            _narrow_rows(out, oi, R, oj0, oj1, x, xi, xj0, w, b0)
            return
    j = oj0
    while j + tw <= oj1:
        _tile(out, oi, j, x, xi, j + dx, w, kh, kw, b0, R, wide, nt)
        j += tw
    if j < oj1:
        if wide and oj1 - j <= hw:          # the rest fits a half tile
            _tile(out, oi, oj1 - hw, x, xi, oj1 - hw + dx, w, kh, kw, b0, R, False, nt)
        else:
            _tile(out, oi, oj1 - tw, x, xi, oj1 - tw + dx, w, kh, kw, b0, R, wide, nt)


@njit(inline="always", **JIT)
def _src(p, n, mode):
    # index into an axis of length n of position p of the extended axis (p < 0 or
    # p >= n outside): the same position, -1 for the fill value (mode 0), wrapped
    # (mode 1, 'circular') or mirrored with the edge sample repeated (mode 2,
    # 'symmetric'); as fastconv._pad.source_index
    if p >= 0 and p < n:
        return p
    if mode == 0:
        return -1
    if mode == 1:
        return p % n
    q = p % (2 * n)
    return q if q < n else 2 * n - 1 - q


@njit(**JIT)
def _extended(buf, x, r0, nr, c0, nc, pt, pl, mode, fill):
    # buf[:nr, :nc] = rows [r0, r0 + nr) x columns [c0, c0 + nc) of x extended by pt
    # rows before and pl columns before (and as far as needed after) with ``mode``
    H, W = x.shape
    for r in range(nr):
        sr = _src(r0 + r - pt, H, mode)
        if sr < 0:
            for c in range(nc):
                buf[r, c] = fill
        else:
            for c in range(nc):
                p = c0 + c - pl
                if p >= 0 and p < W:
                    buf[r, c] = x[sr, p]
                else:
                    sc = _src(p, W, mode)
                    buf[r, c] = x[sr, sc] if sc >= 0 else fill


@njit(**JIT)
def _edge_definition(out, oi, R, oj0, oj1, x, pt, pl, mode, fill, w, b0):
    # the definition with the extension read in place, for output rows [oi, oi + R) x
    # columns [oj0, oj1): a few edge columns of a small kernel
    H, W = x.shape
    kh, kw = w.shape
    for i in range(oi, oi + R):
        for j in range(oj0, oj1):
            s = b0
            for a in range(kh):
                sr = _src(i + a - pt, H, mode)
                for c in range(kw):
                    sc = _src(j + c - pl, W, mode)
                    s += w[a, c] * (x[sr, sc] if sr >= 0 and sc >= 0 else fill)
            out[i, j] = s


@njit(inline="always", **JIT)
def _in_place(i, R, kh, pt, H, inner):
    # whether the block of output rows [i, i + R) reads its input inside x (rows and
    # the strip's inner columns), in place; else from a copy of the extension (buf)
    return i >= pt and i + R + kh - 1 <= pt + H and inner


@njit(inline="always", **JIT)
def _scratch(rows, cols, dtype):
    # a per-task buffer, as a view of any layout ([:, :]) like x's planes: the tiles are
    # then compiled once (in _rows), not once for such views and once for whole arrays
    return np.empty((rows, cols), dtype)[:, :]


@njit(**JIT)
def _from_extension(out, oi, R, oj0, oj1, x, pt, pl, mode, fill, w, b0, tw, nt, buf):
    # output rows [oi, oi + R) x columns [oj0, oj1) from a copy of the extended input
    # they read, in buf (at least R + kh - 1 rows of oj1 - oj0 + kw - 1 columns)
    kh, kw = w.shape
    _extended(buf, x, oi, R + kh - 1, oj0, oj1 - oj0 + kw - 1, pt, pl, mode, fill)
    z = oi - oi                 # 0, typed int64: a literal 0 would compile _rows again
    _rows(out, oi, R, oj0, oj1, buf, z, z, w, b0, tw, nt)


@njit(inline="always", **JIT)
def _by_definition(ncols, R, kh, kw, tw):
    # a few edge columns: the definition costs less than copying their rows' input,
    # widened to a tile, into a buffer (R output rows' share of it)
    return ncols * R * kh * kw <= R * (tw + kw - 1)


@njit(inline="always", **JIT)
def _plane_buffers(OH, OW, kh, kw, tw, dtype):
    # _plane_from_copy's buffers for (OH, OW) planes: the copy of the extended input
    # (OH + kh - 1 rows of max(OW, hw) + kw - 1 columns) and, below a half tile (hw
    # columns), the half tiles' output plane (OH x hw). Allocated in _stencil2d's parallel
    # loop, where numba hoists them out of it (once per thread, not once per plane:
    # allocated per plane, in _plane_from_copy itself, depthwise 3x3 on 7x7 planes, N=8,
    # C=256, float32 took 1.09 ms against 0.49)
    hw = tw * HALF // VECTORS
    narrow = OW < hw
    return (_scratch(OH + kh - 1, max(OW, hw) + kw - 1, dtype),
            _scratch(OH if narrow else 0, hw if narrow else 0, dtype))


@njit(**JIT)
def _plane_from_copy(ob, xb, w, b0, pt, pl, mode, fill, R, tw, nt, buf, obuf):
    # A whole small output plane (OH, OW) from one copy of its extended input in buf
    # (_plane_buffers), instead of one copy per block of R rows (their kh - 1 shared
    # rows copied again each time). Outputs narrower than a half tile (hw columns) are
    # computed by half tiles into obuf (the columns past the copy's are zeros, feeding
    # only the outputs past OW) and copied out, instead of by the scalar definition
    OH, OW = ob.shape
    kh, kw = w.shape
    hw = tw * HALF // VECTORS
    z = R - R
    _extended(buf, xb, z, OH + kh - 1, z, OW + kw - 1, pt, pl, mode, fill)
    if OW < hw:                 # the half tiles' columns past the copy: zeros, not
        for r in range(OH + kh - 1):    # leftovers (NaN or subnormal: slow, or FP flags)
            for c in range(OW + kw - 1, hw + kw - 1):
                buf[r, c] = 0
    for rb in range((OH + R - 1) // R):
        i = min(rb * R, OH - R)
        if OW >= hw:
            _rows(ob, i, R, z, z + OW, buf, i, z, w, b0, tw, nt)
        else:
            _tile(obuf, i, z, buf, i, z, w, kh, kw, b0, R, False, R != R)   # (no nt: read back)
    if OW < hw:
        for i in range(OH):
            for j in range(OW):
                ob[i, j] = obuf[i, j]


@njit(parallel=True, **JIT)
def _stencil2d(out, x, w, bias, pt, pl, mode, fill, R, cw, gb, tw, nt, whole):
    # out: (N, G, OH, OW)   x: (N, G, H, W), extended by pt rows before and pl columns
    # before (and after: up to OH + kh - 1 rows, OW + kw - 1 columns) by ``mode``
    # (0: the value ``fill``, 1: wrapped, 2: mirrored)   w: (G, kh, kw); unit column
    # strides. Tasks: (image, channel, strip of cw columns, group of gb blocks of R
    # output rows). A task walks down its strip block by block: the strip's input rows
    # (kh + R - 1 of them, cw + kw - 1 wide) stay in L1 while the block below reuses
    # kh - 1 of them. The last row block and column tile overlap their neighbours.
    # Blocks whose input lies inside x read it in place; those reading the extension
    # read a copy of it in a small per-task buffer: the edge rows' blocks a copy of
    # their rows, the others' edge columns one copy of the columns for the whole task
    # (for a few edge columns of a small kernel, the definition instead). With
    # ``whole`` (whole_planes: small padded planes, or planes narrower than a half tile;
    # one task each: cw = OW, gb = all row blocks), the plane from one copy of its
    # extended input (_plane_from_copy).
    # With nt, the tiles' aligned stores are non-temporal.
    N, G, OH, OW = out.shape
    H, W = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    nrb = (OH + R - 1) // R
    ns = (OW + cw - 1) // cw
    ng = (nrb + gb - 1) // gb
    for task in prange(N * G * ns * ng):
        q = task % ng
        r = task // ng
        sg = r % ns
        r = r // ns
        g = r % G
        n = r // G
        j0 = sg * cw
        j1 = min(j0 + cw, OW)
        if j1 - j0 < tw and OW >= tw:        # a short last strip: start it a tile earlier
            j0 = j1 - tw
        ob, xb, wb, b0 = out[n, g], x[n, g], w[g], bias[g]
        if whole:
            buf, obuf = _plane_buffers(OH, OW, kh, kw, tw, x.dtype)
            _plane_from_copy(ob, xb, wb, b0, pt, pl, mode, fill, R, tw, nt, buf, obuf)
            if nt:
                _store_fence()
            continue
        # the strip's columns whose inputs lie inside x: [ja, jb)
        ja = max(j0, pl)
        jb = min(j1, pl + W - kw + 1)
        inner = jb - ja >= min(tw, j1 - j0)
        rb0, rb1 = q * gb, min((q + 1) * gb, nrb)
        copies = False                      # a block reads a copy of its rows: buf
        for rb in range(rb0, rb1):
            if not _in_place(min(rb * R, OH - R), R, kh, pt, H, inner):
                copies = True
        buf = _scratch(R + kh - 1 if copies else 0, j1 - j0 + kw - 1 if copies else 0,
                       x.dtype)
        # edge columns of a larger kernel: the task's rows of the input they read (widened
        # to a tile, reaching into the interior, whose outputs they recompute), copied once
        ia = min(rb0 * R, OH - R)
        nr = min((rb1 - 1) * R, OH - R) + R - ia + kh - 1
        left = inner and ja > j0 and not _by_definition(ja - j0, R, kh, kw, tw)
        right = inner and jb < j1 and not _by_definition(j1 - jb, R, kh, kw, tw)
        le = min(j1, max(ja, j0 + tw))
        rs = max(j0, min(jb, j1 - tw))
        lbuf = _scratch(nr if left else 0, le - j0 + kw - 1 if left else 0, x.dtype)
        rbuf = _scratch(nr if right else 0, j1 - rs + kw - 1 if right else 0, x.dtype)
        if left:
            _extended(lbuf, xb, ia, nr, j0, le - j0 + kw - 1, pt, pl, mode, fill)
        if right:
            _extended(rbuf, xb, ia, nr, rs, j1 - rs + kw - 1, pt, pl, mode, fill)
        for rb in range(rb0, rb1):
            i = min(rb * R, OH - R)
            if _in_place(i, R, kh, pt, H, inner):
                _rows(ob, i, R, ja, jb, xb, i - pt, ja - pl, wb, b0, tw, nt)
                z = i - i       # 0, typed int64: a literal 0 would compile _rows again
                if left:
                    _rows(ob, i, R, j0, le, lbuf, i - ia, z, wb, b0, tw, nt)
                elif ja > j0:
                    _edge_definition(ob, i, R, j0, ja, xb, pt, pl, mode, fill, wb, b0)
                if right:
                    _rows(ob, i, R, rs, j1, rbuf, i - ia, z, wb, b0, tw, nt)
                elif jb < j1:
                    _edge_definition(ob, i, R, jb, j1, xb, pt, pl, mode, fill, wb, b0)
            else:
                _from_extension(ob, i, R, j0, j1, xb, pt, pl, mode, fill, wb, b0, tw, nt, buf)
        if nt:
            _store_fence()


@intrinsic
def _row_pointer(typingctx, a_t, i_t, j_t):
    """The address of ``a[i, j]`` (a 2-D array), for ``numba.carray``: a C-contiguous
    view of a row of unit stride, whose loops LLVM vectorizes (an 'A'-typed row's
    runtime stride it does not)."""
    if not (isinstance(a_t, types.Array) and a_t.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        return _item_pointer(context, builder, sig, args, 0, [1, 2])

    return types.CPointer(a_t.dtype)(a_t, i_t, j_t), codegen


def _prefetch_intrinsic(write):
    def prefetch(typingctx, a_t, i_t, j_t):
        """Prefetch the cache line of ``a[i, j]`` (2-D) into L1, for reading or writing
        (a hint: no fault past the array)."""
        if not (isinstance(a_t, types.Array) and a_t.ndim == 2):
            return None

        def codegen(context, builder, sig, args):
            _prefetch_line(builder, _item_pointer(context, builder, sig, args, 0, [1, 2]), write)
            return context.get_dummy_value()

        return types.void(a_t, i_t, j_t), codegen

    prefetch.__name__ = prefetch.__qualname__ = f"prefetch_{'w' if write else 'r'}"
    return intrinsic(prefetch)


_prefetch, _prefetch_w = _prefetch_intrinsic(False), _prefetch_intrinsic(True)


@intrinsic
def _fir_combine(typingctx, y_t, yi_t, yj_t, a_t, q_t, b0_t, n_t):
    """The fast FIR algorithm's last step (see :func:`_fir_chunk`), a vector at a time:
    ``y[yi, yj + j] = b0 + (P[j] if j is even else Q[j // 2] - P[j])`` for j < n (a
    multiple of the lanes), ``P[j] = A[j] + A[j + 1]``; ``a``: the row A (n + 1), ``q``:
    the row Q (n / 2), 2-D rows of unit stride; n a multiple of FIR_UNROLL vectors.
    Returns whether every y is finite (running ``fma(y, 0, acc)``, FIR_UNROLL of them
    against their latency, turn NaN at the first infinity or NaN)."""
    if not (all(isinstance(t, types.Array) and t.ndim == 2 for t in (y_t, a_t, q_t))
            and isinstance(y_t.dtype, types.Float) and a_t.dtype == y_t.dtype
            and q_t.dtype == y_t.dtype):
        return None

    def codegen(context, builder, sig, args):
        dt = y_t.dtype
        i64, i32 = ir.IntType(64), ir.IntType(32)
        U = FIR_UNROLL
        isz, L, vty, _, fma = _vector_ops(context, builder, dt, VECTOR_BYTES)
        hty = ir.VectorType(vty.element, L // 2)
        zero = i64(0)
        yp = _item_pointer(context, builder, sig, args, 0, [1, 2])
        ap = _item_pointer(context, builder, sig, args, 3, [zero, zero])
        qp = _item_pointer(context, builder, sig, args, 4, [zero, zero])
        n = context.cast(builder, args[6], sig.args[6], types.intp)
        b0 = context.cast(builder, args[5], sig.args[5], dt)
        undef = ir.Constant(vty, ir.Undefined)
        b0v = builder.shuffle_vector(builder.insert_element(undef, b0, i32(0)), undef,
                                     ir.Constant(ir.VectorType(i32, L), [0] * L))
        odd = ir.Constant(ir.VectorType(ir.IntType(1), L), [k % 2 for k in range(L)])
        twice = ir.Constant(ir.VectorType(i32, L), [k // 2 for k in range(L)])
        vzero = ir.Constant(vty, [0.0] * L)

        def load(ty, p, k):
            return builder.load(builder.bitcast(builder.gep(p, [k]), ty.as_pointer()),
                                align=isz)

        def body(t, st):
            res = []
            for u in range(U):
                j = builder.mul(builder.add(builder.mul(t, i64(U)), i64(u)), i64(L))
                P = builder.fadd(load(vty, ap, j), load(vty, ap, builder.add(j, i64(1))))
                qh = load(hty, qp, builder.lshr(j, i64(1)))
                Q = builder.shuffle_vector(qh, ir.Constant(hty, ir.Undefined), twice)
                y = builder.fadd(b0v, builder.select(odd, builder.fsub(Q, P), P))
                builder.store(y, builder.bitcast(builder.gep(yp, [j]), vty.as_pointer()),
                              align=isz)
                res.append(fma(y, vzero, st[u]))
            return res

        accs = _phi_loop(builder, builder.sdiv(n, i64(U * L)), [vzero] * U, body,
                         "combine", guarded=True)
        acc = accs[0]
        for a in accs[1:]:
            acc = builder.fadd(acc, a)
        ok = builder.fcmp_ordered("==", acc, vzero)           # false for NaN lanes
        res = builder.extract_element(ok, i32(0))
        for k in range(1, L):
            res = builder.and_(res, builder.extract_element(ok, i32(k)))
        return res

    return types.boolean(y_t, yi_t, yj_t, a_t, q_t, b0_t, n_t), codegen


@njit(**JIT)
def _fir_chunk(ob, oi, j0, C, xb, xi, xj0, kw, wx, ws, b0, a2, s2, q2, tw):
    # Output row oi, columns [j0, j0 + C), of the one-row correlation with w (kw taps) by
    # the 2-parallel fast FIR algorithm (Karatsuba on the taps' even and odd phases),
    # reading x's row xi from column xj0 in place (the chunk's windows, x[xj0 : xj0 + C +
    # kw - 1]). With we[k] = w[2k], wo[k] = w[2k + 1] (0 past the last tap), nk =
    # ceil(kw / 2):
    #   A[j] = sum_k (we[k] if j even else wo[k]) * x[j + 2k]   (lane-paired tile, C + 1)
    #   Q[m] = sum_k (we[k] + wo[k]) * s[m + k],  s[m] = x[2m + 1] + x[2m + 2]   (C / 2)
    #   out[2m] = b0 + A[2m] + A[2m + 1],  out[2m + 1] = b0 + Q[m] - (A[2m + 1] + A[2m + 2])
    # 1.5 nk multiply-adds per output instead of kw. An odd output's sums hold its
    # neighbours' terms (w[c] x[j + c +- 1]), which cancel up to rounding: its error is
    # relative to those terms too (for odd kw one input past its window, x[j + kw], is
    # one of them), as Winograd's is relative to its tile's inputs. The chunk's last
    # window ends at x[xj0 + C + kw - 2]; for odd kw, A[C] and the last s also take
    # x[xj0 + C + kw - 1] (times we[nk - 1]) only to cancel it: 0 is used instead, and
    # nothing past the windows is read. wx: (1, nk * lanes) the lane weights, ws: (1, nk);
    # a2, s2, q2: scratch rows (C + 1, C / 2 + nk - 1, C / 2). Writes the whole chunk and
    # returns whether every output is finite: a NaN or infinite input it reads reaches
    # one (every input meets a weight in some A[j], j <= C, and 0 * inf is NaN), as does
    # an overflow of its sums, so that the caller recomputes such chunks by the direct
    # sums (Q - A - A would turn an infinity into NaN). C: a multiple of two streaming
    # tiles and of the combination's step.
    nk = ws.shape[1]
    h = C // 2
    lanes = tw // VECTORS
    xr = carray(_row_pointer(xb, xi, xj0), C + kw - 1)
    s = carray(_row_pointer(s2, 0, 0), h + nk - 1)
    for m in range(h + nk - 2):
        s[m] = xr[2 * m + 1] + xr[2 * m + 2]
    # x[C + 2 nk - 2]: the last window's last input (even kw), or past it (odd kw: 0)
    far = xr[C + 2 * nk - 2] if kw % 2 == 0 else wx[0, 0] * 0
    s[h + nk - 2] = xr[C + 2 * nk - 3] + far
    z = oi - oi                            # 0, typed int64 (as _rows' other calls)
    sw = lanes * stream_vectors(VECTOR_BYTES // lanes)
    line = 64 // (VECTOR_BYTES // lanes)    # elements per cache line
    for t in range(C // (2 * sw)):
        j = 2 * t * sw
        _p2(a2, z, j, xb, xi, xj0 + j, wx, z, nk, z, sw, False)
        # the next chunk's input and output lines, while this one's multiply-adds run
        # (its pass over s and its combination would wait on memory): 0.94-0.99x the
        # time without, 1e6 x 101 float64, in three runs
        for p in range(0, 2 * sw, line):
            _prefetch(xb, xi, xj0 + C + j + p)
            _prefetch_w(ob, oi, j0 + C + j + p)
    a = carray(_row_pointer(a2, 0, 0), C + 1)
    e = wx[0, 0] * 0
    for k in range(nk - 1):                # A[C], an even output: the taps we
        e += wx[0, k * lanes] * xr[C + 2 * k]
    a[C] = e + wx[0, (nk - 1) * lanes] * far
    _rows(q2, z, z + 1, z, z + h, s2, z, z, ws, wx[0, 0] * 0, tw, oi != oi)
    return _fir_combine(ob, oi, j0, a2, q2, b0, C)


@njit(parallel=True, **JIT)
def _fir1d(out, x, w, wx, ws, bias, pl, mode, fill, C, ng, tw, nt):
    # stencil2d's one-row kernels (kh = 1, no row padding) by the fast FIR algorithm:
    # tasks are (image, channel, row, group of chunks: ng groups per row, as equal as
    # they come, so that numba's equal shares of the tasks are equal work; 1e6 x 101
    # float64 in groups of ceil(501 / 16) chunks gave one thread 256 chunks, the other
    # 245). The chunks: the first hd = min(pl, OW) columns (whose windows start in the
    # padding), then C columns at a time from column hd (their windows in x from its
    # first column). Chunks of C columns whose windows lie in x and whose outputs come
    # out finite by _fir_chunk; the others (the edges, the last partial chunk) by the
    # direct sums: _rows in place, or from a copy of the extension, as _stencil2d
    N, G, OH, OW = out.shape
    W = x.shape[3]
    kw = w.shape[2]
    nk = ws.shape[2]
    hd = min(pl, OW)
    nc = (1 if hd > 0 else 0) + (OW - hd + C - 1) // C
    ntg = ng
    for task in prange(N * G * OH * ntg):
        q = task % ntg
        r = task // ntg
        i = r % OH
        r = r // OH
        g = r % G
        n = r // G
        ob, xb, wb, b0 = out[n, g], x[n, g], w[g], bias[g]
        z = i - i
        a2 = _scratch(1, C + 1, x.dtype)
        s2 = _scratch(1, C // 2 + nk - 1, x.dtype)
        q2 = _scratch(1, C // 2, x.dtype)
        e2 = _scratch(1, max(C, hd) + kw - 1, x.dtype)     # (the head: pl columns)
        for c in range(q * nc // ntg, (q + 1) * nc // ntg):
            if hd > 0:
                j0 = 0 if c == 0 else hd + (c - 1) * C
                j1 = hd if c == 0 else min(j0 + C, OW)
            else:
                j0 = c * C
                j1 = min(j0 + C, OW)
            xj0 = j0 - pl
            inside = xj0 >= 0 and xj0 + j1 - j0 + kw - 1 <= W
            if inside and j1 - j0 == C:
                if _fir_chunk(ob, i, j0, C, xb, i, xj0, kw, wx[g], ws[g], b0, a2, s2, q2, tw):
                    continue
            if inside:
                _rows(ob, i, z + 1, j0, j1, xb, i, xj0, wb, b0, tw, nt)
            else:
                _from_extension(ob, i, z + 1, j0, j1, xb, z, pl, mode, fill, wb, b0, tw, nt,
                                e2)
        if nt:
            _store_fence()


# bytes of one fast-FIR chunk's outputs (its A row): 24 KB ran 0.4-1.5 % faster than 16
# in three runs of 1e6 x 101 float64 (8-64 KB all within 4 %)
FIR_CHUNK_BYTES = 24 << 10
FIR_UNROLL = 4                  # vectors per step of _fir_combine
# The fast FIR path's time per output, in the direct tile's multiply-adds: FIR_MAC_SCALE
# per multiply-add of its tiles (1.5 nk) plus FIR_PASS_MACS for its passes (s, the
# combination, the chunk's calls). Fitted in cache on one core of the AVX2 development
# machine (AMD Zen 3), float64, ns per output fast FIR / direct: 41 taps 2.10 / 1.86,
# 61: 2.87 / 2.70, 81: 3.48 / 3.61, 101: 4.21 / 4.46, 151: 5.43 / 6.19, 201: 7.14 / 8.69,
# 401: 13.68 / 16.33 (float32, 4096 columns: 81 taps 0.88x, 101: 0.96x, 201: 0.92x,
# 401: 0.88x). Below FIR_MIN_TAPS taps the direct tile is as fast or faster.
FIR_MAC_SCALE = 1.05
FIR_PASS_MACS = 18.0
FIR_MIN_TAPS = 81


def fir_chunk(kw, itemsize, OW=None):
    """Output columns per chunk of the fast FIR path for one-row kernels of ``kw`` taps
    and elements of ``itemsize`` bytes (a multiple of two lane-paired streaming tiles
    and of the combination's step), or 0 where that path does not apply: fewer than
    FIR_MIN_TAPS taps, fewer than the lane-paired tile's vectors' whole blocks of taps
    (nk = ceil(kw / 2), blocks of lanes / 2), or (given) ``OW`` output columns, fewer
    than a chunk. (The signal cost model asks this too.)"""
    L = VECTOR_BYTES // itemsize
    R = _stream_vectors(itemsize)
    nk = (kw + 1) // 2
    if kw < FIR_MIN_TAPS or (nk - 1) // (L // 2) < R:
        return 0
    unit = 2 * R * L * FIR_UNROLL // math.gcd(2 * R, FIR_UNROLL)   # tile pairs, combine steps
    C = max(unit, FIR_CHUNK_BYTES // itemsize // unit * unit)
    return 0 if OW is not None and OW < C else C


def fir_macs(kw):
    """The fast FIR path's time per output in the direct tile's multiply-adds (kw of
    them per output): its tiles' 1.5 ceil(kw / 2) and its passes (see FIR_MAC_SCALE)."""
    return FIR_MAC_SCALE * 1.5 * ((kw + 1) // 2) + FIR_PASS_MACS


def _fir_weights(w, lanes):
    """(G, 1, kw) -> the lane weights (G, 1, nk * lanes) (even lanes the even taps, odd
    lanes the odd ones, 0 past the last), the phase sums (G, 1, nk) and whether those
    are finite (if not, the direct sums run: NaN and inf where they put them); cached
    per kernel (their ~30 us were 1.5 % of a 1e6-sample call)."""
    return _fir_weights_of(w.tobytes(), w.shape, w.dtype.str, lanes)


@functools.lru_cache(maxsize=64)
def _fir_weights_of(data, shape, dtype, lanes):
    w = np.frombuffer(data, dtype).reshape(shape)
    G, _, kw = w.shape
    nk = (kw + 1) // 2
    we = w[:, 0, 0::2]
    wo = np.zeros_like(we)
    wo[:, :kw // 2] = w[:, 0, 1::2]
    wx = np.empty((G, nk, lanes), w.dtype)
    wx[:, :, 0::2] = we[:, :, None]
    wx[:, :, 1::2] = wo[:, :, None]
    ws = np.ascontiguousarray((we + wo)[:, None, :])
    return wx.reshape(G, 1, nk * lanes), ws, bool(np.isfinite(ws).all())


L1_BYTES = 24 << 10      # input of one strip (kh + R - 1 rows): half of a typical L1
# padded planes whose extended input (widened to a half tile) fits run whole, one task
# each, from one copy of it (_plane_from_copy), when there are enough planes for the
# threads
WHOLE_PLANE_BYTES = 8 << 10


def whole_planes(planes, OH, OW, kh, kw, itemsize, padded, target=None):
    """Whether stencil2d runs each of ``planes`` (OH, OW) output planes whole, from one
    copy of its extended input (_plane_from_copy): padded planes, or planes narrower than
    a half tile (whose half tiles need the copy's wider rows), whose copy fits
    WHOLE_PLANE_BYTES, and enough of them for the threads. (The planner asks this too.)
    Depthwise 3x3, N=8, C=256, padding 1, float32, the stencil alone: 7x7 planes 0.26 ms
    against 1.05 (one copy per block of rows, the scalar definition below a half tile),
    14x14 0.70 against 1.85."""
    hw = half_width(itemsize)
    target = n_tasks_target() if target is None else target
    return (padded or OW < hw) and planes >= target and \
        (OH + kh - 1) * (max(OW, hw) + kw - 1) * itemsize <= WHOLE_PLANE_BYTES


def _strip(OW, kh, kw, R, isz, tw):
    """Columns of one strip: whole tiles whose input rows fit L1_BYTES (at least one
    tile; the whole width when that fits), as even as whole tiles allow: numba hands
    each thread an equal share of the tasks, so a narrow last strip would leave one
    thread with less work (1024 columns of float64 at k = 3: 480 + 480 + 64, one thread
    doing 70 % of the work, against 352 + 352 + 320)."""
    cols = L1_BYTES // ((kh + R - 1) * isz) - (kw - 1)
    cw = max(tw, cols // tw * tw)
    if cw >= OW:
        return OW
    ns = -(-OW // cw)
    even = -(-OW // ns)
    return -(-even // tw) * tw


def rows_for(kh, OH):
    """Output rows per tile: ROWS, or fewer for short kernels and outputs."""
    return max(1, min(ROWS, kh, OH))


EXTENSIONS = {"fill": 0, "zeros": 0, "circular": 1, "wrap": 1, "symmetric": 2, "symm": 2}


def stencil2d(out, x, w, bias=None, pads=None, boundary="fill", fill=0, nt=None, fir=False):
    """``out[n, g] = bias[g] + valid correlation of xe[n, g] with w[g]`` (see the module
    docstring), ``xe`` being ``x`` extended by ``pads = ((top, bottom), (left, right))``
    (default none) with ``boundary``: 'fill' (the value ``fill``), 'circular' ('wrap')
    or 'symmetric' ('symm'), as scipy.signal.convolve2d's boundaries. The extension is
    never materialised: blocks of outputs reading only ``x`` read it in place, the edges
    a small copy. ``out``: (N, G, OH, OW), OH = H + top + bottom - kh + 1 and OW = W +
    left + right - kw + 1; ``x``: (N, G, H, W), any strides (rows of unit stride run in
    place); ``w``: (G, kh, kw). float32, float64 or int64. ``nt``: write the output with
    non-temporal stores (default: at least NT_MIN_BYTES of output and at most NT_MAX_TAPS
    taps). ``fir``: one-row kernels of floats long enough for :func:`fir_chunk` may run
    the 2-parallel fast FIR algorithm (:func:`_fir_chunk`: 3/4 of the multiply-adds; the
    error of an odd output relative to its own and its two neighbours' terms; chunks
    with a NaN or infinite input or output by the direct sums, so that NaN and inf sit
    where they put them, except that outputs whose direct sums overflow may come out
    finite). Returns ``out``."""
    N, G, OH, OW = out.shape
    kh, kw = w.shape[1:]
    (pt, pb), (pl, pr) = pads if pads is not None else ((0, 0), (0, 0))
    if out.size == 0:
        return out
    if not out.flags.writeable:
        raise ValueError(f"stencil2d: out (shape {out.shape}) is read-only")
    assert x.shape[:2] == (N, G) and x.shape[2] + pt + pb == OH + kh - 1 \
        and x.shape[3] + pl + pr == OW + kw - 1 and min(pt, pb, pl, pr) >= 0, \
        (out.shape, x.shape, w.shape, pads)
    if x.shape[2] == 0 or x.shape[3] == 0:
        assert boundary in ("fill", "zeros"), boundary
    if out.strides[3] != out.itemsize and OW > 1:
        tmp = np.empty(out.shape, out.dtype)
        out[...] = stencil2d(tmp, x, w, bias, pads, boundary, fill, nt=False, fir=fir)
        return out
    if x.strides[3] != x.itemsize and x.shape[3] > 1:
        x = np.ascontiguousarray(x)
    # C-contiguous and writable (small copies where not): the kernel's one compile per
    # dtype (any_layout) covers the images, these are typed as they come
    if not (w.dtype == out.dtype and w.flags.c_contiguous and w.flags.writeable):
        w = np.require(w, out.dtype, ["C", "W"])
    finite_bias = bias is None
    bias = np.zeros(G, out.dtype) if bias is None else np.require(bias, out.dtype, ["C", "W"])
    if nt is None:
        nt = out.nbytes >= NT_MIN_BYTES and kh * kw <= NT_MAX_TAPS
    R = rows_for(kh, OH)
    tw = tile_width(out.itemsize)
    C = fir_chunk(kw, out.itemsize, OW) if fir and kh == 1 and pt == pb == 0 \
        and out.dtype.kind == "f" else 0
    if C:
        wx, ws, finite = _fir_weights(w, lanes(out.itemsize))
        if finite and (finite_bias or np.isfinite(bias).all()):   # (else the direct sums)
            nc = (pl > 0) + -(-(OW - min(pl, OW)) // C)          # chunks per row (_fir1d)
            ntg = max(1, -(-n_tasks_target() // (N * G * OH)))      # chunk groups per row
            with serial_if_small(N * G * OH * OW * kw):
                any_layout(_fir1d, (out, x), w, wx, ws, bias, pl, EXTENSIONS[boundary],
                           out.dtype.type(fill), C, min(ntg, nc), tw, bool(nt))
            return out
    nrb = -(-OH // R)
    target = n_tasks_target()
    whole = whole_planes(N * G, OH, OW, kh, kw, out.itemsize, max(pt, pb, pl, pr) > 0, target)
    if whole:
        cw, gb = OW, nrb                                        # a task per plane
    else:
        cw = _strip(OW, kh, kw, R, out.itemsize, tw)
        tasks = N * G * -(-OW // cw)
        gb = max(1, nrb // max(1, -(-target // tasks)))   # row blocks per task
    with serial_if_small(N * G * OH * OW * kh * kw):
        any_layout(_stencil2d, (out, x), w, bias, pt, pl, EXTENSIONS[boundary],
                   out.dtype.type(fill), R, cw, gb, tw, bool(nt), whole)
    return out
