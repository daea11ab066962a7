"""2-D pooling kernels (numba @njit) on prepared, C-contiguous arrays.

Every kernel works on planes: ``x`` is (P, H, W) with P = N * C, and parallelises over
planes, so each task owns its output plane (and, backward, its input-gradient plane):
threads never write the same memory. Windows follow PyTorch: output position ``oh``
covers rows ``oh * sH - pH + kh * dH`` for ``kh < kH``; positions outside the input are
skipped (max pooling) or counted as zeros (average pooling with ``count_include_pad``).

Wrappers (``fastconv.nn.functional``) validate and allocate; kernels only compute.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT


@njit(parallel=True, **JIT)
def _maxpool2d_fwd(out, idx, x, kH, kW, sH, sW, pH, pW, dH, dW):
    # out, idx: (P, OH, OW)   x: (P, H, W);  idx = h * W + w of the maximum (PyTorch's indices)
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for p in prange(P):
        xp = x[p]
        for oh in range(OH):
            h0 = oh * sH - pH
            for ow in range(OW):
                w0 = ow * sW - pW
                best = -np.inf
                bi = -1
                for kh in range(kH):
                    h = h0 + kh * dH
                    if h < 0 or h >= H:
                        continue
                    for kw in range(kW):
                        w = w0 + kw * dW
                        if w < 0 or w >= W:
                            continue
                        v = xp[h, w]
                        if bi < 0 or v > best or v != v:    # NaN propagates, as in PyTorch
                            best = v
                            bi = h * W + w
                out[p, oh, ow] = best
                idx[p, oh, ow] = bi


@njit(parallel=True, **JIT)
def _maxpool2d_bwd(gx, go, idx):
    # gx: (P, H * W) overwritten   go, idx: (P, OH * OW);  gx[p, idx] += go
    P, HW = gx.shape
    Q = go.shape[1]
    for p in prange(P):
        g = gx[p]
        for i in range(HW):
            g[i] = 0
        gp = go[p]
        ip = idx[p]
        for q in range(Q):
            g[ip[q]] += gp[q]


@njit(**JIT)
def _avg_window(oh, ow, H, W, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # PyTorch's avg_pool2d window: clipped bounds and the divisor for one output position.
    h0 = oh * sH - pH
    w0 = ow * sW - pW
    h1 = min(h0 + kH, H + pH)
    w1 = min(w0 + kW, W + pW)
    pool = (h1 - h0) * (w1 - w0)
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    h1 = min(h1, H)
    w1 = min(w1, W)
    if divisor > 0:
        div = divisor
    elif count_include_pad:
        div = pool
    else:
        div = (h1 - h0) * (w1 - w0)
    return h0, h1, w0, w1, div


@njit(parallel=True, **JIT)
def _avgpool2d_fwd(out, x, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # out: (P, OH, OW)   x: (P, H, W);  divisor <= 0: none given
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for p in prange(P):
        xp = x[p]
        for oh in range(OH):
            for ow in range(OW):
                h0, h1, w0, w1, div = _avg_window(oh, ow, H, W, kH, kW, sH, sW, pH, pW,
                                                  count_include_pad, divisor)
                if h0 >= h1 or w0 >= w1:
                    out[p, oh, ow] = 0
                    continue
                acc = xp[h0, w0] * 0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += xp[h, w]
                out[p, oh, ow] = acc / div


@njit(parallel=True, **JIT)
def _avgpool2d_bwd(gx, go, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # gx: (P, H, W) overwritten   go: (P, OH, OW)
    P, H, W = gx.shape
    OH, OW = go.shape[1], go.shape[2]
    for p in prange(P):
        g = gx[p]
        for h in range(H):
            for w in range(W):
                g[h, w] = 0
        for oh in range(OH):
            for ow in range(OW):
                h0, h1, w0, w1, div = _avg_window(oh, ow, H, W, kH, kW, sH, sW, pH, pW,
                                                  count_include_pad, divisor)
                if h0 >= h1 or w0 >= w1:
                    continue
                v = go[p, oh, ow] / div
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        g[h, w] += v


def maxpool2d_fwd(x, out_size, kernel, stride, padding, dilation):
    """x: (P, H, W) C-contiguous. Returns (out, indices), each (P, OH, OW)."""
    P = x.shape[0]
    out = np.empty((P,) + tuple(out_size), dtype=x.dtype)
    idx = np.empty((P,) + tuple(out_size), dtype=np.int64)
    _maxpool2d_fwd(out, idx, x, *kernel, *stride, *padding, *dilation)
    return out, idx


def maxpool2d_bwd(go, idx, in_size):
    """go, idx: (P, OH, OW) C-contiguous. Returns the input gradient (P, H, W)."""
    P = go.shape[0]
    H, W = in_size
    gx = np.empty((P, H * W), dtype=go.dtype)
    _maxpool2d_bwd(gx, go.reshape(P, -1), idx.reshape(P, -1))
    return gx.reshape(P, H, W)


def avgpool2d_fwd(x, out_size, kernel, stride, padding, count_include_pad, divisor):
    """x: (P, H, W) C-contiguous; ``divisor`` 0 for none. Returns (P, OH, OW)."""
    out = np.empty((x.shape[0],) + tuple(out_size), dtype=x.dtype)
    _avgpool2d_fwd(out, x, *kernel, *stride, *padding, bool(count_include_pad), int(divisor))
    return out


def avgpool2d_bwd(go, in_size, kernel, stride, padding, count_include_pad, divisor):
    """go: (P, OH, OW) C-contiguous. Returns the input gradient (P, H, W)."""
    gx = np.empty((go.shape[0],) + tuple(in_size), dtype=go.dtype)
    _avgpool2d_bwd(gx, go, *kernel, *stride, *padding, bool(count_include_pad), int(divisor))
    return gx
