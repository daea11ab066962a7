"""Elementwise and row-wise kernels for the layers: ReLU and log-softmax (numba @njit).

Arrays are C-contiguous: ReLU works on flat arrays, log-softmax on rows of a 2-D
(M, K) array (the softmax axis last). Each operation has a serial kernel and a parallel
one that splits the output into disjoint chunks or rows; the wrappers use the parallel
one only from ``PARALLEL_MIN`` elements on (a parallel region costs more than a small
array's work, and far more when other processes share the cores).
"""
import math

import numpy as np
from numba import njit, prange

from ._common import JIT, U

EXACT = dict(JIT, fastmath=False)

CHUNK = 1 << 14          # elements per parallel task
PARALLEL_MIN = 1 << 17   # elements before going parallel (workers spin briefly between
                         # regions, _config: channel sums of 368k elements 27 -> 14 us)


@njit(**JIT)
def _relu_chunk(out, x, i0, i1):
    # out[i] = max(x[i], 0) for i0 <= i < i1; NaN propagates (as torch.relu)
    for i in range(i0, i1):
        v = x[i]
        out[i] = v if (v > 0 or v != v) else 0


@njit(**JIT)
def _relu_fwd(out, x):
    # out, x: (n,) flat
    _relu_chunk(out, x, 0, x.shape[0])


