"""FFT convolution: real FFTs (``scipy.fft``, all cores), a per-frequency channel
contraction in a numba kernel, inverse FFT, then crop and subsample.

Correlation theorem: with F >= the padded input size, the circular correlation
``irfft(rfft(x) * conj(rfft(w)))`` equals the linear 'valid' correlation on its first
``P - K_eff + 1`` samples. Dilation uses a zero-dilated kernel, stride subsamples.

The transforms mix every sample into every output and sum magnitudes over the whole
plane, so :func:`fft_fwd` guards both: NaN/inf are zeroed for the transforms and the
outputs that read them are summed directly (same NaN/inf as the direct kernel), and
operands far from magnitude 1 are scaled by powers of two (no overflow, no subnormals).
"""
import math

import numpy as np
from numba import njit, prange

from ._common import JIT, U, n_tasks_target, serial_if_small
from .direct import direct_fwd

FFT_BUDGET_BYTES = 96 << 20


def workers() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@njit(parallel=True, **JIT)
def _contract(yf, xf, wf, groups, nfc):
    # yf[n, o, f] = sum_c xf[n, g*Cg + c, f] * wf[o, c, f]   (complex; wf already conjugated)
    # Tasks: (image, output channel, chunk of frequencies) -- chunks keep both cores busy
    # when there is a single image and channel (signal processing).
    N, O, F = yf.shape
    Cg = wf.shape[1]
    Og = O // groups
    fc = (F + nfc - 1) // nfc
    for t in prange(N * O * nfc):
        k = t % nfc
        n = t // (O * nfc)
        o = (t // nfc) % O
        g = o // Og
        f0 = k * fc
        f1 = min(F, f0 + fc)
        yr = yf[n, o]
        for f in range(f0, f1):
            yr[f] = 0
        for c in range(Cg):
            xr = xf[n, g * Cg + c]
            wr = wf[o, c]
            for f in range(f0, f1):
                yr[f] += xr[f] * wr[f]


def _dilate(w, dilation):
    if all(d == 1 for d in dilation):
        return w
    ke = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation)]
    wd = np.zeros(w.shape[:2] + tuple(ke), dtype=w.dtype)
    wd[:, :, ::dilation[0], ::dilation[1], ::dilation[2]] = w
    return wd


def fft_fwd(xp, w, bias, stride, dilation, groups, out):
    """out[n, o] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*stride + k*dilation]
    by FFTs, with the direct sum's NaN/inf placement and range.

    * Range: an operand whose largest magnitude is far from 1 is scaled by an exact power
      of two before the transforms and the result scaled back (:func:`_shifts`), so the
      transforms neither overflow (float32 data near 1e35) nor lose digits to subnormals
      (data near 1e-40). The result overflows or underflows only where the direct sum does.
    * NaN/inf: instead of letting the transforms mix a
      non-finite value into every output, they run on the operands with NaN/inf replaced
      by 0, and the outputs that read a non-finite value are summed directly
      (:func:`_fwd_nonfinite`), so NaN and inf land exactly where the direct kernel puts
      them (inf * 0 = NaN, inf - inf = NaN). (``fastconv.signal``'s FFT methods run on
      ``scipy.fft`` directly and spread, as ``scipy.signal.fftconvolve`` does.)

    Finite operands cost a max and a min of each (:func:`abs_max`)."""
    mx, mw = abs_max(xp), abs_max(w)
    if not (math.isfinite(mx) and math.isfinite(mw)):
        return _fwd_nonfinite(xp, w, bias, stride, dilation, groups, out)
    sx, sw = _shifts(xp, w, mx, mw)
    return _fft(xp, w, bias, stride, dilation, groups, out, sx, sw)


