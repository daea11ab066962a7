"""The in-memory implementations behind :mod:`fastconv.signal`'s public functions (which
route Dask arrays to :mod:`fastconv.signal._dask`, whose chunks call these too): argument
checks, the method choice, and running a plan of :mod:`fastconv.signal._core`."""
from __future__ import annotations

import timeit
import warnings
from functools import lru_cache

import numpy as np

from .._arrays import is_dask_array as is_dask
from . import _core as core
from ._checks import (MSG, check_2d, check_freq, check_nd, direct_dtype,
                      fft_compute_dtype, fft_dtype, swap_needed)
from ._cost import estimate


def convolve_nd(fn, in1, in2, mode, method, corr):
    a, b = np.asarray(in1), np.asarray(in2)
    kind = check_nd(fn, a, b, mode, method)
    if kind == "scalar":
        return a * (np.conj(b) if corr else b)
    if kind == "object":
        return _object_fallback(fn, a, b, mode, method, corr)
    res_dtype = np.result_type(a, b)
    if kind == "empty":
        return np.empty(a.shape, dtype=res_dtype)
    if corr:                       # correlate(a, b) = convolve(a, reverse(conj(b)))
        b = np.conj(b[(slice(None, None, -1),) * b.ndim]) if b.dtype.kind == "c" \
            else b[(slice(None, None, -1),) * b.ndim]
    if swap_needed(mode, a.shape, b.shape) or (mode == "full" and b.size > a.size):
        a, b = b, a                # convolution commutes
    auto = method == "auto"
    if auto:
        method = choose(a, b, mode)
    windows = [core.window(mode, n, m) for n, m in zip(a.shape, b.shape)]
    kf = b[(slice(None, None, -1),) * b.ndim]
    return _finish(fn, a, kf, windows, method, res_dtype, auto)


def _finish(fn, a, kf, windows, method, res_dtype, auto, boundary="fill", fill=0):
    """Run a plan in the method's compute dtype and return SciPy's dtype ``res_dtype``."""
    plan = core.make_plan(a.shape, kf.shape, windows)
    if method == "direct":
        cdt = direct_dtype(res_dtype)
        return _cast(core.run(plan, a.astype(cdt, copy=False), kf.astype(cdt, copy=False),
                              "direct", boundary, _fill_as(fill, cdt)), res_dtype)
    cdt = fft_compute_dtype(fft_dtype(a.dtype, kf.dtype))
    out = core.run(plan, a.astype(cdt, copy=False), kf.astype(cdt, copy=False), method,
                   boundary, _fill_as(fill, cdt))
    if out.size and not np.isfinite(_finite_probe(out, method, auto)).all():
        if auto:                  # keep NaN/inf local, as the definition does
            return _finish(fn, a, kf, windows, "direct", res_dtype, False, boundary, fill)
        warnings.warn(MSG["nan"].format(fn=fn), RuntimeWarning, stacklevel=4)
    if res_dtype.kind in "biu":
        out = np.round(out)
    return _cast(out, res_dtype)


