"""Dask arrays in, lazy Dask arrays out, for :mod:`fastconv.signal`: the halo engine of
:mod:`fastconv._dask` over the in-memory implementations (:mod:`fastconv.signal._memory`),
each chunk a 'valid'-mode call on its padded block."""
from __future__ import annotations

import functools

import numpy as np

from .._dask import _big, _eager, _meta, _small, check_known, is_dask, pad, windowed
from . import _memory
from ._checks import check_2d, check_freq, check_nd, fft_dtype, swap_needed
from ._core import window


# --- fastconv.signal ------------------------------------------------------------------
def _signal_block(block, call, kernel):
    return call(block, kernel)


def _signal_block_sliced(block, loc, call, kernel, sliced):
    """Kernels that vary along a non-convolved axis (fftconvolve's ``axes``): the block's
    own slice of the kernel along those axes (not padded, so input coordinates)."""
    k = kernel[tuple(slice(*loc[i]) if i in sliced else slice(None)
                     for i in range(kernel.ndim))]
    return call(block, k)


def _signal_windows(data, kern, windows, boundary, fill, call, dtype, sliced=()):
    """``call(padded block, kernel)`` ('valid' mode of the in-memory function) over
    ``data`` padded per window: window ``(start, length)`` of the full correlation on a
    convolved axis, None on the others. A window that starts after the kernel's overhang
    or ends before ``data`` does (a 'same' window with the larger operand as ``data``)
    crops ``data`` instead of padding it: only with ``boundary`` 'fill' and a zero fill."""
    pads, crop, layout = {}, [], []
    for i, w in enumerate(windows):
        crop.append(slice(None))
        if w is None:
            layout.append(None)
            continue
        n, m = data.shape[i], kern.shape[i]
        start, length = w
        before, after = m - 1 - start, start + length - n
        if before < 0 or after < 0:       # the window reads only the middle of ``data``
            crop[i] = slice(max(-before, 0), n - max(-after, 0))
        pads[i] = (max(before, 0), max(after, 0))
        layout.append(("window", length, 1, m, data.chunks[i]))
    if any(c != slice(None) for c in crop):
        data = data[tuple(crop)]
    x = pad(data, pads, boundary, fill)
    if sliced:
        func = functools.partial(_signal_block_sliced, call=call, kernel=kern,
                                 sliced=tuple(sliced))
    else:
        func = functools.partial(_signal_block, call=call, kernel=kern)
    return windowed(x, layout, func, dtype, located=bool(sliced))


def _flip(x):
    return x[(slice(None, None, -1),) * x.ndim]


def signal_nd(fn, in1, in2, mode, method):
    """:func:`fastconv.signal.convolve` / ``correlate`` with a dask operand."""
    import dask.array as da

    _check_inputs(fn, in1, in2)
    corr = fn == "correlate"
    pa, pb = _meta(in1), _meta(in2)
    kind = check_nd(fn, pa, pb, mode, method)
    if kind == "scalar":
        b = da.asarray(in2)
        return da.asarray(in1) * (da.conj(b) if corr else b)
    if kind == "object":
        return _eager(functools.partial(_memory.convolve_nd, fn, corr=corr), in1, in2,
                      mode=mode, method=method)
    res_dtype = np.result_type(pa.dtype, pb.dtype)
    if kind == "empty":
        return da.empty(pa.shape, dtype=res_dtype)
    valid_swap = swap_needed(mode, pa.shape, pb.shape)
    if valid_swap or _commute(mode, in1, in2, pa, pb):
        # convolution commutes: correlate(a, b) = convolve(reverse(conj(b)), a)
        data = _big(in2)
        if corr:
            data = _flip(data.conj() if data.dtype.kind == "c" else data)
        data, kern, fn_, corr_ = data, _small(in1), "convolve", False
    else:
        data, kern, fn_, corr_ = _big(in1), _small(in2), fn, corr
    # windows of the full output (the same whichever operand is ``data``), from the shapes
    # the in-memory call uses: 'valid' after its swap, 'same' from in1 and in2
    shapes = (data.shape, kern.shape) if valid_swap else (pa.shape, pb.shape)
    windows = [window(mode, n, m) for n, m in zip(*shapes)]
    call = functools.partial(_memory.convolve_nd, fn_, mode="valid", method=method, corr=corr_)
    return _signal_windows(data, kern, windows, "fill", 0, call, res_dtype)


def _commute(mode, in1, in2, pa, pb, zero_fill=True) -> bool:
    """Whether ``in2`` plays the data's part (chunked, lazy) and ``in1`` the kernel's
    (computed) in a 'full' or 'same' call: when ``in2`` is the larger operand, as the
    in-memory call decides ('full'), and only then when ``in2`` is the dask one ('same',
    whose output has in1's shape); with equal sizes a numpy in1 and a dask in2 commute
    too. A non-zero boundary extension belongs to in1: then never."""
    if not zero_fill or mode not in ("full", "same"):
        return False
    if mode == "same" and not is_dask(in2):
        return False
    return pb.size > pa.size or (pb.size == pa.size and not is_dask(in1) and is_dask(in2))


