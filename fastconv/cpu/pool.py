"""2-D pooling kernels (numba @njit) on prepared, C-contiguous arrays.

Every kernel works on planes: ``x`` is (P, H, W) with P = N * C. The per-plane work is
one ``@njit`` function; a serial and a parallel driver loop over the planes. Small
problems (the usual case in a training step) run serially: a parallel region costs more
than it saves below ``PARALLEL_MIN`` elements, and much more when other processes share
the cores. Large ones split the planes over threads, so each task owns its output plane
(and, backward, its input-gradient plane): threads never write the same memory.

Windows follow PyTorch: output position ``oh`` covers rows ``oh * sH - pH + kh * dH``
for ``kh < kH``; positions outside the input are skipped (max pooling) or counted as
zeros (average pooling with ``count_include_pad``). Max pooling records the flat index
``h * W + w`` of each maximum, as PyTorch's ``return_indices`` does; a window with no
input element (all padding, possible with dilation) gives -inf and index -1, and its
gradient goes nowhere.

Wrappers (``fastconv.nn.functional``) validate and allocate; kernels only compute.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT

PARALLEL_MIN = 1 << 20    # elements visited (windows x window size) before going parallel


# -- max pooling ------------------------------------------------------------------------------
@njit(**JIT)
def _max_window(x, h0, w0, kH, kW, dH, dW):
    # PyTorch's rule on one window, bounds-checked: the first maximum, or the last NaN
    H, W = x.shape
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
            v = x[h, w]
            if bi < 0 or v > best or v != v:
                best = v
                bi = h * W + w
    return best, bi


@njit(**JIT)
def _inside_range(n_out, n_in, k_eff, s, p):
    # output positions [lo, hi) whose window [o * s - p, o * s - p + k_eff) lies inside [0, n_in)
    lo = min(n_out, (p + s - 1) // s)
    hi = max(lo, min(n_out, (n_in - k_eff + p) // s + 1))
    return lo, hi


@njit(**JIT)
def _maxpool_plane(out, idx, x, kH, kW, sH, sW, pH, pW, dH, dW):
    # out, idx: (OH, OW)   x: (H, W).  Windows fully inside the input use branch-free
    # selects (data-dependent branches cost more than the arithmetic) and only flag NaNs;
    # border windows and the rare window holding a NaN take the exact rule (_max_window).
    H, W = x.shape
    OH, OW = out.shape
    lo, hi = _inside_range(OW, W, (kW - 1) * dW + 1, sW, pW)
    for oh in range(OH):
        h0 = oh * sH - pH
        inside = h0 >= 0 and h0 + (kH - 1) * dH < H
        for ow in range(OW):
            if inside and lo <= ow < hi:
                continue
            out[oh, ow], idx[oh, ow] = _max_window(x, h0, ow * sW - pW, kH, kW, dH, dW)
        if not inside:
            continue
        for ow in range(lo, hi):
            w0 = ow * sW - pW
            best = x[h0, w0]
            bi = h0 * W + w0
            nan = False
            for kh in range(kH):
                h = h0 + kh * dH
                for kw in range(kW):
                    w = w0 + kw * dW
                    v = x[h, w]
                    take = v > best
                    best = v if take else best
                    bi = h * W + w if take else bi
                    nan = nan | (v != v)
            if nan:
                best, bi = _max_window(x, h0, w0, kH, kW, dH, dW)
            out[oh, ow] = best
            idx[oh, ow] = bi


@njit(**JIT)
def _maxpool_plane_2x2(out, idx, x, sH, sW, pH, pW, dH, dW):
    # the common 2x2 window with its four taps unrolled (a runtime-length tap loop costs
    # several times more); otherwise as _maxpool_plane
    H, W = x.shape
    OH, OW = out.shape
    lo, hi = _inside_range(OW, W, dW + 1, sW, pW)
    for oh in range(OH):
        h0 = oh * sH - pH
        h1 = h0 + dH
        inside = h0 >= 0 and h1 < H
        for ow in range(OW):
            if inside and lo <= ow < hi:
                continue
            out[oh, ow], idx[oh, ow] = _max_window(x, h0, ow * sW - pW, 2, 2, dH, dW)
        if not inside:
            continue
        r0 = x[h0]
        r1 = x[h1]
        for ow in range(lo, hi):
            w0 = ow * sW - pW
            w1 = w0 + dW
            best = r0[w0]
            bi = h0 * W + w0
            v = r0[w1]
            take = v > best
            best = v if take else best
            bi = h0 * W + w1 if take else bi
            nan = (best != best) | (v != v)
            v = r1[w0]
            take = v > best
            best = v if take else best
            bi = h1 * W + w0 if take else bi
            nan = nan | (v != v)
            v = r1[w1]
            take = v > best
            best = v if take else best
            bi = h1 * W + w1 if take else bi
            nan = nan | (v != v)
            if nan:
                best, bi = _max_window(x, h0, w0, 2, 2, dH, dW)
            out[oh, ow] = best
            idx[oh, ow] = bi


@njit(**JIT)
def _maxpool_2x2_taps(x, p, h0, h1, w0, w1, W):
    # max of the four taps (first maximum wins), its flat index, and whether a NaN was seen
    best = x[p, h0, w0]
    bi = h0 * W + w0
    v = x[p, h0, w1]
    take = v > best
    best = v if take else best
    bi = h0 * W + w1 if take else bi
    nan = (best != best) | (v != v)
    v = x[p, h1, w0]
    take = v > best
    best = v if take else best
    bi = h1 * W + w0 if take else bi
    nan = nan | (v != v)
    v = x[p, h1, w1]
    take = v > best
    best = v if take else best
    bi = h1 * W + w1 if take else bi
    nan = nan | (v != v)
    return best, bi, nan


@njit(**JIT)
def _maxpool2d_2x2_inside(out, idx, x, sH, sW, dH, dW):
    # 2x2 windows that all lie inside the input (no padding): one flat loop, no bounds
    # checks. Returns whether a NaN was seen (then the caller redoes it by the exact rule).
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    nan = False
    for p in range(P):
        for oh in range(OH):
            h0 = oh * sH
            for ow in range(OW):
                w0 = ow * sW
                best, bi, isn = _maxpool_2x2_taps(x, p, h0, h0 + dH, w0, w0 + dW, W)
                nan = nan | isn
                out[p, oh, ow] = best
                idx[p, oh, ow] = bi
    return nan


@njit(**JIT)
def _maxpool2d_2x2_s2(out, idx, x):
    # MaxPool2d(2): as _maxpool2d_2x2_inside with stride 2 and dilation 1 as constants
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    nan = False
    for p in range(P):
        for oh in range(OH):
            h0 = 2 * oh
            for ow in range(OW):
                w0 = 2 * ow
                best, bi, isn = _maxpool_2x2_taps(x, p, h0, h0 + 1, w0, w0 + 1, W)
                nan = nan | isn
                out[p, oh, ow] = best
                idx[p, oh, ow] = bi
    return nan


@njit(**JIT)
def _maxpool2d_fwd(out, idx, x, kH, kW, sH, sW, pH, pW, dH, dW):
    # out, idx: (P, OH, OW)   x: (P, H, W)
    for p in range(x.shape[0]):
        if kH == 2 and kW == 2:
            _maxpool_plane_2x2(out[p], idx[p], x[p], sH, sW, pH, pW, dH, dW)
        else:
            _maxpool_plane(out[p], idx[p], x[p], kH, kW, sH, sW, pH, pW, dH, dW)


@njit(parallel=True, **JIT)
def _maxpool2d_fwd_par(out, idx, x, kH, kW, sH, sW, pH, pW, dH, dW):
    for p in prange(x.shape[0]):
        if kH == 2 and kW == 2:
            _maxpool_plane_2x2(out[p], idx[p], x[p], sH, sW, pH, pW, dH, dW)
        else:
            _maxpool_plane(out[p], idx[p], x[p], kH, kW, sH, sW, pH, pW, dH, dW)


@njit(**JIT)
def _maxpool_bwd_plane(gx, go, idx):
    # gx: (H * W,) overwritten   go, idx: (OH * OW,);  gx[idx] += go. An index of -1 (a
    # window with no input element, all padding: its output is -inf) sends its gradient
    # nowhere. Returns how many indices lie outside [-1, H * W) (skipped too).
    n = gx.shape[0]
    for i in range(n):
        gx[i] = 0
    bad = 0
    for q in range(go.shape[0]):
        i = idx[q]
        if i >= 0 and i < n:
            gx[i] += go[q]
        elif i != -1:
            bad += 1
    return bad


@njit(**JIT)
def _maxpool2d_bwd(bad, gx, go, idx):
    # bad: (P,)   gx: (P, H * W)   go, idx: (P, OH * OW)
    for p in range(gx.shape[0]):
        bad[p] = _maxpool_bwd_plane(gx[p], go[p], idx[p])


@njit(parallel=True, **JIT)
def _maxpool2d_bwd_par(bad, gx, go, idx):
    for p in prange(gx.shape[0]):
        bad[p] = _maxpool_bwd_plane(gx[p], go[p], idx[p])


# -- average pooling --------------------------------------------------------------------------
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


@njit(**JIT)
def _avgpool_plane(out, x, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # out: (OH, OW)   x: (H, W);  divisor <= 0: none given
    H, W = x.shape
    OH, OW = out.shape
    for oh in range(OH):
        for ow in range(OW):
            h0, h1, w0, w1, div = _avg_window(oh, ow, H, W, kH, kW, sH, sW, pH, pW,
                                              count_include_pad, divisor)
            if h0 >= h1 or w0 >= w1:
                out[oh, ow] = 0
                continue
            acc = x[h0, w0] * 0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    acc += x[h, w]
            out[oh, ow] = acc / div


@njit(**JIT)
def _avgpool2d_fwd(out, x, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # out: (P, OH, OW)   x: (P, H, W)
    for p in range(x.shape[0]):
        _avgpool_plane(out[p], x[p], kH, kW, sH, sW, pH, pW, count_include_pad, divisor)


@njit(parallel=True, **JIT)
def _avgpool2d_fwd_par(out, x, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    for p in prange(x.shape[0]):
        _avgpool_plane(out[p], x[p], kH, kW, sH, sW, pH, pW, count_include_pad, divisor)


@njit(**JIT)
def _avgpool_bwd_plane(gx, go, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # gx: (H, W) overwritten   go: (OH, OW)
    H, W = gx.shape
    OH, OW = go.shape
    for h in range(H):
        for w in range(W):
            gx[h, w] = 0
    for oh in range(OH):
        for ow in range(OW):
            h0, h1, w0, w1, div = _avg_window(oh, ow, H, W, kH, kW, sH, sW, pH, pW,
                                              count_include_pad, divisor)
            if h0 >= h1 or w0 >= w1:
                continue
            v = go[oh, ow] / div
            for h in range(h0, h1):
                for w in range(w0, w1):
                    gx[h, w] += v


@njit(**JIT)
def _avgpool2d_bwd(gx, go, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    # gx: (P, H, W)   go: (P, OH, OW)
    for p in range(gx.shape[0]):
        _avgpool_bwd_plane(gx[p], go[p], kH, kW, sH, sW, pH, pW, count_include_pad, divisor)


@njit(parallel=True, **JIT)
def _avgpool2d_bwd_par(gx, go, kH, kW, sH, sW, pH, pW, count_include_pad, divisor):
    for p in prange(gx.shape[0]):
        _avgpool_bwd_plane(gx[p], go[p], kH, kW, sH, sW, pH, pW, count_include_pad, divisor)


# -- wrappers ---------------------------------------------------------------------------------
def _work(P, out_size, kernel):
    return P * out_size[0] * out_size[1] * kernel[0] * kernel[1]


def maxpool2d_fwd(x, out_size, kernel, stride, padding, dilation):
    """x: (P, H, W) C-contiguous. Returns (out, indices), each (P, OH, OW)."""
    P, H, W = x.shape
    out = np.empty((P,) + tuple(out_size), dtype=x.dtype)
    idx = np.empty((P,) + tuple(out_size), dtype=np.int64)
    work = _work(P, out_size, kernel)
    (sH, sW), (dH, dW) = stride, dilation
    if (tuple(kernel) == (2, 2) and tuple(padding) == (0, 0) and work < PARALLEL_MIN
            and (out_size[0] - 1) * sH + dH < H and (out_size[1] - 1) * sW + dW < W):
        if (sH, sW, dH, dW) == (2, 2, 1, 1):
            nan = _maxpool2d_2x2_s2(out, idx, x)
        else:
            nan = _maxpool2d_2x2_inside(out, idx, x, sH, sW, dH, dW)
        if not nan:
            return out, idx
    k = _maxpool2d_fwd_par if work >= PARALLEL_MIN else _maxpool2d_fwd
    k(out, idx, x, *kernel, *stride, *padding, *dilation)
    return out, idx


def maxpool2d_bwd(go, idx, in_size):
    """go, idx: (P, OH, OW) C-contiguous. Returns the input gradient (P, H, W) and how
    many indices were outside [-1, H * W) (skipped; -1 marks an all-padding window)."""
    P = go.shape[0]
    H, W = in_size
    gx = np.empty((P, H * W), dtype=go.dtype)
    bad = np.zeros(P, dtype=np.int64)
    k = _maxpool2d_bwd_par if P * H * W >= PARALLEL_MIN else _maxpool2d_bwd
    n = go.shape[1] * go.shape[2]
    k(bad, gx, go.reshape(P, n), idx.reshape(P, n))
    return gx.reshape(P, H, W), int(bad.sum())


def avgpool2d_fwd(x, out_size, kernel, stride, padding, count_include_pad, divisor):
    """x: (P, H, W) C-contiguous; ``divisor`` 0 for none. Returns (P, OH, OW)."""
    P = x.shape[0]
    out = np.empty((P,) + tuple(out_size), dtype=x.dtype)
    k = _avgpool2d_fwd_par if _work(P, out_size, kernel) >= PARALLEL_MIN else _avgpool2d_fwd
    k(out, x, *kernel, *stride, *padding, bool(count_include_pad), int(divisor))
    return out


def avgpool2d_bwd(go, in_size, kernel, stride, padding, count_include_pad, divisor):
    """go: (P, OH, OW) C-contiguous. Returns the input gradient (P, H, W)."""
    P = go.shape[0]
    gx = np.empty((P,) + tuple(in_size), dtype=go.dtype)
    k = (_avgpool2d_bwd_par if _work(P, go.shape[1:], kernel) >= PARALLEL_MIN
         else _avgpool2d_bwd)
    k(gx, go, *kernel, *stride, *padding, bool(count_include_pad), int(divisor))
    return gx
