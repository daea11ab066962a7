"""im2col + GEMM: gather input patches into a column matrix, then BLAS GEMMs (batched
over groups by ``np.matmul``).

Small images share one GEMM per block of images (the column matrix is built in blocks,
so memory stays bounded). Large images are cut into tiles of whole output rows: each of
our threads gathers a tile and multiplies it by a single-threaded GEMM straight into the
output while the tile is still in cache (the weight gradient: into a partial sum of the
thread's own). NumPy's BLAS runs single-threaded during such
a call (threadpoolctl, see cpu/_blas.py); a BLAS that cannot be set keeps the blocked path.

Backward: ``col2im`` scatter-adds ``W^T @ grad_out`` into the padded input gradient;
the weight gradient is ``grad_out @ col^T``.
"""
import concurrent.futures
import itertools
import os
import threading

import numba
import numpy as np
from numba import njit, prange

from . import _blas
from ._common import JIT, U, workspace

COL_BUDGET_BYTES = 48 << 20   # largest column matrix held at once
BATCH_BELOW_BYTES = 1 << 20   # images with a smaller column matrix share one GEMM
CHUNK_BYTES = 3 << 19         # column tile per thread in the one-image-per-thread path


@njit(inline="always", **JIT)
def _copy_run(dst, d0, src, s0, step, n):
    # dst[d0 + j] = src[s0 + j*step] for j < n. Runs are short (one output row), too short
    # for LLVM's vectorised loops, so copy 8 at a time as straight-line code (the SLP
    # vectoriser turns each group into one vector load and store when step == 1).
    j = 0
    while j + 8 <= n:
        uj = U(j)
        a = s0 + uj * step
        b = d0 + uj
        dst[b] = src[a]
        dst[b + U(1)] = src[a + step]
        dst[b + U(2)] = src[a + U(2) * step]
        dst[b + U(3)] = src[a + U(3) * step]
        dst[b + U(4)] = src[a + U(4) * step]
        dst[b + U(5)] = src[a + U(5) * step]
        dst[b + U(6)] = src[a + U(6) * step]
        dst[b + U(7)] = src[a + U(7) * step]
        j += 8
    while j < n:
        dst[d0 + U(j)] = src[s0 + U(j) * step]
        j += 1


