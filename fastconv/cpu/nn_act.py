"""Elementwise and row-wise kernels for the layers: ReLU and log-softmax (numba @njit).

Arrays are C-contiguous: ReLU works on flat arrays, log-softmax on rows of a 2-D
(M, K) array (the softmax axis last). Parallel loops split the output into disjoint
chunks or rows.
"""
import math

import numpy as np
from numba import njit, prange

from ._common import JIT

CHUNK = 1 << 14   # elements per parallel task


@njit(parallel=True, **JIT)
def _relu_fwd(out, x):
    # out, x: (n,) flat;  out = max(x, 0), NaN propagates (as torch.relu)
    n = x.shape[0]
    for t in prange((n + CHUNK - 1) // CHUNK):
        for i in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            v = x[i]
            out[i] = v if (v > 0 or v != v) else 0


@njit(parallel=True, **JIT)
def _relu_bwd(gx, go, y):
    # gx, go, y: (n,) flat;  gx = go where the forward's output y > 0, else 0
    n = go.shape[0]
    for t in prange((n + CHUNK - 1) // CHUNK):
        for i in range(t * CHUNK, min(n, (t + 1) * CHUNK)):
            gx[i] = go[i] if y[i] > 0 else 0


@njit(parallel=True, **JIT)
def _log_softmax_fwd(out, x):
    # out, x: (M, K);  out[m] = x[m] - max - log(sum(exp(x[m] - max)))
    M, K = x.shape
    for m in prange(M):
        xr = x[m]
        mx = -np.inf
        for k in range(K):
            if xr[k] > mx or xr[k] != xr[k]:
                mx = xr[k]
        s = 0.0
        for k in range(K):
            s += math.exp(xr[k] - mx)
        lse = mx + math.log(s)
        orow = out[m]
        for k in range(K):
            orow[k] = xr[k] - lse


@njit(parallel=True, **JIT)
def _log_softmax_bwd(gx, go, y):
    # gx, go, y: (M, K), y the forward's output;  gx = go - exp(y) * sum(go)
    M, K = go.shape
    for m in prange(M):
        s = 0.0
        for k in range(K):
            s += go[m, k]
        for k in range(K):
            gx[m, k] = go[m, k] - math.exp(y[m, k]) * s


def relu_fwd(x):
    out = np.empty_like(x)
    _relu_fwd(out.reshape(-1), x.reshape(-1))
    return out


def relu_bwd(go, y):
    gx = np.empty_like(go)
    _relu_bwd(gx.reshape(-1), go.reshape(-1), y.reshape(-1))
    return gx


def log_softmax_fwd(x2):
    out = np.empty_like(x2)
    _log_softmax_fwd(out, x2)
    return out


def log_softmax_bwd(go2, y2):
    gx = np.empty_like(go2)
    _log_softmax_bwd(gx, go2, y2)
    return gx