def _finite_probe(out, method, auto):
    """What to test for NaN/inf after an FFT method. One transform over the whole input
    (``'fft'``) spreads a NaN or inf input over every output, so three samples decide;
    overlap-add spreads it over the tiles that read it: all of them are tested when the
    result would be recomputed (``auto``), else (for the warning) the first."""
    if not auto:
        return out.flat[0]
    if method == "fft":
        return out.flat[[0, out.size // 2, out.size - 1]]
    return out


def _cast(out, res_dtype):
    if out.dtype == res_dtype:
        return out
    with warnings.catch_warnings():         # NaN -> int casts: as SciPy, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return out.astype(res_dtype)


def _fill_as(fill, cdt):
    if fill is None or (type(fill) is int and fill == 0):
        return 0
    return np.asarray(fill).astype(cdt)[()]


def _object_fallback(fn, a, b, mode, method, corr):
    """Object arrays: SciPy's 1-D direct path is numpy's; other cases are errors."""
    if a.ndim == 1 and method in ("auto", "direct") and a.size and b.size \
            and (mode != "same" or a.size >= b.size):
        return np.correlate(a, b, mode) if corr else np.convolve(a, b, mode)
    raise ValueError(MSG["type"].format(fn=fn, d1=a.dtype, d2=b.dtype))


def freq_convolve(in1, in2, mode, axes, method):
    a, b = np.asarray(in1), np.asarray(in2)
    kind, ax, swap = check_freq(a, b, mode, axes)
    if kind == "scalar":
        return a * b
    if kind == "empty":
        return np.array([])
    if swap:
        a, b = b, a
    if not ax:                    # no convolution left: SciPy's broadcast product
        out = a * b
        if mode == "same":
            out = out[tuple(slice((n - s) // 2, (n - s) // 2 + s)
                            for n, s in zip(out.shape, a.shape))]
        return out.copy()
    windows, flip = [], []
    for i, (n, m) in enumerate(zip(a.shape, b.shape)):
        if i in ax:
            windows.append(core.window(mode, n, m))
        elif n == 1 and m > 1:        # broadcast of in1: a convolution with a length-1 input
            windows.append(((m - 1) // 2, 1) if mode == "same" else (0, m))
        else:
            windows.append(None)
        flip.append(slice(None, None, -1) if windows[-1] is not None else slice(None))
    ft = fft_dtype(a.dtype, b.dtype)
    cdt = fft_compute_dtype(ft)
    kf = b[tuple(flip)]
    plan = core.make_plan(a.shape, kf.shape, windows)
    out = core.run(plan, a.astype(cdt, copy=False), kf.astype(cdt, copy=False), method)
    return _cast(out, ft)


def convolve_2d(fn, in1, in2, mode, boundary, fillvalue, corr):
    a, b, swapped, bnd, res_dtype, fill = check_2d(fn, np.asarray(in1), np.asarray(in2), mode,
                                            boundary, fillvalue)
    windows = [core.window(mode, n, m, corr2d=corr) for n, m in zip(a.shape, b.shape)]
    kf = np.conj(b) if corr else b[::-1, ::-1]
    if a.size == 0 or b.size == 0:
        out = _empty_2d(fn, a, kf, windows, bnd, fill, res_dtype)
    else:
        method = "direct" if res_dtype.kind in "biu" else choose(a, b, mode)
        out = _finish(fn, a, kf, windows, method, res_dtype, auto=True, boundary=bnd, fill=fill)
    return out[::-1, ::-1].copy() if corr and swapped else out


def _empty_2d(fn, a, kf, windows, bnd, fill, res_dtype):
    """SciPy's results for empty inputs: every output reads only the extension."""
    shape = tuple(w[1] for w in windows)
    if kf.size == 0 or 0 in shape:
        return np.zeros(shape, dtype=res_dtype)
    if bnd != "fill":
        raise ValueError(MSG["empty_boundary"].format(fn=fn, b=bnd, s1=a.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.full(shape, np.asarray(fill, dtype=res_dtype) * kf.astype(res_dtype).sum(dtype=res_dtype),
                       dtype=res_dtype)


def choose(a, b, mode):
    """Hard rules, then the cost model, for in1 ``a`` (after any swap) and kernel ``b``."""
    if a.dtype.kind == "b" and b.dtype.kind == "b":
        return "direct"
    if a.dtype.kind in "biu" or b.dtype.kind in "biu":
        bound = maxabs(a) * maxabs(b) * min(a.size, b.size)
        if bound > 2 ** np.finfo(np.float64).nmant - 1:
            return "direct"
    return _choose(a.shape, b.shape, a.dtype, b.dtype, mode, core.fast_fir())


@lru_cache(maxsize=1024)
def _choose(s1, s2, d1, d2, mode, fast_fir):
    """The cost model's choice for these shapes and dtypes (cached: a call's few
    microseconds of dtype arithmetic are a visible part of small calls)."""
    cdt = fft_compute_dtype(fft_dtype(d1, d2))
    fir = fast_fir and "f" in (d1.kind, d2.kind)   # (a real float result)
    return _predict(s1, s2, mode, cdt.itemsize // (2 if cdt.kind == "c" else 1),
                    d1.kind == "c", d2.kind == "c", fir)


@lru_cache(maxsize=1024)
def _predict(s1, s2, mode, itemsize, x_complex, k_complex, fir=False):
    """The cost model's choice for these shapes (``itemsize``: of one real sample;
    ``fir``: long 1-D kernels run the fast FIR path, see _cost.features)."""
    plan = core.make_plan(s1, s2, [core.window(mode, n, m) for n, m in zip(s1, s2)])
    if plan.macs < core.SMALL_MACS:     # microseconds on one thread: the model's fitted
        return "direct"                 # overheads cannot tell such calls apart
    est = estimate(plan, itemsize, x_complex, k_complex, fir)
    return min(est, key=est.get)


def maxabs(x):
    if x.dtype.kind == "b":
        return 1
    if x.dtype.kind in "iu":                 # Python ints: no overflow at the extremes
        if is_dask(x):                       # one pass over a dask array, not two
            import dask
            hi, lo = dask.compute(x.max(), x.min())
        else:
            hi, lo = x.max(), x.min()
        return max(abs(int(hi)), abs(int(lo)))
    m = float(np.abs(x).max())
    return m if np.isfinite(m) else float("inf")


def timeit_fast(fn, repeat=3):
    """Seconds per call: enough calls per repetition to take >= 5 ms, best of ``repeat``."""
    timer = timeit.Timer(fn)
    number = 1
    while True:
        t = timer.timeit(number)
        if t >= 5e-4 or number >= 10 ** 6:
            break
        number *= 10
    if t > 1.0:
        return t / number
    number *= 10
    return min(timer.repeat(repeat, number)) / number
