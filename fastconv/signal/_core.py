"""The engine behind :mod:`fastconv.signal`: any SciPy convolution as a batched, grouped,
padded 'valid' cross-correlation, run by ``fastconv.cpu.engine.forward`` (direct method) or
by FFTs.

Every public function reduces to one call of :func:`run`: cross-correlate ``x`` with
``kf`` (a convolution passes its kernel flipped) and keep, on each correlated axis, a
window ``(start, length)`` of the *full* correlation -- index ``j`` of the full result is
``sum_t xpad[j + t] * kf[t]`` with ``xpad`` = ``x`` padded by ``m - 1`` on both sides.
The modes are windows: full ``(0, n+m-1)``, valid ``(m-1, n-m+1)``, same
``((m-1)//2, n)`` (``correlate2d``: ``(m//2, n)``). A window is produced by padding ``x``
``m-1-start`` before and ``start+length-n`` after (with zeros, a fill value, or wrapped /
mirrored samples for convolve2d's boundaries) and taking the valid correlation.

Axes map onto the layout ``(N, C, *spatial)`` of the engine (5-D: ``(N, C, D, H, W)``):

* axes where the kernel has length 1 and the window is the identity -> batch ``N``;
* axes that are not correlated and have equal lengths (fftconvolve's ``axes``) -> groups
  (one channel and one kernel per group);
* correlated axes -> up to three spatial axes (more: folded into channels for the
  direct method, or computed with ``scipy.fft`` for the FFT methods).

Methods: ``direct`` runs the one-channel stencil kernel (``fastconv.cpu.stencil``) in 1-D
and 2-D, the engine's direct kernel in 3-D (int64 keeps integers exact; complex runs on
the real kernels, real and imaginary parts becoming extra images, channels or output
channels). ``fft`` multiplies spectra (``scipy.fft`` over the
correlated axes only; the CNN engine's FFT kernel would also transform the length-1 axes
of its 5-D layout); with zero padding it transforms ``x`` unpadded, on lengths
``n + max(before, after)`` (:func:`_fft_zero_padded`). ``oa``
(overlap-add, computed as overlap-save) cuts the padded input into overlapping tiles
that one batched FFT processes: small, cache-friendly transforms and a small kernel FFT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..cpu import engine as cpu_engine
from ..dispatch import _level
from .._pad import pad as _pad_modes
from .._spec import _prod
from ..cpu._common import SERIAL_BELOW as SMALL_MACS, serial_if_small, workspace
from ..cpu.fft import workers
from ..cpu.stencil import stencil2d
from .._pad import source_index as _pad_index
from . import _buffers

try:        # scipy.fft's own transforms, which take an output array (scipy.fft does not)
    from scipy.fft._pocketfft import pypocketfft as _pocketfft
except ImportError:                                   # pragma: no cover
    _pocketfft = None

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
    return _make_plan(tuple(xshape), tuple(kshape),
                      tuple(None if w is None else tuple(w) for w in windows))


@lru_cache(maxsize=1024)
def _make_plan(xshape, kshape, windows) -> Plan:
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
    ident = plan.order == tuple(range(len(plan.order)))
    xs = (x if ident else x.transpose(plan.order)).reshape((plan.N, plan.G) + plan.n)
    ks = (kf if ident else kf.transpose(plan.order)).reshape((plan.G, 1) + plan.k)
    if nsp == 0:
        res = xs * ks.reshape(1, plan.G)
    elif method == "direct":
        res = (_direct_window(xs, ks, plan, boundary, fill) if nsp <= 2 else
               _direct_regions(xs, ks, plan, boundary, fill) if nsp == 3 else None)
        if res is None:
            xp = pad(xs, plan.pads, boundary, fill)
            res = _direct(xp, ks) if nsp <= 3 else _direct_folded(xp, ks, plan.out)
    else:
        steps = tile_steps(plan, method)
        if steps is None and boundary == "fill" and not fill:
            res = _fft_zero_padded(xs, ks, plan)
        elif steps is None:           # padded straight to the transform's fast lengths
            cplx = xs.dtype.kind == "c" or ks.dtype.kind == "c"
            ext = tuple(sfft.next_fast_len(p, real=not cplx) - p if p > 1 else 0
                        for p in plan.padded) if boundary == "fill" else ()
            res = _fft_valid(pad(xs, plan.pads, boundary, fill, ext), ks, plan.padded)
        else:                         # pad to whole tiles; the excess is cropped below
            nt = _ntiles(plan.out, steps)
            pads = tuple((b, e + n * st - o) for (b, e), o, st, n in
                         zip(plan.pads, plan.out, steps, nt))
            tiles = _tile(pad(xs, pads, boundary, fill), plan.k, steps, nt)
            res = _untile(_fft_valid(tiles, ks), plan.N, nt)
        if res.shape[2:] != tuple(plan.out):
            res = res[(slice(None), slice(None)) + tuple(slice(0, o) for o in plan.out)]
    lead = [plan.out_shape[a] for a in plan.order[:len(plan.order) - nsp]]
    res = res.reshape(tuple(lead) + plan.out)
    if plan.order == tuple(range(len(plan.order))):
        return np.ascontiguousarray(res)
    return np.ascontiguousarray(res.transpose(np.argsort(plan.order)))


def fast_fir() -> bool:
    """Whether the direct method may run long 1-D kernels by the fast FIR algorithm
    (:func:`fastconv.cpu.stencil.stencil2d`'s ``fir``: 3/4 of the multiply-adds, an
    error relative to the terms of each output and its two neighbours, as Winograd's
    to its tile's): at every precision level but "highest" (``fastconv.set_precision``,
    or this thread's ``dispatch.precision_scope``)."""
    return _level(None) != "highest"


def _direct(xp, ks, out=None):
    """Valid correlation of (N, G, *P) with (G, 1, *K) on the engine's direct kernel
    (into ``out``, a possibly strided (N, G, *O) view, for real inputs); in 1-D and 2-D
    on the one-channel register-tiled kernel of :mod:`fastconv.cpu.stencil`."""
    nsp = xp.ndim - 2
    if nsp in (1, 2):
        return _direct_stencil(xp, ks, out)
    lift = (1,) * (3 - nsp)
    x5 = np.ascontiguousarray(xp).reshape(xp.shape[:2] + lift + xp.shape[2:])
    w5 = np.ascontiguousarray(ks.reshape(ks.shape[:2] + lift + ks.shape[2:]))
    macs = xp.shape[0] * ks.size * _prod(p - k + 1 for p, k in zip(xp.shape[2:], ks.shape[2:]))
    with serial_if_small(macs):
        if out is not None:
            out5 = out[(slice(None), slice(None)) + (None,) * len(lift)]    # a view
            return cpu_engine.forward(x5, w5, None, ONE3, ONE3, xp.shape[1], cpu_engine.DIRECT,
                                          out=out5)
        r5 = _run_complex_aware(x5, w5, xp.shape[1])
    return r5.reshape(r5.shape[:2] + r5.shape[2 + len(lift):])


def _direct_stencil(xp, ks, out=None):
    """:func:`_direct` in 1-D (one row) and 2-D on :func:`fastconv.cpu.stencil.stencil2d`;
    complex data as real and imaginary parts (images of one call per kernel part)."""
    one_d = xp.ndim == 3
    K = ks.shape[2:]
    G = ks.shape[0]
    O = tuple(p - k + 1 for p, k in zip(xp.shape[2:], K))

    def rows(a):                             # 1-D as one row of a 2-D image
        return a[:, :, None, :] if one_d else a

    def taps(w):                             # (G, 1, *K) -> (G, kh, kw)
        return np.ascontiguousarray(w.reshape((G,) + ((1,) if one_d else ()) + K))

    def corr(x, w):                          # real x (M, G, *P), real w (G, 1, *K)
        r = _buffers.empty(x.shape[:2] + O, x.dtype)
        stencil2d(rows(r), rows(x), taps(w), fir=fast_fir())
        return r

    if out is not None:
        stencil2d(rows(out), rows(xp), taps(ks), fir=fast_fir())
        return out
    xc, kc = xp.dtype.kind == "c", ks.dtype.kind == "c"
    if not (xc or kc):
        return corr(xp, ks)
    N = xp.shape[0]
    xs = np.concatenate([xp.real, xp.imag]) if xc else xp      # (re, im) as images
    parts = [corr(xs, np.ascontiguousarray(p)) for p in ((ks.real, ks.imag) if kc else (ks,))]
    if not kc:
        return parts[0][:N] + 1j * parts[0][N:]
    (rr, ir), (ri, ii) = [(p[:N], p[N:]) if xc else (p, None) for p in parts]
    if not xc:
        return rr + 1j * ri
    return (rr - ii) + 1j * (ri + ir)


def _direct_window(xs, ks, plan, boundary, fill):
    """The direct method in 1-D and 2-D for real data: one call of the stencil kernel on
    ``xs`` itself, which reads the padding in place (blocks of outputs inside the input
    from it, the edges from small copies; no padded copy of the input) and writes every
    output once, into a pooled result. None for complex data (the padded path) and for
    empty inputs that a boundary would wrap or mirror."""
    if xs.dtype.kind == "c" or ks.dtype.kind == "c" or (xs.size == 0 and boundary != "fill"):
        return None
    one_d = len(plan.n) == 1
    res = _buffers.empty((plan.N, plan.G) + tuple(plan.out), xs.dtype)
    if one_d:
        stencil2d(res[:, :, None, :], xs[:, :, None, :],
                  np.ascontiguousarray(ks.reshape(plan.G, 1, plan.k[0])), None,
                  ((0, 0),) + plan.pads, boundary, fill, fir=fast_fir())
    else:
        stencil2d(res, xs, np.ascontiguousarray(ks.reshape((plan.G,) + plan.k)), None,
                  plan.pads, boundary, fill)
    return res


REGIONS_MIN_OUTPUTS = 1 << 17   # smaller problems: one padded copy and one kernel call
# (the five kernel calls of the split cost more than the copy up to ~256x256: 305 vs
# 135 us for 256x256 k = 5, 0.80 vs 0.99 ms the other way at 512x512 k = 3)


def _direct_regions(xs, ks, plan, boundary, fill):
    """The direct method in 3-D (1-D and 2-D: :func:`_direct_window`, a single kernel
    call) without padding the whole input: the outputs whose windows lie
    inside ``xs`` (the interior box) are computed from ``xs`` itself, written in place
    into the result; the shell around it, axis by axis, from small padded slabs. Saves a
    copy of the input (and its page faults). None when not applicable (complex data,
    no interior, small problems)."""
    if xs.dtype.kind == "c" or ks.dtype.kind == "c" or _prod(plan.out) < REGIONS_MIN_OUTPUTS:
        return None
    if all(b == 0 and e == 0 for b, e in plan.pads):
        return None
    nsp = len(plan.n)
    lo = [b for b, _ in plan.pads]
    hi = [min(b + n - k + 1, o) for (b, _), n, k, o in zip(plan.pads, plan.n, plan.k, plan.out)]
    if any(h - l < 1 for l, h in zip(lo, hi)):
        return None
    # the interior must dominate, or the slabs cost more than one padded copy
    if _prod(h - l for l, h in zip(lo, hi)) * 2 < _prod(plan.out):
        return None
    res = _buffers.empty((plan.N, plan.G) + tuple(plan.out), np.result_type(xs, ks))
    lead = (slice(None), slice(None))

    def compute(rlo, rhi):
        xin = _padded_slab(xs, plan.pads, boundary, fill, rlo,
                           [h + k - 1 for h, k in zip(rhi, plan.k)])
        view = res[lead + tuple(slice(l, h) for l, h in zip(rlo, rhi))]
        _direct(xin, ks, out=view)

    compute(lo, hi)                                   # the interior: x itself
    box_lo, box_hi = [0] * nsp, list(plan.out)
    for a in range(nsp):                              # the shell, slab by slab
        for l, h in ((box_lo[a], lo[a]), (hi[a], box_hi[a])):
            if h > l:
                rlo, rhi = list(box_lo), list(box_hi)
                rlo[a], rhi[a] = l, h
                compute(rlo, rhi)
        box_lo[a], box_hi[a] = lo[a], hi[a]
    return res


def _padded_slab(xs, pads, boundary, fill, lo, hi):
    """Positions ``[lo, hi)`` per spatial axis of ``xs`` (N, G, *n) padded by ``pads``
    (as :func:`pad` would give them), as a view of ``xs`` when they are all inside."""
    inside = [b <= l and h <= b + n for l, h, n, (b, _) in zip(lo, hi, xs.shape[2:], pads)]
    if all(inside):
        return xs[(slice(None), slice(None))
                  + tuple(slice(l - b, h - b) for l, h, (b, _) in zip(lo, hi, pads))]
    if boundary in ("circular", "symmetric"):
        r = xs
        for a, (l, h, (b, e)) in enumerate(zip(lo, hi, pads)):
            idx = _pad_index(r.shape[a + 2], b, e, boundary)[l:h]
            r = np.take(r, idx, axis=a + 2)
        return r
    out = np.full(xs.shape[:2] + tuple(h - l for l, h in zip(lo, hi)), fill, dtype=xs.dtype)
    src, dst = [], []
    for l, h, n, (b, _) in zip(lo, hi, xs.shape[2:], pads):
        s0, s1 = max(l - b, 0), min(h - b, n)          # raw positions covered
        src.append(slice(s0, max(s1, s0)))
        dst.append(slice(s0 + b - l, s0 + b - l + max(s1 - s0, 0)))
    out[(slice(None), slice(None)) + tuple(dst)] = xs[(slice(None), slice(None)) + tuple(src)]
    return out


def fft_lengths(plan: Plan, cplx: bool) -> tuple:
    """Transform lengths of :func:`_fft_zero_padded` per spatial axis: fast lengths of at
    least ``n + max(before, after)`` (1 for axes of length 1 throughout)."""
    return tuple(sfft.next_fast_len(n + max(b, e), real=not cplx) if n + b + e > 1 else 1
                 for n, (b, e) in zip(plan.n, plan.pads))


def _fft_zero_padded(xs, ks, plan):
    """The FFT method for zero padding, without padding: ``x`` sits at the start of each
    transform and the zeros after it (implicit in the transforms' lengths) serve as the
    padding on both sides, circularly. The correlation of the padded input is a circular
    shift of that of ``x`` by the padding before, so every output is exact when the
    transform length ``L >= n + max(before, after)`` (not ``n + before + after``): the
    window of output ``i`` covers ``[i - before, i - before + k)``, whose samples outside
    ``[0, n)`` land in the zeros ``[n, L)``. The inverse transforms skip the rows no output
    needs; the crop is the one copy. Returns (N, G, *out), C-contiguous."""
    nsp = len(plan.n)
    cplx = xs.dtype.kind == "c" or ks.dtype.kind == "c"
    L = fft_lengths(plan, cplx)
    axes = tuple(2 + a for a in range(nsp) if L[a] > 1)
    fshape = [L[a - 2] for a in axes]
    krev = ks[(slice(None), slice(None)) + (slice(None, None, -1),) * nsp]
    nw = workers() if xs.size >= SMALL_MACS else 1
    # output i of axis a is entry i + start of the circular result, start = k - 1 - before
    start = [k - 1 - b for k, (b, _) in zip(plan.k, plan.pads)]
    if not axes:
        return xs * ks.reshape((1, plan.G) + (1,) * nsp)
    if _pocketfft is not None and not cplx and len(axes) == nsp:
        try:
            return _fft_zero_padded_inplace(xs, krev, plan, L, start, nw)
        except TypeError:                             # pragma: no cover (another SciPy)
            pass
    with np.errstate(invalid="ignore", over="ignore"):    # inf/NaN input: see callers
        spec = _padded_spectrum(xs, fshape, axes, cplx, nw)
        spec *= _kernel_spectrum(krev, fshape, axes, cplx, nw).reshape(
            (1, -1) + spec.shape[2:])
        for a, f in zip(axes[:-1], fshape[:-1]):          # the leading axes: keep only
            spec = sfft.ifft(spec, n=f, axis=a, workers=nw, overwrite_x=True)  # the rows
            s0 = start[a - 2]                             # outputs need
            spec = spec[(slice(None),) * a + (slice(s0, s0 + plan.out[a - 2]),)]
        last = axes[-1]
        y = (sfft.ifft(spec, n=fshape[-1], axis=last, workers=nw, overwrite_x=True) if cplx
             else sfft.irfft(spec, n=fshape[-1], axis=last, workers=nw))
    crop = tuple(slice(None) if a in axes[:-1] else slice(s, s + o)
                 for a, (s, o) in enumerate(zip(start, plan.out), start=2))
    return np.ascontiguousarray(y[(slice(None), slice(None)) + crop])


def _fft_zero_padded_inplace(xs, krev, plan, L, start, nw):
    """:func:`_fft_zero_padded` for real data transformed on every spatial axis, in two
    scratch arrays that this thread keeps from call to call (``cpu._common.workspace``):
    the input zero-extended on its last axis, then the inverse's real rows; and the
    spectrum, transformed in place axis by axis. scipy.fft would allocate a fresh array
    per step, and after another library's large temporaries were freed each of them
    page-faults in again (~1 ms per 8 MB here). The result comes from :mod:`._buffers`."""
    N, G = xs.shape[:2]
    nsp = len(L)
    last = 1 + nsp
    lead = tuple(range(2, last))
    half = L[-1] // 2 + 1
    real = workspace("signal.fft.real", (N, G) + tuple(plan.n[:-1]) + (L[-1],), xs.dtype)
    n1 = plan.n[-1]
    real[..., :n1] = xs
    real[..., n1:] = 0
    ctype = np.result_type(xs.dtype, np.complex64)
    spec = workspace("signal.fft.spec", (N, G) + tuple(L[:-1]) + (half,), ctype)
    box = (slice(None), slice(None)) + tuple(slice(0, n) for n in plan.n[:-1])
    with np.errstate(invalid="ignore", over="ignore"):    # inf/NaN input: see callers
        _pocketfft.r2c(real, axes=(last,), forward=True, inorm=0, out=spec[box], nthreads=nw)
        for a, n in zip(lead, plan.n[:-1]):               # the zeros after x, axis by axis
            spec[(slice(None),) * a + (slice(n, None),)] = 0
        if lead:
            _pocketfft.c2c(spec, axes=lead, forward=True, inorm=0, out=spec, nthreads=nw)
        spec *= _kernel_spectrum(krev, list(L), tuple(range(2, 2 + nsp)), False, nw).reshape(
            (1, G) + spec.shape[2:])
        if lead:                                          # inorm 2: divided by the length
            _pocketfft.c2c(spec, axes=lead, forward=False, inorm=2, out=spec, nthreads=nw)
        rows = (slice(None), slice(None)) + tuple(slice(s, s + o) for s, o in
                                                  zip(start[:-1], plan.out[:-1]))
        y = workspace("signal.fft.real", (N, G) + tuple(plan.out[:-1]) + (L[-1],), xs.dtype)
        _pocketfft.c2r(spec[rows], axes=(last,), lastsize=L[-1], forward=False, inorm=2,
                       out=y, nthreads=nw)
    res = _buffers.empty((N, G) + tuple(plan.out), xs.dtype)      # never the scratch itself
    np.copyto(res, y[..., start[-1]:start[-1] + plan.out[-1]])
    return res


def _fft_valid(xp, ks, P=None):
    """Valid correlation of (N, G, *P) with (G, 1, *K) by FFTs of length >= P: the
    circular convolution with the reversed kernel is exact from index K - 1 on. ``xp``
    may extend past ``P`` (default: its own shape) with finite values -- zeros padding
    it to the transform's lengths, which then needs no copy."""
    with np.errstate(invalid="ignore", over="ignore"):    # inf/NaN input: see callers
        return _fft_valid_scipy(xp, ks, tuple(xp.shape[2:]) if P is None else tuple(P))


def _fft_valid_scipy(xp, ks, P):
    """:func:`_fft_valid` with scipy.fft (all cores), transforming only the axes longer
    than 1."""
    nsp = xp.ndim - 2
    K = ks.shape[2:]
    cplx = xp.dtype.kind == "c" or ks.dtype.kind == "c"
    axes = tuple(a for a in range(2, xp.ndim) if P[a - 2] > 1)
    fshape = [sfft.next_fast_len(int(P[a - 2]), real=not cplx) for a in axes]
    krev = ks[(slice(None), slice(None)) + (slice(None, None, -1),) * nsp]
    fwd, inv = (sfft.fftn, sfft.ifftn) if cplx else (sfft.rfftn, sfft.irfftn)
    nw = workers() if xp.size >= SMALL_MACS else 1
    spec = fwd(xp, fshape, axes=axes, workers=nw)
    spec *= _kernel_spectrum(krev, fshape, axes, cplx, nw).reshape((1, -1) + spec.shape[2:])
    y = inv(spec, fshape, axes=axes, workers=nw)
    return y[(slice(None), slice(None)) + tuple(slice(k - 1, p) for k, p in zip(K, P))]


SPECTRUM_CACHE_BYTES = 32 << 20   # largest kernel spectrum kept for the next calls


def _kernel_spectrum(k, fshape, axes, cplx, nw):
    """:func:`_padded_spectrum`, remembered for the last few kernels: a filter applied to
    image after image (calls with the same kernel, shapes and dtype) transforms it once.
    Keyed by the kernel's bytes; read-only."""
    nbytes = _prod(fshape) * 16 * k.shape[0]
    if k.nbytes > (1 << 20) or nbytes > SPECTRUM_CACHE_BYTES:
        return _padded_spectrum(k, fshape, axes, cplx, nw)
    return _cached_spectrum(np.ascontiguousarray(k).tobytes(), k.shape, k.dtype.str,
                            tuple(fshape), axes, cplx, nw)


@lru_cache(maxsize=4)
def _cached_spectrum(kbytes, shape, dtype, fshape, axes, cplx, nw):
    k = np.frombuffer(kbytes, dtype=dtype).reshape(shape)
    spec = _padded_spectrum(k, fshape, axes, cplx, nw)
    spec.flags.writeable = False
    return spec


def _padded_spectrum(k, fshape, axes, cplx, nw):
    """``fftn`` (``rfftn``) of the small array ``k`` zero-padded to ``fshape``, last axis
    first, so that the padding of the other axes is never transformed: for a 2-D kernel
    only its k rows, not all of fshape's, go through the row transforms."""
    if not axes:
        return k
    spec = (sfft.fft if cplx else sfft.rfft)(k, n=fshape[-1], axis=axes[-1], workers=nw)
    for a, f in zip(axes[-2::-1], fshape[-2::-1]):
        spec = sfft.fft(spec, n=f, axis=a, workers=nw)
    return spec


def pad(xs, pads, boundary, fill, extend=()):
    """C-contiguous copy of (N, G, *spatial) ``xs`` padded per spatial axis (boundary
    'fill': then ``extend[a]`` more zeros after axis ``a``, up to an FFT's length)."""
    extend = tuple(extend) or (0,) * len(pads)
    if all(b == 0 and a == 0 for b, a in pads) and not any(extend):
        return np.ascontiguousarray(xs)
    if boundary in ("circular", "symmetric"):
        return _pad_modes(xs, pads, boundary)
    shape = xs.shape[:2] + tuple(n + b + a + e for n, (b, a), e in
                                 zip(xs.shape[2:], pads, extend))
    xp = np.empty(shape, dtype=xs.dtype)       # every element is written exactly once:
    inner = (slice(None), slice(None))
    for n, (b, a) in zip(xs.shape[2:], pads):   # the borders, axis by axis, ...
        xp[inner + (slice(0, b),)] = fill
        xp[inner + (slice(b + n, b + n + a),)] = fill
        xp[inner + (slice(b + n + a, None),)] = 0
        inner += (slice(b, b + n),)
    xp[inner] = xs                               # ... then the interior
    return xp


def _run_complex_aware(x5, w5, groups):
    """``cpu_engine.forward`` for complex input on the real kernels: real and imaginary parts
    as extra images, output channels or input channels (one kernel call either way)."""
    def fwd(x, w):
        return cpu_engine.forward(x, w, None, ONE3, ONE3, groups, cpu_engine.DIRECT)

    xc, wc = x5.dtype.kind == "c", w5.dtype.kind == "c"
    if not (xc or wc):
        return fwd(x5, w5)
    N, C = x5.shape[:2]
    O, Cg = w5.shape[:2]
    K = w5.shape[2:]
    if xc and not wc:                 # (re, im) of x: a batch of 2N images
        r = fwd(np.concatenate([x5.real, x5.imag]), w5)
        return r[:N] + 1j * r[N:]
    if wc and not xc:                 # (re, im) of each kernel: two output channels
        w2 = np.stack([w5.real, w5.imag], axis=1).reshape((2 * O, Cg) + K)
        r = fwd(x5, np.ascontiguousarray(w2))
        r = r.reshape((N, O, 2) + r.shape[2:])
        return r[:, :, 0] + 1j * r[:, :, 1]
    # both: channels (re, im) of x; outputs re = [wr, -wi] . x and im = [wi, wr] . x
    x2 = np.stack([x5.real, x5.imag], axis=2).reshape((N, 2 * C) + x5.shape[2:])
    wr, wi = w5.real, w5.imag
    w2 = np.stack([np.stack([wr, -wi], axis=2), np.stack([wi, wr], axis=2)], axis=1)
    r = fwd(x2, np.ascontiguousarray(w2.reshape((2 * O, 2 * Cg) + K)))
    r = r.reshape((N, O, 2) + r.shape[2:])
    return r[:, :, 0] + 1j * r[:, :, 1]


# --- tiles ----------------------------------------------------------------------------
def _ntiles(out, steps):
    return tuple(-(-o // s) for o, s in zip(out, steps))


def tile_steps(plan: Plan, method: str):
    """Outputs per tile along each spatial axis for overlap-add ('oa'), or None to run
    the problem as one FFT."""
    if method != "oa" or not plan.out or _prod(plan.out) < OA_MIN_OUTPUTS:
        return None
    return _oa_steps(plan.out, plan.k)


@lru_cache(maxsize=1024)
def _oa_steps(out, k):
    """One tile length T for every axis (capped at the axis's whole length), the one that
    :func:`oa_cost` rates cheapest; None when one tile (a plain FFT) is cheapest."""
    whole = tuple(o + m - 1 for o, m in zip(out, k))
    best, best_cost = None, oa_cost(whole, (1,) * len(whole))
    for T in _FAST:
        tiles = tuple(min(T, w) for w in whole)
        if tiles == whole:
            break
        if any(t < 2 * m and t < w for t, m, w in zip(tiles, k, whole)):
            continue
        steps = tuple(t - m + 1 for t, m in zip(tiles, k))
        cost = oa_cost(tiles, _ntiles(out, steps))
        if cost < best_cost:
            best, best_cost = steps, cost
    return best


OA_MIN_OUTPUTS = 16384    # smaller problems: one FFT
OA_TILE_OVERHEAD = 4096   # fixed cost of one tile, in units of n log2 n FFT work


def oa_cost(tile, ntiles):
    """Model of a tiled FFT's work: per tile n log2 n plus copies, plus a fixed cost."""
    n = _prod(sfft.next_fast_len(int(t), real=True) for t in tile)
    return _prod(ntiles) * (n * (math.log2(max(n, 2)) + 2) + OA_TILE_OVERHEAD)


# tile lengths: 5-smooth, from 32 (smaller tiles cost more in overhead than they save)
_FAST = sorted({2 ** a * 3 ** b * 5 ** c for a in range(17) for b in range(4)
                for c in range(3) if 32 <= 2 ** a * 3 ** b * 5 ** c <= 1 << 16})


def _tile(xp, K, steps, nt):
    """(N, G, *P) padded to whole tiles -> (N * prod(nt), G, *T) overlapping tiles, tile
    ``i`` covering ``[i * step, i * step + step + k - 1)`` on each axis."""
    N, G = xp.shape[:2]
    d = len(steps)
    T = tuple(st + k - 1 for st, k in zip(steps, K))
    s = xp.strides
    view = as_strided(xp, (N, G) + tuple(nt) + T,
                      s[:2] + tuple(st * si for st, si in zip(steps, s[2:])) + s[2:])
    tiles = np.ascontiguousarray(view.transpose([0] + list(range(2, 2 + d)) + [1]
                                                + list(range(2 + d, 2 + 2 * d))))
    return tiles.reshape((N * _prod(nt), G) + T)


def _untile(y, N, nt):
    """(N * prod(nt), G, *steps) tile results -> (N, G, *(nt * steps))."""
    d = len(nt)
    G, steps = y.shape[1], y.shape[2:]
    y = y.reshape((N,) + tuple(nt) + (G,) + steps)
    perm = [0, d + 1] + [i for a in range(d) for i in (1 + a, d + 2 + a)]
    return y.transpose(perm).reshape((N, G) + tuple(n * st for n, st in zip(nt, steps)))


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
    with serial_if_small(x5.shape[0] * _prod(ks.shape) * _prod(out)):
        res = _run_complex_aware(x5, w5, G)
    res = res.reshape((N,) + tuple(lo) + (G,) + res.shape[2:])
    return res.transpose([0, r + 1] + list(range(1, r + 1)) + list(range(r + 2, res.ndim)))


