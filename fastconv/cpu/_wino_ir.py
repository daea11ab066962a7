"""Winograd input and output transforms over a run of tiles, written as LLVM vector IR.

A run is a row of n consecutive tiles (tile t starts m*t columns after the run's start).
The transforms work on blocks of L tiles, L the lanes of the host's widest vector
(cpu/_simd.VECTOR_BYTES): lane l of every vector belongs to tile t0 + l.

Input (alpha = m + 2): per input row, m + 1 contiguous vectors cover the block's columns;
the column pass of B^T runs on them as they are (it combines rows), then one shuffle per
tile column j gathers column m*l + j of every tile l (a de-interleave that LLVM's loop
vectoriser would do with gathers), and the row pass of B^T gives the alpha^2 rows of the
transformed input, stored at V[vb + xi*PANEL + t]. Output: the alpha^2 products are loaded
as vectors, A^T runs down the columns and along the rows, the bias is added, and a shuffle
interleaves the m output columns of each tile back into contiguous output rows.

Every load and store of the last, partial block is masked (llvm.masked.load/store): a run
may end at its plane's last element, and the rows of V and of the output beside the run
belong to other tiles. The transform coefficients are constants in the code: the float64
matrices of cpu/winograd.cook_toom rounded to the compute dtype.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._simd import VECTOR_BYTES

_i32, _i64 = ir.IntType(32), ir.IntType(64)


class _Vec:
    """Vector helpers for one intrinsic's codegen: L lanes of ``dtype``."""

    def __init__(self, context, builder, dtype):
        self.b = builder
        self.np_dtype = np.dtype(str(dtype))
        bits = dtype.bitwidth
        self.L = L = VECTOR_BYTES // (bits // 8)
        self.align = _i32(bits // 8)
        fty = context.get_value_type(dtype)
        self.vty = vty = ir.VectorType(fty, L)
        mty = ir.VectorType(ir.IntType(1), L)
        pty = fty.as_pointer()
        mod, sfx = builder.module, f"v{L}f{bits}"
        self._load = cgutils.get_or_insert_function(
            mod, ir.FunctionType(vty, [pty, _i32, mty, vty]), f"llvm.masked.load.{sfx}.p0")
        self._store = cgutils.get_or_insert_function(
            mod, ir.FunctionType(ir.VoidType(), [vty, pty, _i32, mty]),
            f"llvm.masked.store.{sfx}.p0")
        self._fma = cgutils.get_or_insert_function(
            mod, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.{sfx}")
        self.zero = ir.Constant(vty, [0.0] * L)
        self._iota = ir.Constant(ir.VectorType(_i64, L), list(range(L)))

    def splat(self, x, ty=None):
        ty = ty or self.vty
        u = ir.Constant(ty, ir.Undefined)
        v = self.b.insert_element(u, x, _i32(0))
        return self.b.shuffle_vector(v, u, ir.Constant(ir.VectorType(_i32, self.L), [0] * self.L))

    def mask(self, lim):
        """Lanes l < lim (an i64, any value)."""
        return self.b.icmp_signed("<", self._iota, self.splat(lim, ir.VectorType(_i64, self.L)))

    def load(self, ptr, mask):
        return self.b.call(self._load, [ptr, self.align, mask, self.zero])

    def store(self, v, ptr, mask):
        self.b.call(self._store, [v, ptr, self.align, mask])

    def lin(self, row, vecs):
        """sum_j row[j] * vecs[j], with the products by 0 and +-1 resolved."""
        b, acc = self.b, None
        for c, v in zip(row, vecs):
            c = float(self.np_dtype.type(c))
            if c == 0.0:
                continue
            if acc is None:
                if c == 1.0:
                    acc = v
                elif c == -1.0:
                    acc = b.fneg(v)
                else:
                    acc = b.fmul(ir.Constant(self.vty, [c] * self.L), v)
            elif c == 1.0:
                acc = b.fadd(acc, v)
            elif c == -1.0:
                acc = b.fsub(acc, v)
            else:
                acc = b.call(self._fma, [ir.Constant(self.vty, [c] * self.L), v, acc])
        return self.zero if acc is None else acc

    def concat(self, vecs):
        """One vector of all ``vecs`` in order (padded with undef to a power of two)."""
        vs = list(vecs)
        while len(vs) > 1:
            if len(vs) % 2:
                vs.append(ir.Constant(vs[0].type, ir.Undefined))
            n = vs[0].type.count
            vs = [self.b.shuffle_vector(vs[i], vs[i + 1],
                                        ir.Constant(ir.VectorType(_i32, 2 * n), list(range(2 * n))))
                  for i in range(0, len(vs), 2)]
        return vs[0]

    def pick(self, wide, idx):
        """The vector of wide[idx[l]]."""
        return self.b.shuffle_vector(wide, ir.Constant(wide.type, ir.Undefined),
                                     ir.Constant(ir.VectorType(_i32, len(idx)), list(idx)))


def _block_loop(builder, n, L, body):
    """for t0 in range(0, n, L): body(t0) -- as an LLVM loop."""
    entry = builder.block
    loop = builder.append_basic_block("wblk.loop")
    done = builder.append_basic_block("wblk.done")
    builder.cbranch(builder.icmp_signed(">", n, _i64(0)), loop, done)
    builder.position_at_end(loop)
    t0 = builder.phi(_i64)
    t0.add_incoming(_i64(0), entry)
    body(t0)
    nxt = builder.add(t0, _i64(L))
    t0.add_incoming(nxt, builder.block)
    builder.cbranch(builder.icmp_signed("<", nxt, n), loop, done)
    builder.position_at_end(done)


def _arrays_ok(*arrs):
    return (all(isinstance(a, types.Array) and a.layout == "C" and a.ndim == 1 for a in arrs)
            and isinstance(arrs[0].dtype, types.Float)
            and all(a.dtype == arrs[0].dtype for a in arrs))


def input_run(m, BT):
    """in_run(V, vb, xs, xf, base, Wx, n): the input transform of tiles t < n reading
    xf[base + i*Wx + m*t + j] (i, j < alpha), written to V[vb + (k*alpha + l)*xs + t]."""
    alpha = BT.shape[0]

    def gen(typingctx, V_t, vb_t, xs_t, xf_t, base_t, wx_t, n_t):
        if not _arrays_ok(V_t, xf_t):
            return None

        def codegen(context, builder, sig, args):
            vc = _Vec(context, builder, V_t.dtype)
            L = vc.L
            Va = context.make_array(V_t)(context, builder, args[0])
            Xa = context.make_array(xf_t)(context, builder, args[3])
            vb, xs, base, Wx, n = (context.cast(builder, args[k], sig.args[k], types.int64)
                                   for k in (1, 2, 4, 5, 6))

            def body(t0):
                nt = builder.sub(n, t0)
                lim = builder.add(builder.mul(nt, _i64(m)), _i64(alpha - m))
                col0 = builder.add(base, builder.mul(t0, _i64(m)))
                rows = []
                for i in range(alpha):
                    rp = builder.add(col0, builder.mul(Wx, _i64(i)))
                    rows.append([vc.load(builder.gep(Xa.data, [builder.add(rp, _i64(q * L))]),
                                         vc.mask(builder.sub(lim, _i64(q * L))))
                                 for q in range(m + 1)])
                smask = vc.mask(nt)
                dst0 = builder.add(vb, t0)
                for k in range(alpha):
                    wide = vc.concat([vc.lin(BT[k], [rows[i][q] for i in range(alpha)])
                                      for q in range(m + 1)])
                    cols = [vc.pick(wide, [m * l + j for l in range(L)]) for j in range(alpha)]
                    for l in range(alpha):
                        xi = builder.mul(xs, _i64(k * alpha + l))
                        p = builder.gep(Va.data, [builder.add(dst0, xi)])
                        vc.store(vc.lin(BT[l], cols), p, smask)

            _block_loop(builder, n, L, body)
            return context.get_dummy_value()

        return types.void(V_t, vb_t, xs_t, xf_t, base_t, wx_t, n_t), codegen

    gen.__name__ = gen.__qualname__ = f"wino_in{m}"
    return intrinsic(gen)


def output_run(m, AT):
    """out_run(y, yb, Wy, M, mb, xs, n, bias): the output transform of tiles t < n reading
    M[mb + (k*alpha + l)*xs + t], writing y[yb + a*Wy + m*t + b] = ... + bias (a, b < m)."""
    alpha = AT.shape[1]

    def gen(typingctx, y_t, yb_t, wy_t, M_t, mb_t, xs_t, n_t, bias_t):
        if not (_arrays_ok(y_t, M_t) and bias_t == y_t.dtype):
            return None

        def codegen(context, builder, sig, args):
            vc = _Vec(context, builder, y_t.dtype)
            L = vc.L
            Ya = context.make_array(y_t)(context, builder, args[0])
            Ma = context.make_array(M_t)(context, builder, args[3])
            yb, Wy, mb, xs, n = (context.cast(builder, args[k], sig.args[k], types.int64)
                                 for k in (1, 2, 4, 5, 6))
            bias = vc.splat(args[7])
            inter = [(c % m) * L + c // m for c in range(m * L)]

            def body(t0):
                nt = builder.sub(n, t0)
                lmask = vc.mask(nt)
                src0 = builder.add(mb, t0)
                Mv = [[vc.load(builder.gep(Ma.data, [builder.add(src0, builder.mul(
                    xs, _i64(k * alpha + l)))]), lmask) for l in range(alpha)]
                      for k in range(alpha)]
                row0 = builder.add(yb, builder.mul(t0, _i64(m)))
                lim = builder.mul(nt, _i64(m))
                for a in range(m):
                    s = [vc.lin(AT[a], [Mv[k][l] for k in range(alpha)]) for l in range(alpha)]
                    ys = [builder.fadd(vc.lin(AT[b], s), bias) for b in range(m)]
                    wide = vc.pick(vc.concat(ys), inter)
                    rp = builder.add(row0, builder.mul(Wy, _i64(a)))
                    for q in range(m):
                        part = vc.pick(wide, range(q * L, (q + 1) * L))
                        vc.store(part, builder.gep(Ya.data, [builder.add(rp, _i64(q * L))]),
                                 vc.mask(builder.sub(lim, _i64(q * L))))

            _block_loop(builder, n, L, body)
            return context.get_dummy_value()

        return types.void(y_t, yb_t, wy_t, M_t, mb_t, xs_t, n_t, bias_t), codegen

    gen.__name__ = gen.__qualname__ = f"wino_out{m}"
    return intrinsic(gen)


def gemm_tile(rows, nvec, accumulate=False):
    """gemm(acc, a0, rs, V, v0, vs, wg, w0, ws, K): a register tile of ``rows`` x ``nvec``
    vectors, acc[a0 + j*rs + q*L + l] (+)= sum_{k < K} wg[w0 + k*ws + j] * V[v0 + k*vs + q*L + l]
    for rows j, vectors q and lanes l < L (acc, V, wg: 1-D contiguous, one float dtype).
    Per k: nvec vector loads, rows broadcasts, rows * nvec fused multiply-adds; the
    accumulators stay in registers for the whole K loop (``accumulate``: they start from
    acc's values, else from zero)."""

    def gen(typingctx, acc_t, a0_t, rs_t, V_t, v0_t, vs_t, wg_t, w0_t, ws_t, K_t):
        if not _arrays_ok(acc_t, V_t, wg_t):
            return None

        def codegen(context, builder, sig, args):
            vc = _Vec(context, builder, acc_t.dtype)
            L, vty = vc.L, vc.vty
            A, Va, Wa = (context.make_array(sig.args[k])(context, builder, args[k])
                         for k in (0, 3, 6))
            a0, rs, v0, vs, w0, ws, K = (context.cast(builder, args[k], sig.args[k], types.int64)
                                         for k in (1, 2, 4, 5, 7, 8, 9))
            ptr = vty.as_pointer()

            def dst(j, q):
                d = builder.gep(A.data, [builder.add(a0, builder.add(builder.mul(rs, _i64(j)),
                                                                     _i64(q * L)))])
                return builder.bitcast(d, ptr)

            init = ([builder.load(dst(j, q), align=vc.align.constant)
                     for j in range(rows) for q in range(nvec)] if accumulate
                    else [vc.zero] * (rows * nvec))
            entry = builder.block
            loop = builder.append_basic_block("gemm.loop")
            done = builder.append_basic_block("gemm.done")
            builder.cbranch(builder.icmp_signed(">", K, _i64(0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(_i64)
            k.add_incoming(_i64(0), entry)
            cur = []
            for v in init:
                ph = builder.phi(vty)
                ph.add_incoming(v, entry)
                cur.append(ph)
            vrow = builder.add(v0, builder.mul(k, vs))
            xs = [builder.load(builder.bitcast(
                builder.gep(Va.data, [builder.add(vrow, _i64(q * L))]), ptr),
                align=vc.align.constant) for q in range(nvec)]
            wrow = builder.add(w0, builder.mul(k, ws))
            new = []
            for j in range(rows):
                wb = vc.splat(builder.load(builder.gep(Wa.data, [builder.add(wrow, _i64(j))])))
                for q in range(nvec):
                    new.append(builder.call(vc._fma, [wb, xs[q], cur[j * nvec + q]]))
            nxt = builder.add(k, _i64(1))
            k.add_incoming(nxt, loop)
            for ph, v in zip(cur, new):
                ph.add_incoming(v, loop)
            builder.cbranch(builder.icmp_signed("<", nxt, K), loop, done)
            builder.position_at_end(done)
            fins = []
            for v0_, v in zip(init, new):   # (LLVM wants the phis at the block's top)
                fin = builder.phi(vty)
                fin.add_incoming(v0_, entry)
                fin.add_incoming(v, loop)
                fins.append(fin)
            for j in range(rows):
                for q in range(nvec):
                    builder.store(fins[j * nvec + q], dst(j, q), align=vc.align.constant)
            return context.get_dummy_value()

        return types.void(acc_t, a0_t, rs_t, V_t, v0_t, vs_t, wg_t, w0_t, ws_t, K_t), codegen

    gen.__name__ = gen.__qualname__ = f"wino_gemm{rows}x{nvec}{'_add' if accumulate else ''}"
    return intrinsic(gen)


def channel_transform(BT, name):
    """ct(V, vb, xs, src, base, rs, cs, nc): the 2-D transform BT d BT^T (BT: alpha x s) of
    one s x s tile for L channels at once, channels-last: d[i][j] is the vector
    src[base + i*rs + j*cs + l] (lanes l < nc loaded, the others zero), and
    V[vb + (k*alpha + l)*xs + lane] receives the result (all L lanes). The weight
    gradient's transforms of the input (BT = B^T) and of grad_out (BT = A, s = m)."""
    alpha, size = BT.shape

    def gen(typingctx, V_t, vb_t, xs_t, src_t, base_t, rs_t, cs_t, nc_t):
        if not _arrays_ok(V_t, src_t):
            return None

        def codegen(context, builder, sig, args):
            vc = _Vec(context, builder, V_t.dtype)
            Va = context.make_array(V_t)(context, builder, args[0])
            Sa = context.make_array(src_t)(context, builder, args[3])
            vb, xs, base, rs, cs, nc = (context.cast(builder, args[k], sig.args[k], types.int64)
                                        for k in (1, 2, 4, 5, 6, 7))
            mask = vc.mask(nc)
            d = [[vc.load(builder.gep(Sa.data, [builder.add(base, builder.add(
                builder.mul(rs, _i64(i)), builder.mul(cs, _i64(j))))]), mask)
                for j in range(size)] for i in range(size)]
            t = [[vc.lin(BT[k], [d[i][j] for i in range(size)]) for j in range(size)]
                 for k in range(alpha)]
            ptr = vc.vty.as_pointer()
            for k in range(alpha):
                for l in range(alpha):
                    xi = builder.mul(xs, _i64(k * alpha + l))
                    p = builder.gep(Va.data, [builder.add(vb, xi)])
                    builder.store(vc.lin(BT[l], t[k]), builder.bitcast(p, ptr),
                                  align=vc.align.constant)
            return context.get_dummy_value()

        return types.void(V_t, vb_t, xs_t, src_t, base_t, rs_t, cs_t, nc_t), codegen

    gen.__name__ = gen.__qualname__ = f"wino_ct_{name}"
    return intrinsic(gen)


def transpose_registers(builder, rows):
    """The L x L transpose of ``rows`` (L vectors of L lanes) in registers: log2(L) stages
    of two-vector shuffles, each swapping the off-diagonal sub-blocks of size b = L/2,
    L/4, ..., 1. Returns the L transposed vectors."""
    L = len(rows)
    mk = ir.VectorType(_i32, L)
    b = L // 2
    while b >= 1:
        nxt = list(rows)
        for i in range(L):
            if (i // b) % 2:
                continue
            lo = [c if (c // b) % 2 == 0 else L + c - b for c in range(L)]
            hi = [c + b if (c // b) % 2 == 0 else L + c for c in range(L)]
            nxt[i] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mk, lo))
            nxt[i + b] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mk, hi))
        rows = nxt
        b //= 2
    return rows


def transpose_block():
    """tb(dst, d0, ds, dn, src, s0, ss, sn, rows): an L x L block moved channels-last:
    dst[d0 + r*ds + l] = src[s0 + l*ss + r] for r < L and lanes l < L, reading only
    r < sn and l < rows (zero elsewhere) and writing rows r < dn, lanes l < rows. In
    registers: L masked row loads, transpose_registers, L row stores."""

    def gen(typingctx, dst_t, d0_t, ds_t, dn_t, src_t, s0_t, ss_t, sn_t, rows_t):
        if not _arrays_ok(dst_t, src_t):
            return None

        def codegen(context, builder, sig, args):
            vc = _Vec(context, builder, dst_t.dtype)
            L = vc.L
            Da = context.make_array(dst_t)(context, builder, args[0])
            Sa = context.make_array(src_t)(context, builder, args[4])
            d0, ds, dn, s0, ss, sn, rows = (context.cast(builder, args[k], sig.args[k], types.int64)
                                            for k in (1, 2, 3, 5, 6, 7, 8))
            lmask = vc.mask(sn)
            vrows = []
            for l in range(L):                    # row l: src[s0 + l*ss + 0..L), if l < rows
                live = builder.and_(lmask, vc.splat(builder.icmp_signed("<", _i64(l), rows),
                                                    ir.VectorType(ir.IntType(1), L)))
                p = builder.gep(Sa.data, [builder.add(s0, builder.mul(ss, _i64(l)))])
                vrows.append(vc.load(p, live))
            vrows = transpose_registers(builder, vrows)
            full = vc.mask(rows)
            for r in range(L):
                live = vc.splat(builder.icmp_signed("<", _i64(r), dn),
                                ir.VectorType(ir.IntType(1), L))
                p = builder.gep(Da.data, [builder.add(d0, builder.mul(ds, _i64(r)))])
                vc.store(vrows[r], p, builder.and_(live, full))
            return context.get_dummy_value()

        return types.void(dst_t, d0_t, ds_t, dn_t, src_t, s0_t, ss_t, sn_t, rows_t), codegen

    gen.__name__ = gen.__qualname__ = "wino_transpose"
    return intrinsic(gen)
