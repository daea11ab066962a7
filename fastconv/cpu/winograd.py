"""Winograd convolution F(m x m, 3 x 3) on the CPU: fused, cache-blocked (NNPACK/ncnn style).

A 3x3 correlation of stride 1 computes each m x m output tile from an alpha x alpha input
tile (alpha = m + 2) as ``Y = A^T [(G g G^T) * (B^T d B)] A``: alpha^2 products per tile
and channel pair instead of 9 m^2 (F(2x2,3x3): 2.25x fewer, F(4x4,3x3): 4x fewer). The
transforms come from a Cook-Toom (Lagrange) bilinear algorithm that :func:`cook_toom`
derives in float64 from interpolation points, then rounds to the compute dtype.

Per task (a group and a panel of TB tiles, TB sized so that the panel's transformed input
and products stay in L2): the input transform writes the panel's alpha^2 x C x TB matrix
straight from the image, alpha^2 independent GEMMs (the register-tiled micro-kernel of
:mod:`._wino_ir`) multiply it by the transformed filters, and the output transform (bias
fused) writes the output tiles. Neither the full transformed input nor the full products
are ever materialised. The filter transform runs once per weight (see :func:`filters`).

The transforms run along tile rows as LLVM vector IR (:mod:`._wino_ir`: a block of tiles
per vector, their columns de-interleaved by shuffles, coefficients rounded from float64
to the compute dtype). :func:`run` gives them whole tiles only: an input short of the
last tiles' rows and columns is extended with zeros, a ragged output computed on whole
tiles and cropped, so no tile needs bounds.
"""
from __future__ import annotations

import functools
import threading
import zlib
from collections import OrderedDict

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ._common import JIT, n_tasks_target, serial_if_small, workspace
from .direct import embed
from ._simd import HOST_AVX512, VECTOR_BYTES
from ._wino_ir import channel_transform, gemm_tile, input_run, output_run, transpose_block

R = 3                                   # kernel size (F(m, 3))
#: tiles per panel (a multiple of every dtype's GEMM register tile width)
PANEL = 48
#: the GEMMs' register tile: GEMM_ROWS output channels x GEMM_VECTORS of the host's widest
#: vectors (8 x 3 accumulators + 3 inputs + 1 broadcast of AVX-512's 32 registers;
#: 4 x 3 + 3 + 1 of AVX2's 16)
GEMM_ROWS = 8 if HOST_AVX512 else 4
GEMM_VECTORS = 3
#: interpolation points (the point at infinity is implicit) per output tile size m:
#: F(4,3) uses {0, +-sqrt(2)/2, +-sqrt(2)} (ncnn's choice: ~4x smaller float32 error
#: than the textbook {0, +-1, +-2}); F(2,3) the classic {0, +-1}
POINTS = {2: (0.0, 1.0, -1.0),
          4: (0.0, 2 ** -0.5, -(2 ** -0.5), 2 ** 0.5, -(2 ** 0.5))}
TEXTBOOK_POINTS = {4: (0.0, 1.0, -1.0, 2.0, -2.0)}


