"""Kernels for training on the GPU: elementwise, pooling, softmax / NLL, reductions and
optimiser updates. Wrappers (allocation, shapes) are in :mod:`fastconv.cuda.nn_ops`.

Every backward is written as a gather over its output (no atomics): max-pool's backward
visits, for each input element, the windows that contain it and adds the gradients of
those whose argmax it is. Reductions are block-level trees, so results are deterministic.
"""
from __future__ import annotations

import math

from numba import cuda, float64, uint64

RT = 256            # threads of a reduction block


# --- elementwise ------------------------------------------------------------------------
@cuda.jit(cache=True)
def _relu_fwd(y, x):
    # y = max(x, 0); NaN propagates     y, x: flat
    # (statements, not ``0 if ... else v``: an int literal in a select with a float32
    # unifies to float64)
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        v = x[i]
        if v < 0:
            y[i] = 0
        else:
            y[i] = v


@cuda.jit(cache=True)
def _relu_bwd(gx, gy, y):
    # gx = 0 where y <= 0 else gy (a NaN output passes the gradient, as PyTorch)
    # (statements: a store of the literal 0 stays in gx's dtype, a select would be float64)
    for i in range(cuda.grid(1), gx.shape[0], cuda.gridsize(1)):
        if y[i] <= 0:
            gx[i] = 0
        else:
            gx[i] = gy[i]


@cuda.jit(cache=True)
def _axpy(y, a, x):
    # y += a * x
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        y[i] += a * x[i]


@cuda.jit(cache=True)
def _dropout(y, mask, x, p, seed):
    # mask[i] = 1/(1-p) with probability 1-p else 0 (counter-based hash RNG); y = x * mask
    scale = 1.0 / (1.0 - p)
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        z = uint64(seed) * uint64(0x9E3779B97F4A7C15) + uint64(i) + uint64(1)
        z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
        z = z ^ (z >> uint64(31))
        u = float64(z >> uint64(11)) * (1.0 / 9007199254740992.0)
        if u < p:
            mask[i] = 0
        else:
            mask[i] = scale
        y[i] = x[i] * mask[i]


@cuda.jit(cache=True)
def _mul(y, a, b):
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        y[i] = a[i] * b[i]


# --- pooling (N, C, H, W) ---------------------------------------------------------------
@cuda.jit(device=True, inline="always")
def _unravel4(t, C, H, W):
    """(n, c, h, w) of flat index ``t`` into a C-contiguous (N, C, H, W) array."""
    return t // (W * H * C), (t // (W * H)) % C, (t // W) % H, t % W


