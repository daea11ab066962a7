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

from ._common import JIT, U, n_tasks_target

PARALLEL_MIN = 1 << 20    # elements visited (windows x window size) before going parallel
PARALLEL_MIN_2X2 = 1 << 15   # input elements before MaxPool2d(2)'s kernels go parallel
# (with fastconv's OpenMP workers spinning briefly between regions, see _config: MNIST's
# first pool, 368k elements, 71 -> 35 us forward and 88 -> 45 us backward; 82k: 28 -> 18)


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


# -- MaxPool2d(2): 2x2 windows, stride 2, no padding or dilation ---------------------------------
# The layers' case gets its own kernels. The forward keeps, per window, a one-byte code
# k = 2 * row + column of its maximum (a quarter of a float32 output; int64 indices are
# built from it only when asked for), and the backward writes every input-gradient
# element once from it, no zero-fill then scatter. Both are branch-free: the maximum of a
# row pair is max(), which vectorises, where ``v if take else best`` compiles to branches
# that do not. Ties and NaN follow PyTorch's scan (the first maximum in window order, the
# last NaN): the row-first reduction below keeps the first maximum, and a window holding a
# NaN (flagged, rare) makes the caller redo the call by the exact rule.
# With ``relu`` the kernels compute ReLU(MaxPool2d(2)(x)) in the same pass (nn.Sequential
# fuses the pair): the output is max(m, 0) and code bit 2 marks a window whose ReLU output
# is <= 0, so that the backward sends its gradient nowhere (the backward of the pool alone
# ignores that bit).
@njit(**JIT)
def _mp2_rows(out, code, x, p0, p1, H, W, OH, OW, relu):
    # planes [p0, p1) of flat x (P * H * W); out, code flat (P * OH * OW). Returns whether
    # a NaN was seen (then out and code are not by PyTorch's rule for those windows).
    nan = False
    zero = out.dtype.type(0)
    for p in range(p0, p1):
        for oh in range(OH):
            a0 = U((p * H + 2 * oh) * W)
            a1 = a0 + U(W)
            b = U((p * OH + oh) * OW)
            for j in range(OW):
                q = U(j)
                i = U(2) * q
                a = x[a0 + i]
                v = x[a0 + i + U(1)]
                c = x[a1 + i]
                d = x[a1 + i + U(1)]
                s0 = np.uint8(v > a)            # the first maximum of each row pair
                m0 = max(a, v)
                s1 = np.uint8(d > c)
                m1 = max(c, d)
                t = np.uint8(m1 > m0)           # row 1 only when strictly larger
                m = max(m0, m1)
                k = (t << np.uint8(1)) | (s0 ^ (t * (s0 ^ s1)))
                if relu:
                    out[b + q] = max(zero, m)   # m if m > 0 else +0
                    code[b + q] = k | (np.uint8(m <= 0) << np.uint8(2))
                else:
                    out[b + q] = m
                    code[b + q] = k
                nan |= (a != a) | (v != v) | (c != c) | (d != d)
    return nan


@njit(**JIT)
def _mp2_rows_exact(out, code, x, p0, p1, H, W, OH, OW, relu):
    # as _mp2_rows by PyTorch's rule also for windows holding NaN (the scalar scan)
    for p in range(p0, p1):
        for oh in range(OH):
            a0 = (p * H + 2 * oh) * W
            b = (p * OH + oh) * OW
            for ow in range(OW):
                best = x[a0 + 2 * ow]
                k = 0
                for t in range(1, 4):
                    v = x[a0 + (t >> 1) * W + 2 * ow + (t & 1)]
                    if v > best or v != v:
                        best = v
                        k = t
                if relu and best <= 0:           # ReLU: NaN passes, as torch.relu
                    best = 0
                    k += 4
                out[b + ow] = best
                code[b + ow] = k


@njit(**JIT)
def _mp2_fwd(out, code, x, H, W, OH, OW, relu):
    P = out.shape[0] // max(1, OH * OW)
    if _mp2_rows(out, code, x, 0, P, H, W, OH, OW, relu):
        _mp2_rows_exact(out, code, x, 0, P, H, W, OH, OW, relu)


@njit(parallel=True, **JIT)
def _mp2_fwd_par(out, code, x, H, W, OH, OW, relu, n_tasks):
    P = out.shape[0] // max(1, OH * OW)
    step = (P + n_tasks - 1) // n_tasks
    for t in prange(n_tasks):
        p0, p1 = t * step, min(P, (t + 1) * step)
        if p0 < p1 and _mp2_rows(out, code, x, p0, p1, H, W, OH, OW, relu):
            _mp2_rows_exact(out, code, x, p0, p1, H, W, OH, OW, relu)


@njit(**JIT)
def _mp2_bwd_rows(gx, go, code, p0, p1, H, W, OH, OW, mask):
    # gx (flat P * H * W, written whole), go, code (flat P * OH * OW). gx and go are
    # integer views of the float arrays: each input element gets its window's gradient
    # bits or zero bits (a select by masking, which vectorises). mask: 3 for the pool
    # alone, 7 to apply the fused ReLU's bit as well.
    zero = gx.dtype.type(0)
    for p in range(p0, p1):
        for oh in range(OH):
            a0 = U((p * H + 2 * oh) * W)
            a1 = a0 + U(W)
            b = U((p * OH + oh) * OW)
            for j in range(OW):
                q = U(j)
                i = U(2) * q
                k = code[b + q] & mask
                g = go[b + q]
                gx[a0 + i] = g & -gx.dtype.type(k == 0)
                gx[a0 + i + U(1)] = g & -gx.dtype.type(k == 1)
                gx[a1 + i] = g & -gx.dtype.type(k == 2)
                gx[a1 + i + U(1)] = g & -gx.dtype.type(k == 3)
            for w in range(2 * OW, W):          # an odd width's last column
                gx[a0 + U(w)] = zero
                gx[a1 + U(w)] = zero
        for h in range(2 * OH, H):              # an odd height's last row
            a = U((p * H + h) * W)
            for w in range(W):
                gx[a + U(w)] = zero


