"""The engine behind :mod:`fastconv.signal`: any SciPy convolution as a batched, grouped,
padded 'valid' cross-correlation run by ``fastconv._engine.forward``.

Every public function reduces to one call of :func:`run`: cross-correlate ``x`` with
``kf`` (a convolution passes its kernel flipped) and keep, on each correlated axis, a
window ``(start, length)`` of the *full* correlation -- index ``j`` of the full result is
``sum_t xpad[j + t] * kf[t]`` with ``xpad`` = ``x`` padded by ``m - 1`` on both sides.
The modes are windows: full ``(0, n+m-1)``, valid ``(m-1, n-m+1)``, same
``((m-1)//2, n)`` (``correlate2d``: ``(m//2, n)``). A window is produced by padding ``x``
``m-1-start`` before and ``start+length-n`` after (with zeros, a fill value, or wrapped /
mirrored samples for convolve2d's boundaries) and taking the valid correlation.

Axes map onto the engine's 5-D layout ``(N, C, D, H, W)``:

* axes where the kernel has length 1 and the window is the identity -> batch ``N``;
* axes that are not correlated and have equal lengths (fftconvolve's ``axes``) -> groups
  (one channel and one kernel per group);
* correlated axes -> up to three spatial axes (more: folded into channels for the
  direct method, or computed with ``scipy.fft`` for the FFT methods).

Methods: ``direct`` (the engine's direct kernel; int64 keeps integers exact); ``fft`` (the engine's real FFT kernel; complex through real and
imaginary parts); ``oa`` (overlap-save: the padded input cut into overlapping tiles that
the FFT kernel processes as one batch -- small, cache-friendly FFTs). Complex inputs run
on the real kernels in every method: real and imaginary parts become extra images,
channels or output channels of one kernel call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from . import _engine
from ._pad import pad as _pad_modes

ONE3 = (1, 1, 1)


def window(mode: str, n: int, m: int, corr2d: bool = False) -> tuple:
    """(start, length) of ``mode`` within the full correlation of lengths n and m."""
    if mode == "full":
        return 0, n + m - 1
    if mode == "valid":
        return m - 1, n - m + 1
    return (m // 2 if corr2d else (m - 1) // 2), n


# --- the plan -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How a problem maps onto the engine: axis roles, sizes and paddings."""

    order: tuple          # axis permutation: batch axes, group axes, spatial axes
    out_shape: tuple      # result shape, in the original axis order
    N: int                # batch (x only varies)
    G: int                # groups (x and kernel vary together)
    n: tuple              # spatial input sizes
    k: tuple              # spatial kernel sizes
    pads: tuple           # ((before, after), ...) per spatial axis
    out: tuple            # spatial output sizes

    @property
    def padded(self) -> tuple:
        return tuple(n + b + a for n, (b, a) in zip(self.n, self.pads))

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct method."""
        return self.N * self.G * _prod(self.out) * _prod(self.k)


def make_plan(xshape, kshape, windows) -> Plan:
    """``windows[a]``: (start, length) for a correlated axis, None for a batch axis (where
    the kernel's length is 1 or equals x's)."""
    xb, gb, sp = [], [], []
    out_shape = []
    for a, (n, m, w) in enumerate(zip(xshape, kshape, windows)):
        if m == 1 and (w is None or tuple(w) == (0, n)):
            xb.append(a)
            out_shape.append(n)
        elif w is None:
            if m != n:
                raise ValueError(f"batch axis {a} has lengths {n} and {m}")
            gb.append(a)
            out_shape.append(n)
        else:
            sp.append(a)
            out_shape.append(w[1])
    pads = []
    for a in sp:
        n, m = xshape[a], kshape[a]
        start, length = windows[a]
        pads.append((m - 1 - start, start + length - n))
    if any(b < 0 or e < 0 for b, e in pads):
        raise ValueError(f"window {windows} needs more than the input {xshape}")
    return Plan(order=tuple(xb + gb + sp), out_shape=tuple(out_shape),
                N=_prod(xshape[a] for a in xb), G=_prod(xshape[a] for a in gb),
                n=tuple(xshape[a] for a in sp), k=tuple(kshape[a] for a in sp),
                pads=tuple(pads), out=tuple(windows[a][1] for a in sp))


# --- running a plan -------------------------------------------------------------------
def run(plan: Plan, x, kf, method: str, boundary: str = "fill", fill=0) -> np.ndarray:
    """Compute ``plan`` for arrays ``x``, ``kf`` of one compute dtype; returns a
    C-contiguous array of ``plan.out_shape`` in that dtype."""
    nsp = len(plan.n)
    xs = x.transpose(plan.order).reshape((plan.N, plan.G) + plan.n)
    ks = kf.transpose(plan.order).reshape((plan.G, 1) + plan.k)
    if nsp == 0:
        res = xs * ks.reshape(1, plan.G)
    elif nsp > 3 and method != "direct":
        res = _fft_any_rank(pad(xs, plan.pads, boundary, fill), ks, plan.out)
    elif nsp > 3:
        res = _direct_folded(pad(xs, plan.pads, boundary, fill), ks, plan.out)
    else:
        steps = tile_steps(plan, method)
        pads = plan.pads
        if steps is not None:        # room for whole tiles at the end (cropped afterwards)
            pads = tuple((b, e + nt * s - o) for (b, e), o, s, nt in
                         zip(pads, plan.out, steps, _ntiles(plan.out, steps)))
        xp = pad(xs, pads, boundary, fill)
        lift = (1,) * (3 - nsp)
        x5 = xp.reshape(xp.shape[:2] + lift + xp.shape[2:])
        w5 = np.ascontiguousarray(ks.reshape(ks.shape[:2] + lift + ks.shape[2:]))
        steps5 = None if steps is None else tuple(lift) + tuple(steps)
        r5 = _run_complex_aware(x5, w5, plan.G, method, steps5)
        crop = (slice(None), slice(None)) + (slice(0, 1),) * (3 - nsp) + tuple(
            slice(0, o) for o in plan.out)
        res = r5[crop].reshape((plan.N, plan.G) + plan.out)
    lead = [plan.out_shape[a] for a in plan.order[:len(plan.order) - nsp]]
    res = res.reshape(tuple(lead) + plan.out)
    return np.ascontiguousarray(res.transpose(np.argsort(plan.order)))


def pad(xs, pads, boundary, fill):
    """C-contiguous copy of (N, G, *spatial) ``xs`` padded per spatial axis."""
    if all(b == 0 and a == 0 for b, a in pads):
        return np.ascontiguousarray(xs)
    if boundary in ("circular", "symmetric"):
        return _pad_modes(xs, pads, boundary)
    shape = xs.shape[:2] + tuple(n + b + a for n, (b, a) in zip(xs.shape[2:], pads))
    xp = np.full(shape, fill, dtype=xs.dtype) if fill != 0 else np.zeros(shape, xs.dtype)
    xp[(slice(None), slice(None)) + tuple(slice(b, b + n) for n, (b, a) in
                                          zip(xs.shape[2:], pads))] = xs
    return xp


def _run_complex_aware(x5, w5, groups, method, steps):
    """Complex input on the real kernels: real and imaginary parts as extra images,
    output channels or input channels (one kernel call either way)."""
    xc, wc = x5.dtype.kind == "c", w5.dtype.kind == "c"
    if not (xc or wc):
        return _forward(x5, w5, groups, method, steps)
    N, C = x5.shape[:2]
    O, Cg = w5.shape[:2]
    K = w5.shape[2:]
    if xc and not wc:                 # (re, im) of x: a batch of 2N images
        r = _forward(np.concatenate([x5.real, x5.imag]), w5, groups, method, steps)
        return r[:N] + 1j * r[N:]
    if wc and not xc:                 # (re, im) of each kernel: two output channels
        w2 = np.stack([w5.real, w5.imag], axis=1).reshape((2 * O, Cg) + K)
        r = _forward(x5, np.ascontiguousarray(w2), groups, method, steps)
        r = r.reshape((N, O, 2) + r.shape[2:])
        return r[:, :, 0] + 1j * r[:, :, 1]
    # both: channels (re, im) of x; outputs re = [wr, -wi] . x and im = [wi, wr] . x
    x2 = np.stack([x5.real, x5.imag], axis=2).reshape((N, 2 * C) + x5.shape[2:])
    wr, wi = w5.real, w5.imag
    w2 = np.stack([np.stack([wr, -wi], axis=2), np.stack([wi, wr], axis=2)], axis=1)
    r = _forward(x2, np.ascontiguousarray(w2.reshape((2 * O, 2 * Cg) + K)), groups, method,
                 steps)
    r = r.reshape((N, O, 2) + r.shape[2:])
    return r[:, :, 0] + 1j * r[:, :, 1]


def _forward(x5, w5, groups, method, steps):
    algo = "direct" if method == "direct" else "fft"
    if steps is None:
        return _engine.forward(x5, w5, None, ONE3, ONE3, groups, algo)
    return _tiled(x5, w5, groups, steps, algo)


# --- tiles ----------------------------------------------------------------------------
def _ntiles(out, steps):
    return tuple(-(-o // s) for o, s in zip(out, steps))


def tile_steps(plan: Plan, method: str):
    """Outputs per tile along each spatial axis, or None to run the problem whole."""
    if method != "oa":
        return None
    steps = tuple(oa_step(o, k) for o, k in zip(plan.out, plan.k))
    return None if all(s >= o for s, o in zip(steps, plan.out)) else steps


_FAST = sorted({2 ** a * 3 ** b * 5 ** c for a in range(15) for b in range(6)
                for c in range(4) if 8 <= 2 ** a * 3 ** b * 5 ** c <= 1 << 14})


def oa_step(out: int, k: int) -> int:
    """Outputs per tile on one axis for overlap-save: the FFT length T (5-smooth) that
    minimises ceil(out / (T - k + 1)) * T * log2(T), never more than one tile needs."""
    if k == 1:
        return out
    whole = out + k - 1
    best, best_cost = out, whole * math.log2(max(whole, 2)) * 1.05   # one tile: plain fft
    for T in _FAST:
        step = T - k + 1
        if T < 2 * k or step <= 0:
            continue
        if step >= out:
            break
        cost = -(-out // step) * T * math.log2(T)
        if cost < best_cost:
            best, best_cost = step, cost
    return best


def _tiled(x5, w5, groups, steps, algo):
    """Valid correlation of x5 computed tile by tile, the tiles forming one batch."""
    N, C = x5.shape[:2]
    K = w5.shape[2:]
    out = tuple(p - k + 1 for p, k in zip(x5.shape[2:], K))
    nt = tuple(o // s for o, s in zip(out, steps))     # x5 was padded to whole tiles
    T = tuple(s + k - 1 for s, k in zip(steps, K))
    s = x5.strides
    view = as_strided(x5, (N, C) + nt + T,
                      s[:2] + tuple(st * si for st, si in zip(steps, s[2:])) + s[2:])
    tiles = np.ascontiguousarray(view.transpose(0, 2, 3, 4, 1, 5, 6, 7))
    tiles = tiles.reshape((N * _prod(nt), C) + T)
    r = _engine.forward(tiles, w5, None, ONE3, ONE3, groups, algo)
    O = r.shape[1]
    r = r.reshape((N,) + nt + (O,) + tuple(steps)).transpose(0, 4, 1, 5, 2, 6, 3, 7)
    return r.reshape((N, O) + tuple(n * st for n, st in zip(nt, steps)))


# --- more than three correlated axes --------------------------------------------------
def _direct_folded(xp, ks, out):
    """Direct method in any rank: the leading spatial axes become channels."""
    N, G = xp.shape[:2]
    r = len(out) - 3
    kl, kr = ks.shape[2:2 + r], ks.shape[2 + r:]
    win = sliding_window_view(xp, kl, axis=tuple(range(2, 2 + r)))
    # win: (N, G, o_1..o_r, P_rest..., k_1..k_r) -> (N, o..., G, k..., P_rest...)
    nd = win.ndim
    perm = ([0] + list(range(2, 2 + r)) + [1] + list(range(nd - r, nd))
            + list(range(2 + r, nd - r)))
    cols = np.ascontiguousarray(win.transpose(perm))
    lo = out[:r]
    x5 = cols.reshape((N * _prod(lo), G * _prod(kl)) + cols.shape[-3:])
    w5 = np.ascontiguousarray(ks.reshape((G, _prod(kl)) + tuple(kr)))
    res = _run_complex_aware(x5, w5, G, "direct", None)
    res = res.reshape((N,) + tuple(lo) + (G,) + res.shape[2:])
    return res.transpose([0, r + 1] + list(range(1, r + 1)) + list(range(r + 2, res.ndim)))


def _fft_any_rank(xp, ks, out):
    """FFT method in any rank, with scipy.fft: circular convolution of size >= padded."""
    axes = tuple(range(2, xp.ndim))
    K = ks.shape[2:]
    fshape = [sfft.next_fast_len(int(p), real=xp.dtype.kind != "c") for p in xp.shape[2:]]
    krev = ks[(slice(None), slice(None)) + (slice(None, None, -1),) * len(K)]
    if xp.dtype.kind == "c" or ks.dtype.kind == "c":
        y = sfft.ifftn(sfft.fftn(xp, fshape, axes=axes) * sfft.fftn(krev, fshape, axes=axes)
                       .reshape((1, -1) + tuple(fshape)), axes=axes)
    else:
        spec = sfft.rfftn(xp, fshape, axes=axes) * sfft.rfftn(krev, fshape, axes=axes).reshape(
            (1, ks.shape[0]) + tuple(fshape[:-1]) + (fshape[-1] // 2 + 1,))
        y = sfft.irfftn(spec, fshape, axes=axes)
    crop = (slice(None), slice(None)) + tuple(slice(k - 1, k - 1 + o) for k, o in zip(K, out))
    return y[crop].astype(np.result_type(xp, ks), copy=False)


def _prod(it) -> int:
    r = 1
    for v in it:
        r *= int(v)
    return r