@cuda.jit(device=True, inline="always")
def _windows_over(i, pad, k, s, n_out):
    """The first and last output index whose window (size k, stride s, padding pad) holds
    input index i."""
    return max(0, (i + pad - k + s) // s), min(n_out - 1, (i + pad) // s)


@cuda.jit(cache=True)
def _maxpool_fwd(y, idx, x, kh, kw, sh, sw, ph, pw):
    # y[n, c, oh, ow] = max over the window; idx = argmax as h * W + w (first max wins,
    # NaN wins as in PyTorch). Padding positions never win.
    N, C, OH, OW = y.shape
    H, W = x.shape[2], x.shape[3]
    for t in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        n, c, oh, ow = _unravel4(t, C, OH, OW)
        best = -1
        for i in range(kh):
            h = oh * sh - ph + i
            if h >= 0 and h < H:
                for j in range(kw):
                    w = ow * sw - pw + j
                    if w >= 0 and w < W:
                        if best < 0:
                            best = h * W + w
                        else:
                            v = x[n, c, h, w]
                            b = x[n, c, best // W, best % W]
                            if v > b or (v != v and b == b):
                                best = h * W + w
        idx[n, c, oh, ow] = best
        y[n, c, oh, ow] = x[n, c, best // W, best % W]


@cuda.jit(cache=True)
def _maxpool_bwd(gx, gy, idx, kh, kw, sh, sw, ph, pw):
    # gx[n, c, h, w] = sum of gy over the windows containing (h, w) whose argmax it is
    N, C, H, W = gx.shape
    OH, OW = gy.shape[2], gy.shape[3]
    for t in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = _unravel4(t, C, H, W)
        me = h * W + w
        gx[n, c, h, w] = 0
        oh_lo, oh_hi = _windows_over(h, ph, kh, sh, OH)
        ow_lo, ow_hi = _windows_over(w, pw, kw, sw, OW)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                if idx[n, c, oh, ow] == me:
                    gx[n, c, h, w] += gy[n, c, oh, ow]


@cuda.jit(cache=True)
def _avgpool_fwd(y, x, kh, kw, sh, sw, ph, pw, divisor):
    # y = sum over the window / divisor (count_include_pad: the full window size)
    N, C, OH, OW = y.shape
    H, W = x.shape[2], x.shape[3]
    for t in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        n, c, oh, ow = _unravel4(t, C, OH, OW)
        h0 = oh * sh - ph                   # the window, clipped to the input
        w0 = ow * sw - pw
        y[n, c, oh, ow] = 0
        for h in range(max(h0, 0), min(h0 + kh, H)):
            for w in range(max(w0, 0), min(w0 + kw, W)):
                y[n, c, oh, ow] += x[n, c, h, w]
        y[n, c, oh, ow] /= divisor


@cuda.jit(cache=True)
def _avgpool_bwd(gx, gy, kh, kw, sh, sw, ph, pw, divisor):
    N, C, H, W = gx.shape
    OH, OW = gy.shape[2], gy.shape[3]
    for t in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = _unravel4(t, C, H, W)
        gx[n, c, h, w] = 0
        oh_lo, oh_hi = _windows_over(h, ph, kh, sh, OH)
        ow_lo, ow_hi = _windows_over(w, pw, kw, sw, OW)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                gx[n, c, h, w] += gy[n, c, oh, ow]
        gx[n, c, h, w] /= divisor


# --- rows: log-softmax, NLL -------------------------------------------------------------
@cuda.jit(cache=True)
def _log_softmax_fwd(y, x):
    # y[r] = (x[r] - max) - log(sum(exp(x[r] - max)))   one thread per row   x, y: (B, K)
    B, K = x.shape
    for r in range(cuda.grid(1), B, cuda.gridsize(1)):
        m = x[r, 0]
        for k in range(1, K):
            if x[r, k] > m or x[r, k] != x[r, k]:
                m = x[r, k]
        s = 0.0
        for k in range(K):
            s += math.exp(x[r, k] - m)
        ls = math.log(s)
        for k in range(K):
            y[r, k] = (x[r, k] - m) - ls


@cuda.jit(cache=True)
def _log_softmax_bwd(gx, gy, y):
    # gx = gy - exp(y) * sum(gy) per row
    B, K = y.shape
    for r in range(cuda.grid(1), B, cuda.gridsize(1)):
        s = 0.0
        for k in range(K):
            s += gy[r, k]
        for k in range(K):
            gx[r, k] = gy[r, k] - math.exp(y[r, k]) * s


@cuda.jit(device=True, inline="always")
def _block_sum(sm, tid, acc):
    """The sum of every thread's ``acc`` over a block of RT threads (a tree in the shared
    array ``sm``), returned to every thread."""
    sm[tid] = acc
    cuda.syncthreads()
    h = RT // 2
    while h > 0:
        if tid < h:
            sm[tid] += sm[tid + h]
        cuda.syncthreads()
        h //= 2
    return sm[0]


@cuda.jit(cache=True)
def _nll_fwd(loss, logp, target, scale):
    # loss[0] = -scale * sum_r logp[r, target[r]]   one block, tree reduction
    sm = cuda.shared.array(RT, dtype=float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for r in range(tid, logp.shape[0], RT):
        acc -= logp[r, target[r]]
    total = _block_sum(sm, tid, acc)
    if tid == 0:
        loss[0] = total * scale


@cuda.jit(cache=True)
def _nll_bwd(g, target, scale):
    # g[r, k] = -scale where k == target[r], else 0
    B, K = g.shape
    for t in range(cuda.grid(1), B * K, cuda.gridsize(1)):
        r = t // K
        k = t % K
        g[r, k] = -scale if k == target[r] else 0


@cuda.jit(cache=True)
def _count_correct(count, x, target):
    # count[0] = number of rows whose argmax equals target   one block
    sm = cuda.shared.array(RT, dtype=float64)
    tid = cuda.threadIdx.x
    B, K = x.shape
    acc = 0.0
    for r in range(tid, B, RT):
        best = 0
        for k in range(1, K):
            if x[r, k] > x[r, best]:
                best = k
        if best == target[r]:
            acc += 1.0
    total = _block_sum(sm, tid, acc)
    if tid == 0:
        count[0] = total


# --- reductions -------------------------------------------------------------------------
@cuda.jit(cache=True)
def _channel_sum(out, g, inner):
    # out[c] = sum over n and the inner (spatial) axis of g[n, c, s]   g: flat (N, C, inner)
    # one block per channel
    sm = cuda.shared.array(RT, dtype=float64)
    C = out.shape[0]
    tid = cuda.threadIdx.x
    N = g.shape[0] // (C * inner)
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc = 0.0
        for e in range(tid, N * inner, RT):
            acc += g[(e // inner) * C * inner + c * inner + e % inner]
        total = _block_sum(sm, tid, acc)
        if tid == 0:
            out[c] = total
        cuda.syncthreads()


# --- optimisers -------------------------------------------------------------------------
@cuda.jit(cache=True)
def _sgd(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, gsign):
    # PyTorch's SGD: d = gsign * g + wd * p (gsign = -1: maximize); buf = d (first step) or
    # momentum * buf + (1 - dampening) * d; d = d + momentum * buf (nesterov) or buf;
    # p -= lr * d
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        d = gsign * g[i] + weight_decay * p[i]
        if momentum != 0:
            if first:
                buf[i] = d
            else:
                buf[i] = momentum * buf[i] + (1 - dampening) * d
            if nesterov:
                d = d + momentum * buf[i]
            else:
                d = buf[i]
        p[i] -= lr * d


@cuda.jit(cache=True)
def _adam(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, bc1, bc2, amsgrad, gsign):
    # PyTorch's Adam (L2 weight decay): bc1 = 1 - beta1**t, bc2 = 1 - beta2**t;
    # amsgrad: the denominator uses vmax = max(vmax, v) (vmax unused otherwise)
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        d = gsign * g[i] + weight_decay * p[i]
        m[i] = beta1 * m[i] + (1 - beta1) * d
        v[i] = beta2 * v[i] + (1 - beta2) * d * d
        s = v[i]
        if amsgrad:
            if vmax[i] > s:
                s = vmax[i]
            vmax[i] = s
        p[i] -= lr * (m[i] / bc1) / (math.sqrt(s / bc2) + eps)


# --- gathers ----------------------------------------------------------------------------
@cuda.jit(cache=True)
def _take_rows(out, src, idx, row):
    # out[i * row + j] = src[idx[i] * row + j]   out, src: flat; idx: (B,)
    for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        i = t // row
        out[t] = src[idx[i] * row + (t - i * row)]