@njit(**JIT)
def _mp2_bwd(gx, go, code, H, W, OH, OW, mask):
    _mp2_bwd_rows(gx, go, code, 0, gx.shape[0] // max(1, H * W), H, W, OH, OW, mask)


@njit(parallel=True, **JIT)
def _mp2_bwd_par(gx, go, code, H, W, OH, OW, mask, n_tasks):
    P = gx.shape[0] // max(1, H * W)
    step = (P + n_tasks - 1) // n_tasks
    for t in prange(n_tasks):
        _mp2_bwd_rows(gx, go, code, t * step, min(P, (t + 1) * step), H, W, OH, OW, mask)


@njit(**JIT)
def _mp2_indices(idx, code, W, OH, OW):
    # the flat input index h * W + w of each window's maximum, from its code
    n = idx.shape[0]
    for o in range(n):
        ow = o % OW
        oh = (o // OW) % OH
        k = code[o] & 3
        idx[o] = (2 * oh + (k >> 1)) * W + 2 * ow + (k & 1)


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


def is_2x2s2(kernel, stride, padding, dilation, in_size, out_size):
    """Whether a max pooling is MaxPool2d(2)'s case: 2x2 windows at stride 2, no padding or
    dilation, every window inside the input (what :func:`maxpool2x2_fwd` computes)."""
    return (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
            and tuple(dilation) == (1, 1) and tuple(out_size) == (in_size[0] // 2, in_size[1] // 2))


def _n_tasks(P, elements):
    """Parallel tasks for a 2x2 pooling pass over ``elements`` input elements (0: serial)."""
    if elements < PARALLEL_MIN_2X2 or P < 2:
        return 0
    return min(P, n_tasks_target())


def maxpool2x2_fwd(x, relu=False):
    """MaxPool2d(2) on x (P, H, W) C-contiguous (see :func:`is_2x2s2`). Returns (out, code),
    each (P, H // 2, W // 2); ``code`` (uint8) is ``2 * row + column`` of each window's
    maximum (PyTorch's: the first maximum in window order, the last NaN). ``relu``: ``out``
    is ReLU of the pooling, and code bit 2 marks the outputs ReLU set to 0."""
    P, H, W = x.shape
    OH, OW = H // 2, W // 2
    out = np.empty((P, OH, OW), dtype=x.dtype)
    code = np.empty((P, OH, OW), dtype=np.uint8)
    n = _n_tasks(P, x.size)
    args = (out.reshape(-1), code.reshape(-1), x.reshape(-1), H, W, OH, OW, bool(relu))
    if n:
        _mp2_fwd_par(*args, n)
    else:
        _mp2_fwd(*args)
    return out, code


def maxpool2x2_bwd(go, code, in_size, relu=False):
    """The input gradient (P, H, W) of :func:`maxpool2x2_fwd` from ``go`` (P, OH, OW) C-contiguous
    (float32 or float64) and the forward's ``code``: each window's gradient at its maximum,
    zeros elsewhere. ``relu`` (the forward's ``relu`` too): ``go`` is the gradient of the
    ReLU's output, and windows whose ReLU output was <= 0 send nothing."""
    P, OH, OW = go.shape
    H, W = in_size
    gx = np.empty((P, H, W), dtype=go.dtype)
    bits = np.int32 if go.dtype == np.float32 else np.int64
    n = _n_tasks(P, gx.size)
    args = (gx.reshape(-1).view(bits), go.reshape(-1).view(bits), code.reshape(-1),
            H, W, OH, OW, 7 if relu else 3)
    if n:
        _mp2_bwd_par(*args, n)
    else:
        _mp2_bwd(*args)
    return gx


def maxpool2x2_indices(code, W):
    """The flat indices ``h * W + w`` (int64, the shape of ``code`` (P, OH, OW)) of the maxima
    that :func:`maxpool2x2_fwd` coded."""
    idx = np.empty(code.shape, dtype=np.int64)
    _mp2_indices(idx.reshape(-1), code.reshape(-1), W, code.shape[1], code.shape[2])
    return idx


def maxpool2d_fwd(x, out_size, kernel, stride, padding, dilation):
    """x: (P, H, W) C-contiguous. Returns (out, indices), each (P, OH, OW)."""
    P, H, W = x.shape
    if is_2x2s2(kernel, stride, padding, dilation, (H, W), out_size):
        out, code = maxpool2x2_fwd(x)
        return out, maxpool2x2_indices(code, W)
    out = np.empty((P,) + tuple(out_size), dtype=x.dtype)
    idx = np.empty((P,) + tuple(out_size), dtype=np.int64)
    work = _work(P, out_size, kernel)
    (sH, sW), (dH, dW) = stride, dilation
    if (tuple(kernel) == (2, 2) and tuple(padding) == (0, 0) and work < PARALLEL_MIN
            and (out_size[0] - 1) * sH + dH < H and (out_size[1] - 1) * sW + dW < W):
        if not _maxpool2d_2x2_inside(out, idx, x, sH, sW, dH, dW):
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