# --- the algorithm -----------------------------------------------------------------------
def cook_toom(m: int, r: int, points) -> tuple:
    """(AT, G, BT) of the 1-D correlation F(m, r) from ``alpha - 1 = m + r - 2`` finite
    points plus the point at infinity, all float64: ``y = AT @ ((G @ g) * (BT @ d))``
    gives ``y[i] = sum_k g[k] d[i + k]`` for ``d`` of length alpha.

    Derivation (Toom-Cook, then transposed): the polynomial product s = g * d' (degrees
    r-1 and m-1) is evaluated at the points (E_g g and E_d d'; at infinity the leading
    coefficient), multiplied pointwise and interpolated: s = C (E_g g . E_d d') with C's
    columns the Lagrange basis polynomials prod_{l!=j}(x - a_l) / f_j, f_j =
    prod_{l!=j}(a_j - a_l), and M(x) = prod_l (x - a_l) for infinity. Correlation is the
    transposed map in d: y = E_d^T diag(E_g g) C^T d. The 1/f_j go into G:
    AT = E_d^T, G = diag(1/f) E_g, BT = (Lagrange numerators)^T.
    """
    a = np.asarray(points, dtype=np.float64)
    alpha = m + r - 1
    if a.size != alpha - 1 or len(set(a.tolist())) != a.size:
        raise ValueError(f"F({m},{r}) needs {alpha - 1} distinct finite points, got {points!r}")
    n = a.size
    Ed = np.zeros((alpha, m))
    Eg = np.zeros((alpha, r))
    Ed[:n] = a[:, None] ** np.arange(m)
    Eg[:n] = a[:, None] ** np.arange(r)
    Ed[n, m - 1] = Eg[n, r - 1] = 1.0              # infinity: the leading coefficients
    f = np.ones(alpha)
    C = np.zeros((alpha, alpha))                   # column j: coefficients, lowest first
    for j in range(n):
        poly = np.array([1.0])
        for l in range(n):
            if l != j:
                poly = np.convolve(poly, [-a[l], 1.0])
                f[j] *= a[j] - a[l]
        C[:poly.size, j] = poly
    poly = np.array([1.0])
    for l in range(n):
        poly = np.convolve(poly, [-a[l], 1.0])
    C[:, n] = poly
    return Ed.T.copy(), Eg / f[:, None], C.T.copy()


def matrices(m: int, points=None) -> tuple:
    """(AT, G, BT) of F(m, 3) for the library's points (float64; read-only, cached)."""
    return _matrices(m, tuple(POINTS[m] if points is None else points))


@functools.lru_cache(maxsize=None)
def _matrices(m, points):
    mats = cook_toom(m, R, points)
    for a in mats:
        a.flags.writeable = False
    return mats


# --- the kernel --------------------------------------------------------------------------
# runs of interior tiles: vector IR (_wino_ir.py), one per m
_in2_run, _in4_run = (input_run(m, matrices(m)[2]) for m in (2, 4))
_out2_run, _out4_run = (output_run(m, matrices(m)[0]) for m in (2, 4))
_gemm = gemm_tile(GEMM_ROWS, GEMM_VECTORS)


@njit(**JIT)
def _in_run(m, V, vb, xs, xf, base, Wx, n):
    if m == 2:
        _in2_run(V, vb, xs, xf, base, Wx, n)
    else:
        _in4_run(V, vb, xs, xf, base, Wx, n)


@njit(**JIT)
def _tile_run(t, t1, per_img, tw, D):
    """Where the run of tiles from flat tile ``t`` (before ``t1``) lies: image ``n``, depth
    ``dd``, tile row ``tr`` and tile columns ``[tca, tcb)`` (a run ends with its row)."""
    img = t // per_img
    rem = t - img * per_img
    tr = rem // tw
    tca = rem - tr * tw
    n = img // D
    return n, img - n * D, tr, tca, min(tw, tca + t1 - t)


@njit(**JIT)
def _out_run(m, y, yb, Wy, M, mb, xs, n, bias):
    if m == 2:
        _out2_run(y, yb, Wy, M, mb, xs, n, bias)
    else:
        _out4_run(y, yb, Wy, M, mb, xs, n, bias)


@njit(**JIT)
def _row_stride(rows):
    """Elements between consecutive alpha^2 matrices of `rows` x PANEL in a panel's
    scratch: one 64-byte line more than they hold, so that the alpha^2 rows a transform
    writes for one tile do not all map to the same L1 set (rows x PANEL x itemsize is
    often a multiple of 4096 bytes)."""
    return rows * PANEL + 16