def _fft(xp, w, bias, stride, dilation, groups, out, sx, sw):
    # the transforms on xp * 2**-sx and w * 2**-sw; out = 2**(sx + sw) * result + bias
    import scipy.fft as sfft   # imported on first use: keeps `import fastconv` fast
    N, C = xp.shape[:2]
    O = w.shape[0]
    P = xp.shape[2:]
    wd = _dilate(np.ldexp(w, -sw) if sw else w, dilation)
    fshape = tuple(sfft.next_fast_len(int(p), real=True) for p in P)
    # transform only the spatial axes longer than one (pocketfft is slow on length-1 axes);
    # the last of them carries the real-to-complex half spectrum
    axes = tuple(a for a in (2, 3, 4) if fshape[a - 2] > 1) or (4,)
    fshape = tuple(fshape[a - 2] for a in axes)
    nw = workers()
    wf = np.conj(sfft.rfftn(wd, s=fshape, axes=axes, workers=nw))
    Fsz = int(np.prod(wf.shape[2:]))
    wf = np.ascontiguousarray(wf).reshape(O, wd.shape[1], Fsz)
    per_image = (C + O) * Fsz * wf.itemsize * 2
    nb = max(1, min(N, FFT_BUDGET_BYTES // max(per_image, 1)))
    OD, OH, OW = out.shape[2:]
    crop = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip((OD, OH, OW), stride))
    b = bias.reshape(1, O, 1, 1, 1)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        xs = xp[n0:n0 + m]
        xf = sfft.rfftn(np.ldexp(xs, -sx) if sx else xs, s=fshape, axes=axes, workers=nw)
        fsh = xf.shape[2:]
        yf = np.empty((m, O, Fsz), dtype=xf.dtype)
        nfc = max(1, min(-(-n_tasks_target() // (m * O)), Fsz // 4096))
        _contract(yf, np.ascontiguousarray(xf).reshape(m, C, Fsz), wf, groups, nfc)
        y = sfft.irfftn(yf.reshape((m, O) + fsh), s=fshape, axes=axes, workers=nw)
        y = y[(slice(None), slice(None)) + crop]
        o = out[n0:n0 + m]
        if sx + sw:
            np.ldexp(y, sx + sw, out=o)     # one rounding: exact unless it under/overflows
            y = o
        np.add(y, b, out=o)
    return out


# --- range: exact power-of-two scaling ------------------------------------------------
def abs_max(a) -> float:
    """max |a|: NaN if ``a`` holds a NaN, inf if it holds an inf (and no NaN), 0 if empty.

    Two SIMD reductions (NumPy's max and min propagate NaN), no temporary: about as fast
    as ``np.isfinite(a).all()`` and it also gives the scale."""
    if a.size == 0:
        return 0.0
    hi, lo = float(a.max()), float(a.min())
    return max(abs(hi), abs(lo)) if hi == hi and lo == lo else math.nan


def all_finite(a) -> bool:
    """Whether ``a`` holds no NaN and no inf. Large contiguous float arrays take one
    parallel pass (sum of a * 0: 0 when finite, NaN otherwise; the planner's non-finite
    rule reads whole operands on every call where ``auto`` may pick an algorithm that
    spreads NaN), others :func:`abs_max`."""
    if a.size >= ALL_FINITE_PARALLEL and a.dtype in (np.float32, np.float64) \
            and a.flags.c_contiguous:
        part = np.empty(n_tasks_target(), dtype=a.dtype)
        _poison(part, a.reshape(-1))
        return float(part.sum()) == 0.0
    return math.isfinite(abs_max(a))


ALL_FINITE_PARALLEL = 1 << 18     # elements: below, NumPy's reductions beat a parallel launch


@njit(parallel=True, **JIT)
def _poison(part, a):
    # part[k] = sum of a * 0 over chunk k of a
    nchunk = part.size
    n = a.size
    for k in prange(nchunk):
        z = a[0] * 0
        for i in range(k * n // nchunk, (k + 1) * n // nchunk):
            z += a[U(i)] * 0
        part[k] = z


def _exponent(m) -> int:
    # e with m = f * 2**e, 0.5 <= f < 1 (0 for zero)
    return math.frexp(m)[1] if m else 0


def _shifts(xp, w, mx, mw):
    """Powers of two (sx, sw) to divide xp and w by before the transforms.

    Unscaled operands stay within 2**+-L of 1, L = maxexp/4 (2**+-32 in float32, 2**+-256
    in float64): their transforms then neither underflow into subnormals (relative error
    above eps * max) nor overflow, as long as the largest possible intermediate,
    max|x| * max|w| * (input size) * (kernel size) * C/groups * (transform size) (a
    spectrum's DC term, summed over channels, then the unnormalised inverse), stays two
    binades below the largest float; otherwise both are scaled to magnitude ~1. Typical
    data (|values| between 2.3e-10 and 4.3e9 in float32) is not touched."""
    fi = np.finfo(xp.dtype)
    L = fi.maxexp // 4
    ex, ew = _exponent(mx), _exponent(mw)
    sx = ex if abs(ex) > L else 0
    sw = ew if abs(ew) > L else 0
    P = math.prod(xp.shape[2:])
    sizes = P * math.prod(w.shape[2:]) * w.shape[1] * 8 * P     # 8 P >= the transform size
    if (ex - sx) + (ew - sw) + math.log2(sizes) > fi.maxexp - 2:
        sx, sw = ex, ew
    return sx, sw


# --- NaN/inf: FFT of the finite part, plain sums where a non-finite value is read -----
#: above this fraction of outputs to sum directly, the whole call runs the direct kernel
DIRECT_ABOVE = 1 / 8


@njit(parallel=True, **JIT)
def _sum_runs(out, xp, w, bias, runs, groups, sd, sh, sw, dd, dh, dw, zero):
    # runs[r] = (n, g, od, oh, ow0, m): for the outputs ow0 <= ow < ow0 + m of that row and
    # every output channel o of group g,
    # out[n, o, od, oh, ow] = bias[o] + sum_{c, k} w[o, c, k] * xp[n, g*Cg + c, p*s + k*d],
    # the plain sum in the array's dtype (NaN/inf combine as in the direct kernel); the
    # run is the vectorised inner loop. Runs own distinct outputs.
    O, Cg, KD, KH, KW = w.shape
    Og = O // groups
    for r in prange(runs.shape[0]):
        n, g, od, oh = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
        ow0, m = runs[r, 4], runs[r, 5]
        acc = np.empty(m, dtype=out.dtype)        # private: no aliasing with out or xp
        for o in range(g * Og, (g + 1) * Og):
            acc[:] = zero
            for c in range(Cg):
                for kd in range(KD):
                    for kh in range(KH):
                        xr = xp[n, g * Cg + c, od * sd + kd * dd, oh * sh + kh * dh]
                        for kw in range(KW):
                            wv = w[o, c, kd, kh, kw]
                            x0 = ow0 * sw + kw * dw
                            if sw == 1:
                                xs = xr[x0:x0 + m]
                                for j in range(m):
                                    acc[j] += wv * xs[j]
                            else:
                                for j in range(m):
                                    acc[j] += wv * xr[x0 + j * sw]
            orow = out[n, o, od, oh]
            for j in range(m):
                orow[ow0 + j] = acc[j] + bias[o]


def _runs(pts):
    """(n, g, od, oh, ow) points, sorted as np.argwhere gives them -> runs of consecutive
    ow in one row: (n, g, od, oh, ow0, length)."""
    new = np.ones(len(pts), dtype=bool)
    new[1:] = (pts[1:, :4] != pts[:-1, :4]).any(axis=1) | (pts[1:, 4] != pts[:-1, 4] + 1)
    starts = np.flatnonzero(new)
    return np.column_stack([pts[starts], np.diff(np.append(starts, len(pts)))])


def _window_any(mask, axis, k, s, d, n_out):
    """any(mask[..., p*s + j*d, ...] for j < k) along ``axis``, for p < n_out: window counts
    from cumulative sums taken separately over each residue class mod d (O(size))."""
    if k == 1 and s == 1:
        return mask
    m = np.moveaxis(mask, axis, -1)
    P = m.shape[-1]
    L = -(-(P + d) // d) * d
    z = np.zeros(m.shape[:-1] + (L,), dtype=np.int32)
    z[..., d:d + P] = m
    # z[i] = sum of mask[j - d] over j <= i, j = i mod d (zero for i < d)
    if d == 1:
        np.cumsum(z, axis=-1, out=z)
    else:
        z = z.reshape(m.shape[:-1] + (L // d, d)).cumsum(axis=-2).reshape(m.shape[:-1] + (L,))
    span = (n_out - 1) * s + 1
    cnt = z[..., k * d:k * d + span:s] - z[..., 0:span:s]
    return np.moveaxis(cnt > 0, -1, axis)


def _fwd_nonfinite(xp, w, bias, stride, dilation, groups, out):
    N = xp.shape[0]
    O, Cg = w.shape[:2]
    Og = O // groups
    bad_w = ~np.isfinite(w).reshape(O, -1).all(axis=1)          # output channels
    bad_x = ~np.isfinite(xp)
    any_x = bool(bad_x.any())
    n_hit = 0
    if any_x:
        # outputs of each (image, group) whose window reads a non-finite input
        hit = bad_x.reshape((N, groups, Cg) + xp.shape[2:]).any(axis=2)
        for a, (k, s, d, n) in enumerate(zip(w.shape[2:], stride, dilation, out.shape[2:])):
            hit = _window_any(hit, a + 2, k, s, d, n)
        n_hit = int(hit.sum())
    # outputs to sum directly: those that read non-finite inputs, and whole channels with a
    # non-finite weight (which reaches every output of its channel)
    n_bad = int(bad_w.sum())
    per_channel = N * math.prod(out.shape[2:])
    if (n_hit * Og + n_bad * per_channel) > DIRECT_ABOVE * O * per_channel:
        return direct_fwd(xp, w, bias, stride, dilation, groups, out)
    xz = np.where(bad_x, 0, xp) if any_x else xp         # also a NaN that no window reads
    wz = np.where(np.isfinite(w), w, 0) if n_bad else w
    sx, sw = _shifts(xz, wz, abs_max(xz), abs_max(wz))
    _fft(xz, wz, bias, stride, dilation, groups, out, sx, sw)
    if n_hit:
        with serial_if_small(n_hit * Og * w[0].size):
            _sum_runs(out, xp, w, bias, _runs(np.argwhere(hit)), groups, *stride, *dilation,
                      out.dtype.type(0))
    for g in range(groups):
        # channels with a non-finite weight are non-finite wherever the sum runs: direct
        chans = np.flatnonzero(bad_w[g * Og:(g + 1) * Og]) + g * Og
        if chans.size:
            xg = np.ascontiguousarray(xp[:, g * Cg:(g + 1) * Cg])
            og = np.empty((N, chans.size) + out.shape[2:], dtype=out.dtype)
            direct_fwd(xg, np.ascontiguousarray(w[chans]), np.ascontiguousarray(bias[chans]),
                       stride, dilation, 1, og)
            out[:, chans] = og
    return out