def signal_2d(fn, in1, in2, mode, boundary, fillvalue):
    """:func:`fastconv.signal.convolve2d` / ``correlate2d`` with a dask operand."""

    _check_inputs(fn, in1, in2)
    corr = fn == "correlate2d"
    pa, pb, swapped, bnd, res_dtype, fill = check_2d(fn, _meta(in1), _meta(in2), mode, boundary,
                                              fillvalue)
    if pa.size == 0 or pb.size == 0:
        return _eager(functools.partial(_memory.convolve_2d, fn, corr=corr), in1, in2,
                      mode=mode, boundary=boundary, fillvalue=fillvalue)
    # windows of the full output, from the shapes the in-memory call uses (after its swap)
    windows = [window(mode, n, m, corr2d=corr) for n, m in zip(pa.shape, pb.shape)]
    fn_, corr_ = fn, corr
    if swapped:
        data, kern = _big(in2), _small(in1)
    elif _commute(mode, in1, in2, pa, pb, zero_fill=bnd == "fill" and fill == 0):
        # zero fill: convolution commutes, correlate2d(a, b) = convolve2d(rev(conj(b)), a)
        data, kern, fn_, corr_ = _big(in2), _small(in1), "convolve2d", False
        if corr:
            data = _flip(data.conj() if data.dtype.kind == "c" else data)
    else:
        data, kern = _big(in1), _small(in2)
    if bnd == "fill" and data.dtype != res_dtype:
        data = data.astype(res_dtype)        # the fill value is converted to the result dtype
    call = functools.partial(_memory.convolve_2d, fn_, mode="valid", boundary="fill",
                             fillvalue=0, corr=corr_)
    out = _signal_windows(data, kern, windows, bnd, fill, call, res_dtype)
    # SciPy: a swapped 'valid' correlate2d is the swapped correlation reversed
    return out[::-1, ::-1] if corr and swapped else out


def signal_freq(fn, in1, in2, mode, axes):
    """:func:`fastconv.signal.fftconvolve` / ``oaconvolve`` with a dask operand."""
    import dask.array as da

    _check_inputs(fn, in1, in2)
    pa, pb = _meta(in1), _meta(in2)
    kind, ax, swap = check_freq(pa, pb, mode, axes)
    if kind == "scalar":
        return da.asarray(in1) * da.asarray(in2)
    if kind == "empty":
        return da.from_array(np.array([]))
    if not ax:                    # no convolution left: the broadcast product
        out = da.asarray(in1) * da.asarray(in2)
        if mode == "same":
            shape = (pb if swap else pa).shape
            out = out[tuple(slice((n - s) // 2, (n - s) // 2 + s)
                            for n, s in zip(out.shape, shape))]
        return out
    commuted = not swap and _commute(mode, in1, in2, pa, pb)
    if swap or commuted:
        data, kern = _big(in2), _small(in1)          # convolution commutes
    else:
        data, kern = _big(in1), _small(in2)
    # windows of the full output, from the shapes the in-memory call uses ('same': in1's)
    a_shape, b_shape = (data.shape, kern.shape) if swap else (pa.shape, pb.shape)
    windows, sliced = [], []
    for i in range(data.ndim):
        n, m = data.shape[i], kern.shape[i]
        if i in ax:
            windows.append(window(mode, a_shape[i], b_shape[i]))
            continue
        windows.append(None)
        if m == 1 or n == m:
            if m > 1:
                sliced.append(i)          # one kernel per position: sliced per block
            elif n > 1 and mode == "same" and commuted:    # in1's length 1: the centre
                c = (n - 1) // 2
                data = data[(slice(None),) * i + (slice(c, c + 1),)]
        elif mode == "same" and not commuted:   # n == 1 < m: the centre of the product
            c = (m - 1) // 2
            kern = kern[(slice(None),) * i + (slice(c, c + 1),)]
        else:                             # n == 1 < m: the whole length-m product
            data = da.broadcast_to(data, data.shape[:i] + (m,) + data.shape[i + 1:],
                                   chunks=data.chunks[:i] + ((m,),) + data.chunks[i + 1:])
            sliced.append(i)
    call = functools.partial(_memory.freq_convolve, mode="valid", axes=list(ax),
                             method="fft" if fn == "fftconvolve" else "oa")
    return _signal_windows(data, kern, windows, "fill", 0, call,
                           fft_dtype(pa.dtype, pb.dtype), sliced)


def _check_inputs(fn, in1, in2):
    for name, a in (("in1", in1), ("in2", in2)):
        if is_dask(a):
            check_known(fn, name, a)


def operands_for_choice(in1, in2, measure):
    """:func:`fastconv.signal.choose_conv_method`'s operands: dask arrays stay lazy (the
    choice reads shapes, dtypes and, for integers, a max-magnitude reduction); with
    ``measure=True`` both are computed, since timing needs real calls."""
    _check_inputs("choose_conv_method", in1, in2)
    if measure:
        return _small(in1), _small(in2)
    return tuple(a if is_dask(a) else np.asarray(a) for a in (in1, in2))