@njit(inline="always", **JIT)
def _gather_task(col, xf, t, n0, row0, OH, OW, C, Dp, Hp, Wp, KD, KH, KW, sd, sh, sw, dd, dh, dw):
    # column rows t = (g, r) of every image in col (nb, G, R, nrows*OW)
    nb, G, R, L = col.shape
    nrows = L // OW
    g = t // R
    r = t % R
    kw = r % KW
    kh = (r // KW) % KH
    kd = (r // (KW * KH)) % KD
    ci = g * (C // G) + r // (KW * KH * KD)
    for i in range(nb):
        dst = col[i, g, r]
        plane = ((n0 + i) * C + ci) * Dp
        od = row0 // OH
        oh = row0 % OH
        for rr in range(nrows):
            src = U(((plane + od * sd + kd * dd) * Hp + oh * sh + kh * dh) * Wp + kw * dw)
            _copy_run(dst, U(rr * OW), xf, src, U(sw), OW)
            oh += 1
            if oh == OH:
                oh = 0
                od += 1


@njit(parallel=True, **JIT)
def _im2col(col, xp, n0, row0, OH, OW, KD, KH, KW, sd, sh, sw, dd, dh, dw):
    # col: (nb, G, Cg*KD*KH*KW, nrows*OW), any strides along its first three axes
    # xp: (N, C, Dp, Hp, Wp); column rows index (od, oh) from row0
    C, Dp, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3], xp.shape[4]
    xf = xp.reshape(xp.size)              # flat views: offsets instead of per-row slices
    for t in prange(col.shape[1] * col.shape[2]):
        _gather_task(col, xf, t, n0, row0, OH, OW, C, Dp, Hp, Wp, KD, KH, KW, sd, sh, sw, dd, dh, dw)


@njit(**JIT)
def _im2col_serial(col, xp, n0, row0, OH, OW, KD, KH, KW, sd, sh, sw, dd, dh, dw):
    # _im2col on the calling thread alone (for callers that run one image per thread)
    C, Dp, Hp, Wp = xp.shape[1], xp.shape[2], xp.shape[3], xp.shape[4]
    xf = xp.reshape(xp.size)
    for t in range(col.shape[1] * col.shape[2]):
        _gather_task(col, xf, t, n0, row0, OH, OW, C, Dp, Hp, Wp, KD, KH, KW, sd, sh, sw, dd, dh, dw)


@njit(parallel=True, **JIT)
def _col2im(gxp, col, n0, OD, OH, OW, KD, KH, KW, sd, sh, sw, dd, dh, dw):
    # gxp[n0:n0+nb] += col2im(col);  col: (G, Cg*K, nb*OD*OH*OW).  One task per (image, channel):
    # every task writes its own input channel.
    G, R, _ = col.shape
    C = gxp.shape[1]
    Cg = C // G
    K = KD * KH * KW
    P = OD * OH * OW
    nb = col.shape[2] // P
    for t in prange(nb * C):
        i = t // C
        ci = t % C
        g = ci // Cg
        c = ci % Cg
        for k in range(K):
            kw = k % KW
            kh = (k // KW) % KH
            kd = k // (KW * KH)
            src = col[g, c * K + k]
            for od in range(OD):
                for oh in range(OH):
                    gr = gxp[n0 + i, ci, od * sd + kd * dd, oh * sh + kh * dh]
                    base = U(i * P + (od * OH + oh) * OW)
                    for ow in range(OW):
                        gr[U(kw * dw + ow * sw)] += src[base + U(ow)]


@njit(parallel=True, **JIT)
def _scatter_rows(out, res, bias, n0, row0, nrows):
    # out[n0+i, g*Og+o, rows row0:row0+nrows] = res[g, o, (i, rr, ow)] + bias[g*Og+o]
    G, Og, _ = res.shape
    N, O, OD, OH, OW = out.shape
    nb = res.shape[2] // (nrows * OW)
    for t in prange(nb * O):
        i = t // O
        o = t % O
        src = res[o // Og, o % Og]
        bv = bias[o]
        for rr in range(nrows):
            row = row0 + rr
            dst = out[n0 + i, o, row // OH, row % OH]
            base = U((i * nrows + rr) * OW)
            for ow in range(OW):
                dst[ow] = src[base + U(ow)] + bv


def _blocks(N, rows, bytes_per_row):
    """Yield (n0, nb, row0, nrows, stacked) tiles whose column matrix fits the budget.

    ``stacked``: one column matrix per image, multiplied by one stacked ``np.matmul``
    straight into the output (large images: each GEMM is big enough on its own);
    otherwise the images share one GEMM whose result is scattered into the output
    (small images). Blocks are as large as the budget allows: every switch between
    numba's threads (the gather) and the BLAS threads (the GEMM) costs milliseconds on a
    busy core, because OpenBLAS's threads keep spinning after a GEMM."""
    per_image = rows * bytes_per_row
    if per_image <= COL_BUDGET_BYTES:
        nb = max(1, min(N, COL_BUDGET_BYTES // max(per_image, 1)))
        for n0 in range(0, N, nb):
            yield n0, min(nb, N - n0), 0, rows, per_image >= BATCH_BELOW_BYTES
    else:
        nr = max(1, COL_BUDGET_BYTES // bytes_per_row)
        for n in range(N):
            for r0 in range(0, rows, nr):
                yield n, 1, r0, min(nr, rows - r0), False


def _gather(xp, n0, nb, row0, nrows, G, R, OH, OW, kernel, stride, dilation, stacked):
    """The column matrix of a block: (nb, G, R, P) when stacked, else (G, R, nb * P)."""
    L = nrows * OW
    if stacked:
        col = workspace("col", (nb, G, R, L), xp.dtype)
        col4 = col
    else:
        col = workspace("col", (G, R, nb * L), xp.dtype)
        col4 = col.reshape(G, R, nb, L).transpose(2, 0, 1, 3)
    _im2col(col4, xp, n0, row0, OH, OW, *kernel, *stride, *dilation)
    return col


def im2col_fwd(xp, w, bias, stride, dilation, groups, out):
    N, O, OD, OH, OW = out.shape
    KD, KH, KW = w.shape[2:]
    G = groups
    R = w.shape[1] * KD * KH * KW
    wm = w.reshape(G, O // G, R)
    rows = OD * OH
    bytes_per_row = G * R * OW * xp.dtype.itemsize
    threads = numba.get_num_threads()
    if threads > 1 and rows * bytes_per_row >= BATCH_BELOW_BYTES:
        with _blas.single_threaded() as ok:
            if ok:
                _fwd_image_per_thread(xp, wm, bias, out, threads, (KD, KH, KW), stride, dilation)
                return out
    for n0, nb, row0, nrows, stacked in _blocks(N, rows, bytes_per_row):
        col = _gather(xp, n0, nb, row0, nrows, G, R, OH, OW, (KD, KH, KW), stride, dilation,
                      stacked)
        if stacked:                            # the GEMMs write straight into the output
            dst = out[n0:n0 + nb].reshape(nb, G, O // G, rows * OW)
            np.matmul(wm, col, out=dst)
            dst += bias.reshape(G, O // G, 1)
        else:
            res = np.matmul(wm, col, out=workspace("gemm", (G, O // G, col.shape[2]), xp.dtype))
            _scatter_rows(out, res, bias, n0, row0, nrows)
    return out


_pools = {}                   # thread count -> this process's worker pool
_pools_lock = threading.Lock()


def _executor(threads):
    """Our worker pool for ``threads`` workers. Pools are never shut down while the
    process lives: a caller with another numba thread count gets a pool of its own
    instead of replacing one that a concurrent caller is using."""
    with _pools_lock:
        ex = _pools.get(threads)
        if ex is None:
            ex = _pools[threads] = concurrent.futures.ThreadPoolExecutor(
                threads, thread_name_prefix="fastconv-im2col")
        return ex


def _after_fork_in_child():
    # the parent's pools have no threads in the child (and its lock may be held)
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _row_tiles(N, rows, row_bytes):
    """(tiles, nr): tiles of whole output rows of one image, (n, first row), of at most
    nr rows (CHUNK_BYTES of column matrix)."""
    nr = max(1, min(rows, CHUNK_BYTES // max(row_bytes, 1)))
    return [(n, r0) for n in range(N) for r0 in range(0, rows, nr)], nr


def _per_thread(threads, ntiles, worker, static=False):
    """[worker(tiles) for each of our threads, in thread order], with NumPy's BLAS
    single-threaded (the caller's _blas.single_threaded block): the threads pull tile
    indices < ntiles from one shared counter as they finish (next() is atomic), or with
    ``static`` thread i takes tiles i, i + threads, ... (the same tiles in the same
    order on every call: partial sums that add up the same)."""
    nxt = itertools.count()

    def run(i):
        if static:
            return worker(range(i, ntiles, threads))
        return worker(itertools.takewhile(lambda t: t < ntiles, iter(nxt.__next__, None)))

    pool = _executor(threads)
    futures = [pool.submit(run, i) for i in range(threads)]
    concurrent.futures.wait(futures)     # all done (even if one failed) before BLAS is reset
    return [f.result() for f in futures]


def _gathered(xp, tiles, nr, rows, G, R, OH, OW, kernel, stride, dilation, mine):
    """Per tile index in ``mine``: (image, its output columns as a slice of the image's
    rows * OW, the column matrix (G, R, columns)), gathered into this thread's workspace
    (valid until the next tile)."""
    col = workspace("col", (1, G, R, nr * OW), xp.dtype)
    for t in mine:
        n, r0 = tiles[t]
        m = min(nr, rows - r0)
        c = col[:, :, :, :m * OW]
        _im2col_serial(c, xp, n, r0, OH, OW, *kernel, *stride, *dilation)
        yield n, slice(r0 * OW, (r0 + m) * OW), c[0]


def _fwd_image_per_thread(xp, wm, bias, out, threads, kernel, stride, dilation):
    """BLAS single-threaded: each of our threads takes tiles of CHUNK_BYTES of column
    matrix (whole output rows of one image), gathers the tile and multiplies it straight
    into the output while it is still in cache (see cpu/_blas.py)."""
    N, O, OD, OH, OW = out.shape
    G, Og, R = wm.shape
    rows = OD * OH
    tiles, nr = _row_tiles(N, rows, G * R * OW * xp.dtype.itemsize)
    b = bias.reshape(G, Og, 1)

    def worker(mine):
        for n, cols, c in _gathered(xp, tiles, nr, rows, G, R, OH, OW, kernel, stride,
                                    dilation, mine):
            dst = out[n].reshape(G, Og, rows * OW)[:, :, cols]
            np.matmul(wm, c, out=dst)
            dst += b

    _per_thread(threads, len(tiles), worker)


def _wgrad_image_per_thread(xp, go, gw, threads, kernel, stride, dilation):
    """gw (G, Og, R) = sum over tiles of grad_out's tile @ the tile's column matrix^T:
    each of our threads gathers its tiles (as _fwd_image_per_thread) and accumulates
    their single-threaded GEMMs into a partial sum of its own; the partials are added in
    thread order. The tiles are dealt out statically, so that a call's sums run in the
    same order every time (the same bits, as the blocked path gives)."""
    N, O, OD, OH, OW = go.shape
    G, Og, R = gw.shape
    rows = OD * OH
    tiles, nr = _row_tiles(N, rows, G * R * OW * xp.dtype.itemsize)

    def worker(mine):
        prod = workspace("gemm", (G, Og, R), xp.dtype)
        acc = np.zeros((G, Og, R), xp.dtype)
        for n, cols, c in _gathered(xp, tiles, nr, rows, G, R, OH, OW, kernel, stride,
                                    dilation, mine):
            np.matmul(go[n].reshape(G, Og, rows * OW)[:, :, cols], c.transpose(0, 2, 1),
                      out=prod)
            acc += prod
        return acc

    for acc in _per_thread(threads, len(tiles), worker, static=True):
        gw += acc


def im2col_bwd_input(go, w, padded_size, stride, dilation, groups):
    """Gradient with respect to the padded input: col2im(W^T @ grad_out)."""
    N, O, OD, OH, OW = go.shape
    C = w.shape[1] * groups
    KD, KH, KW = w.shape[2:]
    G = groups
    R = w.shape[1] * KD * KH * KW
    wt = np.ascontiguousarray(w.reshape(G, O // G, R).transpose(0, 2, 1))
    gxp = np.zeros((N, C) + tuple(padded_size), dtype=go.dtype)
    P = OD * OH * OW
    nb = max(1, min(N, COL_BUDGET_BYTES // max(G * R * P * go.dtype.itemsize, 1)))
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        g_blk = go[n0:n0 + m].reshape(m, G, O // G, P).transpose(1, 2, 0, 3).reshape(G, O // G, m * P)
        col = np.matmul(wt, g_blk)
        _col2im(gxp, col, n0, OD, OH, OW, KD, KH, KW, *stride, *dilation)
    return gxp


def im2col_bwd_weight(xp, go, kernel, stride, dilation, groups):
    """Gradient with respect to the weight: grad_out @ col^T, accumulated over image blocks."""
    N, O, OD, OH, OW = go.shape
    KD, KH, KW = kernel
    G = groups
    Cg = xp.shape[1] // G
    R = Cg * KD * KH * KW
    rows = OD * OH
    P = rows * OW
    gw = np.zeros((G, O // G, R), dtype=xp.dtype)
    threads = numba.get_num_threads()
    if threads > 1 and G * R * P * xp.dtype.itemsize >= BATCH_BELOW_BYTES:
        with _blas.single_threaded() as ok:
            if ok:
                _wgrad_image_per_thread(xp, go, gw, threads, kernel, stride, dilation)
                return gw.reshape((O, Cg) + tuple(kernel))
    nb = max(1, min(N, COL_BUDGET_BYTES // max(G * R * P * xp.dtype.itemsize, 1)))
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        col = _gather(xp, n0, m, 0, rows, G, R, OH, OW, kernel, stride, dilation, False)
        g_blk = go[n0:n0 + m].reshape(m, G, O // G, P).transpose(1, 2, 0, 3).reshape(G, O // G, m * P)
        gw += np.matmul(g_blk, col.transpose(0, 2, 1))
    return gw.reshape((O, Cg) + tuple(kernel))
