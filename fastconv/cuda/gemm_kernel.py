"""Tiled, register-blocked GEMM kernels: implicit-GEMM convolution and a plain GEMM.

All three kernels share one micro-kernel (:func:`_mma`): a block of NT=128 threads
computes a BM x BN = 64 x 128 tile of C, stepping through the reduction BK=8 at a time;
A and B tiles are staged in double-buffered shared memory (the next tile's global loads
are in flight while the current one is multiplied), each thread owns an 8 x 8 block of C
in registers (rows ``ty*4 + {0..3}`` and ``BM/2 + ty*4 + {0..3}``, columns ``tx*4 + {0..3}``
and ``BN/2 + tx*4 + {0..3}``: four-wide shared loads, conflict-free).

- ``_conv_fwd``: implicit GEMM, no column matrix. Per group g,
  ``C[o, (n, p)] = sum_r W[g*Og + o, r] * X[n, g*Cg + c(r), p*stride + k(r)*dilation]``;
  the gather offset of reduction index r = (c, kd, kh, kw) comes from a small table
  ``koff[r]``, the offset of column (n, p) is computed once per thread.
- ``_conv_bwd_weight``: ``gW[o, r] = sum_{(n, p)} gY[n, g*Og + o, p] * X[...]``; the
  reduction over all images and positions is split across blocks (split-K), each split
  writes its partial tile to a workspace and ``_sum_splits`` adds them up (deterministic).
- ``_gemm``: ``C = A @ B (+ bias per column)`` on strided A, B, C (the linear layer).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, int64, uint32

from . import array_kernel
from . import runtime as rt

# Threads: NTX along n x NTY along m, each owning TM x TN of C in two halves of VM x VN
# (four-wide shared loads), so BM = TM NTY, BN = TN NTX. Loads: each thread fetches AL
# elements of the A tile and BL of the B tile per step (NT >= BN: a thread's B column stays
# fixed). The simulator runs a small variant of the same code (16 threads owning 2 x 2,
# 8 x 8 tiles) because every simulated thread is an OS thread.
if rt.simulator():
    NTX, NTY, TM, TN = 4, 4, 2, 2
else:
    NTX, NTY, TM, TN = 16, 8, 8, 8
VM, VN = TM // 2, TN // 2
BK = 8
BM, BN = TM * NTY, TN * NTX
NT = NTX * NTY
HM, HN = BM // 2, BN // 2    # second half of a thread's rows / columns
AL = BM * BK // NT           # A elements loaded per thread per step
BL = BN * BK // NT           # B elements loaded per thread per step
AROW = NT // BK              # row stride between a thread's A elements
BROW = NT // BN              # k stride between a thread's B elements
AS = BM + 4                  # padded row of the A tile in shared memory
ASZ = BK * AS                # one A buffer
BSZ = BK * BN                # one B buffer
AS2, BS2 = 2 * ASZ, 2 * BSZ  # double buffers
ALIGN = rt.smem_align()


@cuda.jit(device=True, inline="always")
def _mma(As, Bs, cur, acc, av, bv, ty4, tx4):
    # acc[i, j] += sum_kk As[cur, kk, row(i)] * Bs[cur, kk, col(j)]
    abase = cur * uint32(ASZ) + ty4
    bbase = cur * uint32(BSZ) + tx4
    for kk in range(BK):
        a0 = abase + uint32(kk * AS)
        b0 = bbase + uint32(kk * BN)
        for i in range(VM):
            av[i] = As[a0 + uint32(i)]
            av[i + VM] = As[a0 + uint32(HM + i)]
        for j in range(VN):
            bv[j] = Bs[b0 + uint32(j)]
            bv[j + VN] = Bs[b0 + uint32(HN + j)]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += av[i] * bv[j]


@cuda.jit(device=True, inline="always")
def _lanes(tid):
    """This thread's register-tile origin ``(ty4, tx4)`` and its load lanes: it loads A
    rows ``am + AROW*q`` at reduction index ``ak`` and the B column ``bn`` at rows
    ``bk + BROW*q``."""
    return ((tid // uint32(NTX)) * uint32(VM), (tid % uint32(NTX)) * uint32(VN),
            tid % uint32(BK), tid // uint32(BK), tid % uint32(BN), tid // uint32(BN))


@cuda.jit(device=True, inline="always")
def _zero(acc):
    for i in range(TM):
        for j in range(TN):
            acc[i, j] = 0


@cuda.jit(device=True, inline="always")
def _advance(t, nk, As, Bs, acc, av, bv, ra, rb, lanes):
    """One step of the double-buffered main loop, once this thread has fetched tile ``t``
    into ``ra``/``rb`` (when t < nk): multiply tile t-1 from shared memory, store tile t
    into the other buffer, then synchronise the block."""
    ty4, tx4, ak, am, bn, bk = lanes
    if t > 0:
        _mma(As, Bs, uint32((t - 1) % 2), acc, av, bv, ty4, tx4)
    if t < nk:
        buf = uint32(t % 2)
        for q in range(AL):
            As[buf * uint32(ASZ) + ak * uint32(AS) + am + uint32(AROW * q)] = ra[q]
        for q in range(BL):
            Bs[buf * uint32(BSZ) + (bk + uint32(BROW * q)) * uint32(BN) + bn] = rb[q]
    cuda.syncthreads()


@cuda.jit(device=True, inline="always")
def _row(i, ty):
    return ty * VM + (i % VM) + HM * (i // VM)


@cuda.jit(device=True, inline="always")
def _col(j, tx):
    return tx * VN + (j % VN) + HN * (j // VN)


@rt.kernel
def _conv_fwd(out, w, x, koff, bias, geo):
    # out: (N*O*P,) = (N, O, OD*OH*OW)   w: (O*R,) = (O, Cg*KD*KH*KW)   x: padded input, flat
    # geo = (Og, NC = N*P, R, P, OHW, OW, CS = C*S, GCS = Cg*S, sd*Hp*Wp, sh*Wp, sw, O)
    # Indices are 32-bit (the wrapper keeps every flat size below 2**31). Rows past M and
    # columns past NC are clamped onto real data and never stored.
    M, NC, K, P, OHW, OW, CS, GCS, sdHW, shW, sw, O = geo
    As = cuda.shared.array(AS2, dtype=out.dtype, alignment=ALIGN)
    Bs = cuda.shared.array(BS2, dtype=out.dtype, alignment=ALIGN)
    acc = cuda.local.array((TM, TN), dtype=out.dtype)
    av = cuda.local.array(TM, dtype=out.dtype)
    bv = cuda.local.array(TN, dtype=out.dtype)
    ra = cuda.local.array(AL, dtype=out.dtype)
    rb = cuda.local.array(BL, dtype=out.dtype)
    aoff = cuda.local.array(AL, dtype=uint32)
    tid = uint32(cuda.threadIdx.x)
    lanes = _lanes(tid)
    ty4, tx4, ak, am, bn, bk = lanes
    K32 = uint32(K)
    g = uint32(cuda.blockIdx.z)
    m0 = uint32(cuda.blockIdx.y) * uint32(BM)
    for q in range(AL):
        m = min(m0 + am + uint32(AROW * q), uint32(M - 1))
        aoff[q] = (g * uint32(M) + m) * K32 + ak
    nk = (K + BK - 1) // BK
    n0 = cuda.blockIdx.x * BN
    _zero(acc)
    # this thread's B column (fixed for the whole reduction)
    nl = min(uint32(n0) + bn, uint32(NC - 1))
    img = nl // uint32(P)
    p = nl % uint32(P)
    r = p % uint32(OHW)
    xbase = (img * uint32(CS) + g * uint32(GCS) + (p // uint32(OHW)) * uint32(sdHW)
             + (r // uint32(OW)) * uint32(shW) + (r % uint32(OW)) * uint32(sw))
    for t in range(nk + 1):
        # t < nk: fetch tile t into registers; t > 0: multiply tile t-1 from shared memory
        if t < nk:
            k0 = uint32(t) * uint32(BK)
            if k0 + ak < K32:
                for q in range(AL):
                    ra[q] = w[aoff[q] + k0]
            else:
                for q in range(AL):
                    ra[q] = 0
            for q in range(BL):
                kq = k0 + bk + uint32(BROW * q)
                if kq < K32:
                    rb[q] = x[xbase + uint32(koff[kq])]
                else:
                    rb[q] = 0
        _advance(t, nk, As, Bs, acc, av, bv, ra, rb, lanes)
    ty = tid // uint32(NTX)
    tx = tid % uint32(NTX)
    for j in range(TN):
        n = uint32(n0) + _col(j, tx)
        if n < uint32(NC):
            obase = (n // uint32(P)) * uint32(O * P) + n % uint32(P)
            for i in range(TM):
                m = m0 + _row(i, ty)
                if m < uint32(M):
                    oc = g * uint32(M) + m
                    out[obase + oc * uint32(P)] = acc[i, j] + bias[oc]


@rt.kernel
def _conv_bwd_weight(ws, go, x, koff, qx, qg, geo):
    # ws: (splits, G, Og, R) partial sums     go: (N*O*P,)    x: padded input, flat
    # qx[q], qg[q]: offsets of reduction index q = (n, p) in x and in go (without channels)
    # geo = (Og, R, Q = N*P, P, GCS, chunk, G); 32-bit indices, clamped rows / columns
    M, NR, Q, P, GCS, chunk, G = geo
    As = cuda.shared.array(AS2, dtype=ws.dtype, alignment=ALIGN)
    Bs = cuda.shared.array(BS2, dtype=ws.dtype, alignment=ALIGN)
    acc = cuda.local.array((TM, TN), dtype=ws.dtype)
    av = cuda.local.array(TM, dtype=ws.dtype)
    bv = cuda.local.array(TN, dtype=ws.dtype)
    ra = cuda.local.array(AL, dtype=ws.dtype)
    rb = cuda.local.array(BL, dtype=ws.dtype)
    aoff = cuda.local.array(AL, dtype=uint32)
    tid = uint32(cuda.threadIdx.x)
    lanes = _lanes(tid)
    ty4, tx4, ak, am, bn, bk = lanes
    g = uint32(cuda.blockIdx.z % G)
    split = cuda.blockIdx.z // G
    m0 = uint32(cuda.blockIdx.y) * uint32(BM)
    n0 = uint32(cuda.blockIdx.x) * uint32(BN)
    k_begin = uint32(split * chunk)
    k_end = uint32(min(Q, split * chunk + chunk))
    _zero(acc)
    for q in range(AL):
        m = min(m0 + am + uint32(AROW * q), uint32(M - 1))
        aoff[q] = (g * uint32(M) + m) * uint32(P)
    colbase = uint32(koff[min(n0 + bn, uint32(NR - 1))]) + g * uint32(GCS)
    # a signed count: an unsigned one makes ``t < nk`` (t is int64) a float64 compare
    nk = int64((k_end - k_begin + uint32(BK - 1)) // uint32(BK))
    for t in range(nk + 1):
        if t < nk:
            k0 = k_begin + uint32(t) * uint32(BK)
            k = k0 + ak
            if k < k_end:
                gq = uint32(qg[k])
                for q in range(AL):
                    ra[q] = go[gq + aoff[q]]
            else:
                for q in range(AL):
                    ra[q] = 0
            for q in range(BL):
                kq = k0 + bk + uint32(BROW * q)
                if kq < k_end:
                    rb[q] = x[uint32(qx[kq]) + colbase]
                else:
                    rb[q] = 0
        _advance(t, nk, As, Bs, acc, av, bv, ra, rb, lanes)
    ty = tid // uint32(NTX)
    tx = tid % uint32(NTX)
    base = (split * G + g) * M * NR
    for i in range(TM):
        m = m0 + _row(i, ty)
        if m < uint32(M):
            for j in range(TN):
                n = n0 + _col(j, tx)
                if n < uint32(NR):
                    ws[base + m * uint32(NR) + n] = acc[i, j]


@cuda.jit(cache=True)
def _sum_splits(gw, ws, splits):
    # gw[e] = sum_s ws[s * E + e]
    E = gw.shape[0]
    start = cuda.grid(1)
    for e in range(start, E, cuda.gridsize(1)):
        gw[e] = ws[e]
        for s in range(1, splits):
            gw[e] += ws[s * E + e]


@rt.kernel
def _gemm(c, a, b, bias, geo):
    # c[m*scm + n*scn] = sum_k a[m*sam + k*sak] * b[k*sbk + n*sbn] (+ bias[n] if has_bias)
    M, N, K, sam, sak, sbk, sbn, scm, scn, has_bias = geo
    As = cuda.shared.array(AS2, dtype=c.dtype, alignment=ALIGN)
    Bs = cuda.shared.array(BS2, dtype=c.dtype, alignment=ALIGN)
    acc = cuda.local.array((TM, TN), dtype=c.dtype)
    av = cuda.local.array(TM, dtype=c.dtype)
    bv = cuda.local.array(TN, dtype=c.dtype)
    ra = cuda.local.array(AL, dtype=c.dtype)
    rb = cuda.local.array(BL, dtype=c.dtype)
    tid = uint32(cuda.threadIdx.x)
    lanes = _lanes(tid)
    ty4, tx4, ak, am, bn, bk = lanes
    m0 = cuda.blockIdx.y * BM
    n0 = cuda.blockIdx.x * BN
    _zero(acc)
    nl = n0 + bn
    nk = (K + BK - 1) // BK
    for t in range(nk + 1):
        if t < nk:
            k0 = t * BK
            k = k0 + ak
            for q in range(AL):
                m = m0 + am + AROW * q
                if m < M and k < K:
                    ra[q] = a[m * sam + k * sak]
                else:
                    ra[q] = 0
            for q in range(BL):
                kq = k0 + bk + BROW * q
                if nl < N and kq < K:
                    rb[q] = b[kq * sbk + nl * sbn]
                else:
                    rb[q] = 0
        _advance(t, nk, As, Bs, acc, av, bv, ra, rb, lanes)
    ty = tid // uint32(NTX)
    tx = tid % uint32(NTX)
    for i in range(TM):
        m = m0 + _row(i, ty)
        if m < M:
            for j in range(TN):
                n = n0 + _col(j, tx)
                if n < N:
                    if has_bias:
                        c[m * scm + n * scn] = acc[i, j] + bias[n]
                    else:
                        c[m * scm + n * scn] = acc[i, j]


# --- tables and launch wrappers --------------------------------------------------------
LIMIT = 1 << 31          # kernels index with 32-bit offsets: launches stay below this


def _table(key, make):
    return rt.const(key, lambda: np.ascontiguousarray(make(), dtype=np.int32))


def _koff(Cg, kernel, dilation, padded):
    """Offset in the padded input of reduction index r = (c, kd, kh, kw)."""
    KD, KH, KW = kernel
    dd, dh, dw = dilation
    Dp, Hp, Wp = padded

    def make():
        c, kd, kh, kw = np.meshgrid(np.arange(Cg), np.arange(KD), np.arange(KH), np.arange(KW),
                                    indexing="ij")
        return (c * (Dp * Hp * Wp) + kd * dd * Hp * Wp + kh * dh * Wp + kw * dw).ravel()
    return _table(("koff", Cg, tuple(kernel), tuple(dilation), tuple(padded)), make)


def _image_chunks(N, per_image):
    """Blocks of images whose flat sizes (``per_image`` elements each) stay below LIMIT."""
    nb = max(1, min(N, (LIMIT - 1) // max(per_image, 1)))
    return [(n0, min(nb, N - n0)) for n0 in range(0, N, nb)]


def im2col_fwd(xp, w, bias, stride, dilation, groups, out):
    """Implicit-GEMM forward: out = conv(xp, w) + bias on padded 5-D ``xp``."""
    N, O, OD, OH, OW = out.shape
    if out.size == 0:                 # nothing to compute (and no zero-sized grid)
        return out
    C, Dp, Hp, Wp = xp.shape[1:]
    Cg = w.shape[1]
    kernel = tuple(w.shape[2:])
    Og = O // groups
    P = OD * OH * OW
    R = Cg * int(np.prod(kernel))
    S = Dp * Hp * Wp
    koff = _koff(Cg, kernel, dilation, (Dp, Hp, Wp))
    xf, of, wf = rt.flat(xp), rt.flat(out), rt.flat(w)
    for n0, m in _image_chunks(N, max(C * S, O * P)):
        geo = (Og, m * P, R, P, OH * OW, OW, C * S, Cg * S, stride[0] * Hp * Wp,
               stride[1] * Wp, stride[2], O)
        tiles = math.ceil(m * P / BN)
        grid = (tiles, math.ceil(Og / BM), groups)
        _conv_fwd[grid, NT](of[n0 * O * P:(n0 + m) * O * P], wf,
                            xf[n0 * C * S:(n0 + m) * C * S], koff, bias, geo)
    return out


def im2col_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Implicit-GEMM weight gradient (split-K over images and output positions)."""
    N, O, OD, OH, OW = go.shape
    C, Dp, Hp, Wp = xp.shape[1:]
    Cg = C // groups
    Og = O // groups
    P = OD * OH * OW
    S = Dp * Hp * Wp
    R = Cg * int(np.prod(kernel))
    if N * P == 0:                    # an empty reduction: the gradient is zero
        return array_kernel.zeros((O, Cg) + tuple(kernel), xp.dtype)
    koff = _koff(Cg, kernel, dilation, (Dp, Hp, Wp))
    sd, sh, sw = stride
    tiles = math.ceil(R / BN) * math.ceil(Og / BM) * groups
    target = 2 if rt.simulator() else 2 * 132 * 4      # blocks: enough to fill every SM
    plans = []
    for n0, m in _image_chunks(N, max(C * S, O * P)):
        Q = m * P
        splits = max(1, min(math.ceil(target / tiles), Q // 512))
        chunk = math.ceil(math.ceil(Q / splits) / BK) * BK
        plans.append((n0, m, chunk, math.ceil(Q / chunk)))
    total = sum(p[3] for p in plans)
    gw = rt.empty((O, Cg) + tuple(kernel), xp.dtype)
    ws = rt.flat(gw) if total == 1 else rt.workspace("bwdw_split", (total * O * R,), xp.dtype)
    xf, gf = rt.flat(xp), rt.flat(go)
    s0 = 0
    for n0, m, chunk, splits in plans:
        def make_qx(m=m):
            n, od, oh, ow = np.meshgrid(np.arange(m), np.arange(OD), np.arange(OH), np.arange(OW),
                                        indexing="ij")
            return (n * C * S + od * sd * Hp * Wp + oh * sh * Wp + ow * sw).ravel()

        def make_qg(m=m):
            n, p = np.meshgrid(np.arange(m), np.arange(P), indexing="ij")
            return (n * O * P + p).ravel()
        qx = _table(("qx", m, C, (Dp, Hp, Wp), (OD, OH, OW), tuple(stride)), make_qx)
        qg = _table(("qg", m, O, P), make_qg)
        geo = (Og, R, m * P, P, Cg * S, chunk, groups)
        grid = (math.ceil(R / BN), math.ceil(Og / BM), groups * splits)
        _conv_bwd_weight[grid, NT](ws[s0 * O * R:(s0 + splits) * O * R], gf[n0 * O * P:(n0 + m) * O * P],
                                   xf[n0 * C * S:(n0 + m) * C * S], koff, qx, qg, geo)
        s0 += splits
    if total > 1:
        blocks, threads = rt.grid1d(O * R)
        _sum_splits[blocks, threads](rt.flat(gw), ws, total)
    return gw


def gemm(c, a, b, bias=None, trans_a=False, trans_b=False):
    """c = op(a) @ op(b) (+ bias per column) on 2-D C-contiguous device arrays; op = .T if trans.

    An empty ``c`` (M or N == 0) launches nothing: real CUDA rejects a zero grid dimension.
    K == 0 gives ``c`` = bias (or 0)."""
    for name, arr in (("c", c), ("a", a), ("b", b)):
        if not rt.contiguous(arr):
            raise ValueError(f"gemm: {name} must be a C-contiguous device array, got shape "
                             f"{tuple(arr.shape)} with strides {tuple(arr.strides)}")
    M, N = c.shape
    if M == 0 or N == 0:
        return c
    K = a.shape[0] if trans_a else a.shape[1]
    sam, sak = (1, a.shape[1]) if trans_a else (a.shape[1], 1)
    sbk, sbn = (1, b.shape[1]) if trans_b else (b.shape[1], 1)
    has_bias = 0 if bias is None else 1
    if bias is None:
        bias = rt.workspace("gemm_nobias", (1,), c.dtype)
    geo = (M, N, K, sam, sak, sbk, sbn, N, 1, has_bias)
    grid = (math.ceil(N / BN), math.ceil(M / BM), 1)
    _gemm[grid, NT](rt.flat(c), rt.flat(a), rt.flat(b), bias, geo)
    return c