@njit(parallel=True, **JIT)
def _winograd(yf, xf, Uw, bias, m, N, C, D, Hx, Wx, O, Ho, Wo, groups, nos, scV, scM,
              stages):
    # yf: (N, O, D, Ho, Wo) flat, whole tiles (Ho, Wo multiples of m)
    # xf: (N, C, D, Hx, Wx) flat, Hx = Ho + 2 and Wx = Wo + 2: every tile is interior
    # Uw: (groups, alpha^2, nob, Cg, GEMM_ROWS) transformed filters, flat
    # Tasks: (group, panel of TB = PANEL consecutive tiles in (n, d, tile row, tile
    # column) order, one of `nos` ranges of output-channel blocks: when the panels are
    # too few to fill the cores, each range repeats the panel's input transform and runs
    # its own GEMMs and output transforms). scV[thread]: the panel's transformed input
    # (alpha^2, Cg, TB);
    # scM[thread]: its products (alpha^2, nob * GEMM_ROWS, TB): each GEMM reads and
    # writes contiguous rows of TB tiles.
    # stages: bit mask of the stages to run (1 input transform, 2 GEMMs, 4 output
    # transform; 7 in use, the others for profiling).
    TB = PANEL
    alpha = m + 2
    A2 = alpha * alpha
    Cg = C // groups
    Og = O // groups
    R = GEMM_ROWS
    nob = (Og + R - 1) // R
    XV = _row_stride(Cg)                              # between V's alpha^2 matrices
    XM = _row_stride(nob * R)                         # between M's
    th = (Ho + m - 1) // m
    tw = (Wo + m - 1) // m
    per_img = th * tw
    P = N * D * per_img
    npan = (P + TB - 1) // TB
    step = GEMM_VECTORS * VECTOR_BYTES // yf.itemsize
    HWx = Hx * Wx
    HWo = Ho * Wo
    for task in prange(groups * npan * nos):
        os_ = task % nos
        g = task // (npan * nos)
        t0 = (task // nos % npan) * TB
        t1 = min(t0 + TB, P)
        ob0 = os_ * nob // nos                        # this task's output-channel blocks
        ob1 = (os_ + 1) * nob // nos
        tid = get_thread_id()
        V = scV[tid]
        Mf = scM[tid]
        # input transform, one tile-row run at a time
        for c in range(Cg if stages & 1 else 0):
            cin = g * Cg + c
            t = t0
            while t < t1:
                n, dd, tr, tca, tcb = _tile_run(t, t1, per_img, tw, D)
                base = ((n * C + cin) * D + dd) * HWx + m * tr * Wx + m * tca
                _in_run(m, V, c * TB + t - t0, XV, xf, base, Wx, tcb - tca)
                t += tcb - tca
            if t1 - t0 < TB:                           # the last panel: zero columns
                for xi in range(A2):
                    r = xi * XV + c * TB
                    V[r + t1 - t0:r + TB] = 0
        # alpha^2 GEMMs: M[xi] (Og, TB) = U[xi]^T (Og, Cg) @ V[xi] (Cg, TB), in register
        # tiles of GEMM_ROWS output channels x `step` tiles
        for xi in range(A2 if stages & 2 else 0):
            for ob in range(ob0, ob1):
                w0 = ((g * A2 + xi) * nob + ob) * Cg * R
                for p in range(0, TB, step):
                    _gemm(Mf, xi * XM + ob * R * TB + p, TB, V, xi * XV + p, TB,
                          Uw, w0, R, Cg)
        # output transform (+ bias)
        for o in range(ob0 * R, min(Og, ob1 * R) if stages & 4 else 0):
            oo = g * Og + o
            bv = bias[oo]
            t = t0
            while t < t1:
                n, dd, tr, tca, tcb = _tile_run(t, t1, per_img, tw, D)
                yb = ((n * O + oo) * D + dd) * HWo + m * tr * Wo + m * tca
                _out_run(m, yf, yb, Wo, Mf, o * TB + t - t0, XM, tcb - tca, bv)
                t += tcb - tca


@njit(parallel=True, **JIT)
def crop(out, y):
    """out (N, O, D, H, W) = y[:, :, :, :H, :W]."""
    N, O, D, H, W = out.shape
    for t in prange(N * O * D):
        n = t // (O * D)
        o = (t // D) % O
        d = t % D
        for h in range(H):
            out[n, o, d, h] = y[n, o, d, h, :W]


# --- filters -----------------------------------------------------------------------------
_CACHE_SIZE = 16
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def _transform_filters(w, groups, m):
    """(groups, alpha^2, nob, Cg, GEMM_ROWS): G w G^T in float64, rounded, packed for the
    GEMM's register tiles."""
    _, G, _ = matrices(m)
    O, Cg = w.shape[:2]
    Og = O // groups
    R = GEMM_ROWS
    nob = -(-Og // R)
    alpha = m + 2
    gw = np.einsum("ai,ocij,bj->aboc", G, w.reshape(O, Cg, 3, 3).astype(np.float64), G)
    gw = gw.reshape(alpha * alpha, groups, Og, Cg)
    U_ = np.zeros((groups, alpha * alpha, nob * R, Cg), dtype=w.dtype)
    U_[:, :, :Og] = gw.transpose(1, 0, 2, 3)
    return np.ascontiguousarray(
        U_.reshape(groups, alpha * alpha, nob, R, Cg).transpose(0, 1, 2, 4, 3)).reshape(-1)


def filters(w, groups, m, transpose=None):
    """The transformed filters of ``w`` (O, C/g, 1, 3, 3), or of its adjoint
    ``transpose(w, groups)`` (:func:`~fastconv.cpu.engine.transpose_weight`), cached.

    The cache (the last 16 weights) is keyed by content, not identity: the pipeline
    hands the kernels fresh views of the caller's weight on every call, and an optimiser
    updates weights in place. The key is the address of the data, shape, dtype, m, and a
    CRC-32 of the bytes (~0.1 ms for a 128x128x3x3 float32 weight, against the transform's
    few ms): a weight changed in place, or new data at a reused address, misses."""
    wc = np.ascontiguousarray(w)
    key = (wc.ctypes.data, wc.shape, wc.dtype.str, groups, m, transpose is not None,
           zlib.crc32(wc.reshape(-1).view(np.uint8)))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    if transpose is not None:
        wc = transpose(wc, groups)
    U_ = _transform_filters(wc, groups, m)
    with _cache_lock:
        _cache[key] = U_
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return U_


# --- wrappers ----------------------------------------------------------------------------
def run(x, Uw, bias, m, groups, O, out_hw, out, stages=7):
    """Run the kernel: ``out`` (N, O, D, Ho, Wo) = the valid 3x3 correlation of ``x``
    (N, C, D, Hx, Wx) from its first row and column (Hx >= Ho + 2, Wx >= Wo + 2)."""
    N, C, D, Hx, Wx = x.shape
    Ho, Wo = out_hw
    dt = x.dtype
    Cg, Og = C // groups, O // groups
    A2 = (m + 2) ** 2
    th, tw = -(-Ho // m), -(-Wo // m)
    if (Hx, Wx) != (m * th + 2, m * tw + 2):
        # the input cut or extended with zeros to whole tiles (one parallel pass), so
        # that every tile of every tile row is an interior vector run
        xe = workspace("winograd.xe", (N, C, D, m * th + 2, m * tw + 2), dt)
        embed(xe, np.ascontiguousarray(x[:, :, :, :m * th + 2, :m * tw + 2]), 0, 0, 0)
        x, Hx, Wx = xe, m * th + 2, m * tw + 2
    y = out
    if (Ho, Wo) != (m * th, m * tw):            # ragged: whole tiles, then cropped
        y = workspace("winograd.ye", (N, O, D, m * th, m * tw), dt)
    nt = numba.get_num_threads()
    nob = -(-Og // GEMM_ROWS)
    npan = -(-(N * D * th * tw) // PANEL)
    nos = max(1, min(nob, -(-n_tasks_target() // (groups * npan))))
    scV = workspace("winograd.V", (nt, A2 * _row_stride(Cg)), dt)
    scM = workspace("winograd.M", (nt, A2 * _row_stride(nob * GEMM_ROWS)), dt)
    with serial_if_small(N * O * D * Ho * Wo * Cg * 9):
        _winograd(y.reshape(-1), x.reshape(-1), Uw, bias, m, N, C, D, Hx, Wx,
                  O, y.shape[3], y.shape[4], groups, nos, scV, scM, stages)
        if y is not out:
            crop(out, y)
    return out


def forward(m, xp, w, bias, stride, dilation, groups, out):
    """out[n, o] = bias[o] + the 3x3 correlation of xp (stride and dilation 1)."""
    Uw = filters(w, groups, m)
    return run(np.ascontiguousarray(xp), Uw, np.ascontiguousarray(bias), m, groups,
               w.shape[0], out.shape[3:], out)


def bwd_input(m, transpose, go, w, padded_size, stride, dilation, groups):
    """dL/dxp: the full correlation of go with the flipped, transposed weight
    ``transpose(w, groups)`` (the window of the whole padded input, always in reach)."""
    return bwd_input_window(m, transpose, go, w, padded_size,
                            tuple((0, n) for n in padded_size), stride, dilation, groups)


def bwd_input_window(m, transpose, go, w, padded_size, window, stride, dilation, groups):
    """The input gradient over ``window`` ((start, size) per axis) of the padded input
    only: the full correlation of grad_out shifted by the window's start (the unpadded
    input of a zero-padded layer: no work on the padding's rows and columns, no crop).
    None when a start or the padding behind exceeds the kernel's reach (2): the caller
    then crops the full gradient. grad_out goes, shifted, into a workspace that also
    holds the zero rows and columns the last (ragged) tiles read: every input tile is
    then an interior vector run (one parallel pass, cheaper than scalar edge tiles)."""
    N, O, D, Ho, Wo = go.shape
    C = w.shape[1] * groups
    (d0, dn), (h0, hn), (w0, wn) = window
    rows, cols = (m * -(-n // m) + 2 for n in (hn, wn))
    if h0 > 2 or w0 > 2 or Ho + 2 - h0 > rows or Wo + 2 - w0 > cols:
        return None
    Uw = filters(w, groups, m, transpose)
    gx = np.empty((N, C, dn, hn, wn), dtype=go.dtype)
    gop = workspace("winograd.go", (N, O, dn, rows, cols), go.dtype)
    embed(gop, np.ascontiguousarray(go[:, :, d0:d0 + dn]), 0, 2 - h0, 2 - w0)
    return run(gop, Uw, np.zeros(C, dtype=go.dtype), m, groups, C, (hn, wn), gx)


# --- weight gradient ---------------------------------------------------------------------
# dL/dU[xi] = sum over tiles of (A dY A^T)[xi] (B^T d B)[xi] for the alpha^2 positions xi,
# U = G w G^T (A = A^T's transpose; dY: grad_out's m x m tiles), then dL/dw = G^T dU G in
# float64. Input and grad_out are read channels-last (one transposing pass each), so that
# the transforms run on vectors of channels and leave per panel of tiles the matrices
# V[xi] (tiles x C) and Gy[xi] (tiles x O) whose products, summed over the panel's tiles,
# are register-tiled GEMMs into each thread's dU.
_ct_in2, _ct_in4 = (channel_transform(matrices(m)[2], f"in{m}") for m in (2, 4))
_ct_gy2, _ct_gy4 = (channel_transform(np.ascontiguousarray(matrices(m)[0].T), f"gy{m}")
                    for m in (2, 4))
_gemm_add1, _gemm_add2, _gemm_add3 = (gemm_tile(GEMM_ROWS, v, accumulate=True) for v in (1, 2, 3))
_transpose = transpose_block()
WGRAD_PANEL = 48
WGRAD_DU_BYTES = 4 << 20     # a task's rows of the dU partial sums


@njit(parallel=True, **JIT)
def _channels_last(dst, src):
    """dst (N, D, H', W', C) = src (N, C, D, H, W) moved channels-last, zero where
    H' > H or W' > W: L x L blocks transposed in registers (_wino_ir.transpose_block)."""
    N, D, Hp, Wp, C = dst.shape
    H, W = src.shape[3], src.shape[4]
    L = VECTOR_BYTES // dst.itemsize
    df = dst.reshape(dst.size)
    sf = src.reshape(src.size)
    for task in prange(N * D * Hp):
        h = task % Hp
        nd = task // Hp
        n = nd // D
        d = nd - n * D
        if h >= H:
            dst[n, d, h] = 0
            continue
        drow = task * Wp * C
        for c0 in range(0, C, L):
            s0 = ((n * C + c0) * D + d) * H * W + h * W
            for w0 in range(0, Wp, L):
                _transpose(df, drow + w0 * C + c0, C, min(L, Wp - w0), sf, s0 + w0, D * H * W,
                           W - w0, C - c0)


@njit(**JIT)
def _wgrad_gemm(nv, acc, a0, rs, V, v0, vs, G, g0, gs, K):
    if nv == 3:
        _gemm_add3(acc, a0, rs, V, v0, vs, G, g0, gs, K)
    elif nv == 2:
        _gemm_add2(acc, a0, rs, V, v0, vs, G, g0, gs, K)
    else:
        _gemm_add1(acc, a0, rs, V, v0, vs, G, g0, gs, K)


@njit(parallel=True, **JIT)
def _wgrad(dU, xT, gT, m, N, D, C, O, groups, th, tw, Hx, Wx, Hg, Wg, Lw, TB, OC, nsplit,
           scV, scG, stages=3):
    # dU: (threads, groups, alpha^2 * Ogp * Cgp) partial sums, zero on entry
    # xT: (N, D, Hx, Wx, C) flat, every tile inside; gT: (N, D, Hg, Wg, O) flat
    # Tasks: (group, chunk of OC output channels, range of the panels of TB tiles in
    # (n, d, tile row, tile column) order). A task adds into its thread's dU the chunk's
    # rows only (alpha^2 x OC x Cgp: sized to stay in L2 while the task's panels run);
    # per panel scV[thread] (alpha^2, TB, Cgp) and scG[thread] (alpha^2, TB, OC), rows
    # XV / XG apart. The input's transform is repeated per chunk (one chunk unless the
    # channels are many).
    A2 = (m + 2) * (m + 2)
    Cg = C // groups
    Og = O // groups
    Cgp = (Cg + Lw - 1) // Lw * Lw
    Ogp = (Og + Lw - 1) // Lw * Lw
    XV = TB * Cgp + 16
    XG = TB * OC + 16
    R = GEMM_ROWS
    P = N * D * th * tw
    npan = (P + TB - 1) // TB
    noc = (Ogp + OC - 1) // OC
    nvec = Cgp // Lw
    nblk = (nvec + 2) // 3                  # GEMM blocks of 2 or 3 vectors (16 or 24
    for task in prange(groups * noc * nsplit):      # accumulators), as even as can be
        sp = task % nsplit
        r = task // nsplit
        oc = r % noc
        g = r // noc
        o0 = oc * OC
        on = min(OC, Og - o0)                       # the chunk's real channels
        tid = get_thread_id()
        V = scV[tid]
        Gm = scG[tid]
        acc = dU[tid, g]
        for pan in range(sp * npan // nsplit, (sp + 1) * npan // nsplit):
            t0 = pan * TB
            nt = min(TB, P - t0)
            for i in range(nt if stages & 1 else 0):
                t = t0 + i
                tc = t % tw
                r = t // tw
                tr = r % th
                nd = r // th
                xb = ((nd * Hx + m * tr) * Wx + m * tc) * C + g * Cg
                gb = ((nd * Hg + m * tr) * Wg + m * tc) * O + g * Og + o0
                for cb in range(0, Cg, Lw):
                    if m == 2:
                        _ct_in2(V, i * Cgp + cb, XV, xT, xb + cb, Wx * C, C, Cg - cb)
                    else:
                        _ct_in4(V, i * Cgp + cb, XV, xT, xb + cb, Wx * C, C, Cg - cb)
                for ob in range(0, on, Lw):
                    if m == 2:
                        _ct_gy2(Gm, i * OC + ob, XG, gT, gb + ob, Wg * O, O, on - ob)
                    else:
                        _ct_gy4(Gm, i * OC + ob, XG, gT, gb + ob, Wg * O, O, on - ob)
            for xi in range(A2 if stages & 2 else 0):
                for ob in range(0, min(OC, Ogp - o0), R):
                    for b in range(nblk):
                        cv = b * nvec // nblk
                        _wgrad_gemm((b + 1) * nvec // nblk - cv, acc,
                                    (xi * Ogp + o0 + ob) * Cgp + cv * Lw, Cgp,
                                    V, xi * XV + cv * Lw, Cgp, Gm, xi * XG + ob, OC, nt)


@njit(parallel=True, **JIT)
def _filter_grad(gw, dU, G):
    """gw[g*Og + o, c] = G^T (sum over threads of dU[:, g, :, o, c]) G, in float64 (the
    adjoint of the filter transform U = G w G^T). Every loop runs along the channels c
    (contiguous in dU, vectorised); the result is transposed into gw at the end."""
    nt, groups, A2, _, _ = dU.shape
    O, Cg = gw.shape[0], gw.shape[1]
    Og = O // groups
    alpha = G.shape[0]
    for task in prange(O):
        g = task // Og
        o = task - g * Og
        u = np.zeros((A2, Cg))                       # (per output channel: small)
        for th in range(nt):
            for ab in range(A2):
                for c in range(Cg):
                    u[ab, c] += dU[th, g, ab, o, c]
        v = np.zeros((3, alpha, Cg))                 # v = G^T u
        for i in range(3):
            for a in range(alpha):
                ga = G[a, i]
                for b in range(alpha):
                    for c in range(Cg):
                        v[i, b, c] += ga * u[a * alpha + b, c]
        r = np.zeros((3, 3, Cg))                     # r = v G
        for i in range(3):
            for j in range(3):
                for b in range(alpha):
                    gb = G[b, j]
                    for c in range(Cg):
                        r[i, j, c] += v[i, b, c] * gb
        for c in range(Cg):
            for i in range(3):
                for j in range(3):
                    gw[task, c, 0, i, j] = r[i, j, c]


def wgrad_chunks(m, Cg, Og, itemsize):
    """(OC, chunks): the weight gradient's output channels per task, so that a task's rows
    of dU (alpha^2 x OC x Cg, padded to vectors) stay within WGRAD_DU_BYTES, and how many
    chunks (each transforms the input again)."""
    Lw = VECTOR_BYTES // itemsize
    Cgp, Ogp = -(-Cg // Lw) * Lw, -(-Og // Lw) * Lw
    OC = max(Lw, min(Ogp, WGRAD_DU_BYTES // ((m + 2) ** 2 * Cgp * itemsize) // Lw * Lw))
    noc = -(-Ogp // OC)
    return -(-Ogp // noc // Lw) * Lw, noc                 # even chunks


def bwd_weight(m, xp, go, kernel, stride, dilation, groups, stages=3):
    """dL/dw of the 3x3 correlation of padded ``xp`` (stride and dilation 1) by F(m x m, 3x3)."""
    N, C, D = xp.shape[:3]
    O, Ho, Wo = go.shape[1], go.shape[3], go.shape[4]
    alpha = m + 2
    A2 = alpha * alpha
    th, tw = -(-Ho // m), -(-Wo // m)
    T = N * D * th * tw
    dt = xp.dtype
    Lw = VECTOR_BYTES // dt.itemsize
    Cg, Og = C // groups, O // groups
    Cgp, Ogp = -(-Cg // Lw) * Lw, -(-Og // Lw) * Lw
    xT = workspace("winograd.xT", (N, D, m * th + 2, m * tw + 2, C), dt)
    gT = workspace("winograd.gT", (N, D, m * th, m * tw, O), dt)
    nt = numba.get_num_threads()
    TB = WGRAD_PANEL
    OC, noc = wgrad_chunks(m, Cg, Og, dt.itemsize)
    nsplit = max(1, min(-(-T // TB), -(-n_tasks_target() // (groups * noc))))
    scV = workspace("winograd.wV", (nt, A2 * (TB * Cgp + 16)), dt)
    scG = workspace("winograd.wG", (nt, A2 * (TB * OC + 16)), dt)
    dU = np.zeros((nt, groups, A2 * Ogp * Cgp), dtype=dt)
    with serial_if_small(N * O * D * Ho * Wo * Cg * 9):
        _channels_last(xT, np.ascontiguousarray(xp))
        _channels_last(gT, np.ascontiguousarray(go))
        _wgrad(dU, xT.reshape(-1), gT.reshape(-1), m, N, D, C, O, groups, th, tw,
               xT.shape[2], xT.shape[3], gT.shape[2], gT.shape[3], Lw, TB, OC, nsplit, scV, scG,
               stages)
    gw = np.empty((O, Cg, 1, 3, 3), dtype=dt)
    _filter_grad(gw, dU.reshape(nt, groups, A2, Ogp, Cgp), matrices(m)[1])
    return gw