@njit(parallel=True, **JIT)
def _relu_fwd_par(out, x):
    n = x.shape[0]
    for t in prange((n + CHUNK - 1) // CHUNK):
        _relu_chunk(out, x, t * CHUNK, min(n, (t + 1) * CHUNK))


@njit(**JIT)
def _relu_bwd_chunk(gx, go, y, i0, i1):
    # gx[i] = 0 where the forward's output y[i] <= 0, else go[i] (NaN passes, as PyTorch)
    for i in range(i0, i1):
        gx[i] = 0 if y[i] <= 0 else go[i]


@njit(**JIT)
def _relu_bwd(gx, go, y):
    # gx, go, y: (n,) flat
    _relu_bwd_chunk(gx, go, y, 0, go.shape[0])


@njit(parallel=True, **JIT)
def _relu_bwd_par(gx, go, y):
    n = go.shape[0]
    for t in prange((n + CHUNK - 1) // CHUNK):
        _relu_bwd_chunk(gx, go, y, t * CHUNK, min(n, (t + 1) * CHUNK))


@njit(**EXACT)
def _log_softmax_row(out, x):
    # out = (x - max) - log(sum(exp(x - max))); float64 accumulation. No reassociation
    # (EXACT): x - (max + log s) would lose everything for huge logits
    K = x.shape[0]
    mx = -np.inf
    for k in range(K):
        if x[k] > mx or x[k] != x[k]:
            mx = x[k]
    s = 0.0
    for k in range(K):
        s += math.exp(x[k] - mx)
    ls = math.log(s)
    for k in range(K):
        out[k] = (x[k] - mx) - ls


@njit(**JIT)
def _log_softmax_fwd(out, x):
    # out, x: (M, K)
    for m in range(x.shape[0]):
        _log_softmax_row(out[m], x[m])


@njit(parallel=True, **JIT)
def _log_softmax_fwd_par(out, x):
    for m in prange(x.shape[0]):
        _log_softmax_row(out[m], x[m])


@njit(**JIT)
def _log_softmax_bwd_row(gx, go, y):
    # gx = go - exp(y) * sum(go), y the forward's output
    s = 0.0
    for k in range(go.shape[0]):
        s += go[k]
    for k in range(go.shape[0]):
        gx[k] = go[k] - math.exp(y[k]) * s


@njit(**JIT)
def _log_softmax_bwd(gx, go, y):
    # gx, go, y: (M, K)
    for m in range(go.shape[0]):
        _log_softmax_bwd_row(gx[m], go[m], y[m])


@njit(parallel=True, **JIT)
def _log_softmax_bwd_par(gx, go, y):
    for m in prange(go.shape[0]):
        _log_softmax_bwd_row(gx[m], go[m], y[m])


def relu_fwd(x, out=None):
    out = np.empty_like(x) if out is None else out
    k = _relu_fwd_par if x.size >= PARALLEL_MIN else _relu_fwd
    k(out.reshape(-1), x.reshape(-1))
    return out


def relu_bwd(go, y):
    gx = np.empty_like(go)
    k = _relu_bwd_par if go.size >= PARALLEL_MIN else _relu_bwd
    k(gx.reshape(-1), go.reshape(-1), y.reshape(-1))
    return gx


def log_softmax_fwd(x2):
    out = np.empty_like(x2)
    k = _log_softmax_fwd_par if x2.size >= PARALLEL_MIN else _log_softmax_fwd
    k(out, x2)
    return out


def log_softmax_bwd(go2, y2):
    gx = np.empty_like(go2)
    k = _log_softmax_bwd_par if go2.size >= PARALLEL_MIN else _log_softmax_bwd
    k(gx, go2, y2)
    return gx


@njit(**JIT)
def _channel_sums(out, g, N, O, P):
    # out[o] = sum over n, p of g[n, o, p] (g flat, C-ordered), accumulated in float64:
    # contiguous rows of P, vectorised
    for o in range(O):
        out[o] = 0.0
    for n in range(N):
        for o in range(O):
            base = U((n * O + o) * P)
            acc = 0.0
            for p in range(P):
                acc += g[base + U(p)]
            out[o] += acc


@njit(parallel=True, **JIT)
def _channel_sums_par(out, g):
    # out[o] = sum over n, p of g[n, o, p], accumulated in float64
    N, O, P = g.shape
    for o in prange(O):
        acc = 0.0
        for n in range(N):
            row = g[n, o]
            for p in range(P):
                acc += row[p]
        out[o] = acc


def channel_sums(g3):
    """The bias gradient of a convolution: sums of grad_output (N, O, P) over images and
    positions, per channel (float64 accumulation; parallel over channels on large arrays).
    Other dtypes or layouts: NumPy's sum."""
    if g3.dtype not in (np.float32, np.float64) or not g3.flags.c_contiguous:
        return g3.sum(axis=(0, 2))
    out = np.empty(g3.shape[1], dtype=np.float64)
    if g3.size < PARALLEL_MIN:
        _channel_sums(out, g3.reshape(-1), *g3.shape)
    else:
        _channel_sums_par(out, g3)
    return out.astype(g3.dtype)


# -- optimiser updates ------------------------------------------------------------------------
@njit(**EXACT)
def _sgd_update(p, g, buf, lr, wd, mom, damp1, flags):
    # One SGD step over flat arrays of one dtype, in the order (and roundings) of the NumPy
    # formulation in fastconv.optim.SGD: d = g (-g to maximize) + wd * p; buf = d on the first
    # step, else buf * mom + (1 - dampening) * d; d = d + mom * buf (nesterov) or buf;
    # p -= lr * d. flags bits: 1 maximize, 2 weight decay, 4 momentum, 8 first step,
    # 16 dampening != 0, 32 nesterov, 64 lr == 1. EXACT: no contraction into FMAs.
    maximize = (flags & 1) != 0
    decay = (flags & 2) != 0
    momentum = (flags & 4) != 0
    first = (flags & 8) != 0
    damped = (flags & 16) != 0
    nesterov = (flags & 32) != 0
    unit_lr = (flags & 64) != 0
    for i in range(p.shape[0]):
        d = -g[i] if maximize else g[i]
        if decay:
            d = d + wd * p[i]
        if momentum:
            if first:
                b = d
            else:
                b = buf[i] * mom
                b = b + damp1 * d if damped else b + d
            buf[i] = b
            d = d + mom * b if nesterov else b
        p[i] = p[i] - d if unit_lr else p[i] - lr * d


def sgd_scalars(dtype, lr, weight_decay, momentum, dampening, nesterov, maximize):
    """A parameter group's options for :func:`sgd_update` on arrays of ``dtype``: scalars
    rounded to the dtype first, as NumPy does with Python floats, and the flags."""
    t = np.dtype(dtype).type
    flags = (1 * bool(maximize) | 2 * (weight_decay != 0) | 4 * (momentum != 0)
             | 16 * (dampening != 0) | 32 * bool(nesterov) | 64 * (lr == 1))
    return t(lr), t(weight_decay), t(momentum), t(1 - dampening), flags


def sgd_update(p, g, buf, scalars, first):
    """In-place SGD step on C-contiguous float arrays of one dtype (``buf``: the momentum
    buffer, written on the first step; ignored without momentum; ``scalars`` from
    :func:`sgd_scalars`)."""
    lr, wd, mom, damp1, flags = scalars
    _sgd_update(p.reshape(-1), g.reshape(-1), (p if buf is None else buf).reshape(-1), lr, wd,
                mom, damp1, flags | (8 if first else 0))


# -- negative log-likelihood ------------------------------------------------------------------
@njit(**EXACT)
def _nll_rows(losses, wi, rows, t, w, use_w, ignore_index):
    # rows (M, C) log-probabilities, t (M,) int64 targets, w (C,) class weights (use_w).
    # Per row: wi = w[t] (1 without weights, 0 for ignore_index) and losses = -(wi * rows[m, t])
    # (0 for ignore_index) in the rows' dtype. Returns (the first row whose target is outside
    # [0, C) and not ignore_index, or -1; the float64 sums of losses and of wi).
    M, C = rows.shape
    lsum = 0.0
    wsum = 0.0
    for m in range(M):
        tm = t[m]
        if tm == ignore_index:
            losses[m] = 0
            wi[m] = 0
            continue
        if tm < 0 or tm >= C:
            return m, lsum, wsum
        wm = w[tm] if use_w else 1.0        # a product of two floats rounds once either way
        wi[m] = wm
        losses[m] = -(wm * rows[m, tm])
        lsum += losses[m]
        wsum += wi[m]
    return -1, lsum, wsum


def nll_rows(rows, t, w, ignore_index):
    """Per-row NLL losses and target weights of ``rows`` (M, C) for targets ``t`` (M,) int64
    (see _nll_rows); returns (losses, wi, first bad row or -1, sum of losses, sum of wi)."""
    M = rows.shape[0]
    losses = np.empty(M, dtype=rows.dtype)
    wi = np.empty(M, dtype=rows.dtype)
    bad, lsum, wsum = _nll_rows(losses, wi, rows, t, rows[0] if w is None else w,
                                w is not None, ignore_index) if M else (-1, 0.0, 0.0)
    return losses, wi, bad, lsum, wsum


@njit(**EXACT)
def _nll_grad_rows(g, t, wi, gl, sd, per_row, ignore_index):
    # g (M, C) zeros on entry: g[m, t[m]] = -(wi[m] * gl[m]) in g's dtype (per_row), else
    # -(wi[m] * sd) in float64, rounded to g's dtype; rows with ignore_index stay 0
    for m in range(t.shape[0]):
        tm = t[m]
        if tm == ignore_index:
            continue
        if per_row:
            g[m, tm] = -(wi[m] * gl[m])
        else:
            g[m, tm] = -(wi[m] * sd)


def nll_grad(shape, t, wi, gl, sd, ignore_index):
    """The gradient of an NLL loss with respect to its (M, C) rows: ``gl`` (M,) per-row
    gradients of the loss, or None and the scalar factor ``sd`` (float64)."""
    g = np.zeros(shape, dtype=wi.dtype)
    if shape[0]:
        _nll_grad_rows(g, t, wi, wi if gl is None else gl, float(sd), gl is not None,
                       ignore_index)
    return g
