"""Dask arrays in, lazy Dask arrays out (SPEC section 7).

One engine serves ``conv1d/2d/3d`` and every :mod:`fastconv.signal` function: the input
is padded once, lazily, exactly as the in-memory call pads it (``_pad.source_index``:
zeros or a fill value, reflect, replicate, circular, symmetric -- for pads of any size),
then each output block is the in-memory call on the input region it needs. Along a
windowed axis with stride ``s`` and window span ``e`` (dilated kernel length), output
samples ``[o0, o1)`` read padded samples ``[o0 * s, (o1 - 1) * s + e)``: the block's own
``(o1 - o0) * s`` samples plus a halo of ``e - s`` taken from the next block
(``dask.array.overlap.overlap`` with depth ``(0, e - s)``). Output chunks follow the
input's chunks (merged where one would be shorter than the halo); batch chunks map one
to one. Each task is a plain in-memory call (a picklable ``functools.partial`` over
small kernels), so the graph runs unchanged on threads, processes or a
``dask.distributed`` cluster, and every block computes the dtype the result declares.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._pad import source_index
from ._validate import as_array, conv_spec


# --- shared helpers -------------------------------------------------------------------
def is_dask(a) -> bool:
    return type(a).__module__.startswith("dask.") and hasattr(a, "map_blocks")


def check_known(fn: str, name: str, x) -> None:
    """Unknown chunk sizes (NaN in ``shape``, e.g. after boolean indexing) -> ValueError."""
    if any(isinstance(s, float) and math.isnan(s) for s in x.shape):
        raise ValueError(f"{fn}: {name} is a dask array with unknown chunk sizes (shape "
                         f"{x.shape}, e.g. after boolean indexing); call "
                         f"{name}.compute_chunk_sizes() first")


def _splits(total: int, parts: int):
    """Split range(total) into `parts` nearly equal (start, stop) pieces."""
    parts = max(1, min(parts, total))
    edges = np.linspace(0, total, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _out_chunks(out: int, stride: int, halo: int, prefer) -> tuple:
    """Output chunks of a windowed axis: ``prefer`` (the input's chunks) where the output
    has the input's length and every chunk covers the halo, else as many nearly equal
    pieces as the input has chunks, each at least the halo long (padded)."""
    need = -(-halo // stride) if halo else 1      # outputs per chunk to span the halo
    prefer = tuple(int(c) for c in prefer)
    if stride == 1 and sum(prefer) == out and min(prefer) >= need:
        return prefer
    parts = max(1, min(len(prefer), out // need))
    return tuple(b - a for a, b in _splits(out, parts))


def _take(block, idx, axis):
    return np.take(block, idx, axis=axis)


def _runs(idx):
    """``idx`` cut into runs ``(start, stop, step)`` of step +1, -1 or 0."""
    runs, i = [], 0
    while i < len(idx):
        step = idx[i + 1] - idx[i] if i + 1 < len(idx) else 1
        if step not in (-1, 0, 1):
            step = 1
        j = i + 1
        while j < len(idx) and idx[j] - idx[j - 1] == step:
            j += 1
        runs.append((i, j, step))
        i = j
    return runs


def _gather(x, axis: int, idx):
    """``numpy.take(x, idx, axis)`` for a dask array, as slices of ``x``: ``idx`` is cut
    into runs of step +1, -1 or 0 (a padding index map has a few of them). A map with
    many runs (a periodic pad longer than the axis) would make a slice each: then the
    axis becomes one chunk and each block is one ``numpy.take``."""
    import dask.array as da

    idx = [int(i) for i in idx]
    runs = _runs(idx)
    if len(runs) > max(4, 4 * x.numblocks[axis]):
        x = x.rechunk({axis: -1})
        chunks = x.chunks[:axis] + ((len(idx),),) + x.chunks[axis + 1:]
        take = functools.partial(_take, idx=np.asarray(idx, dtype=np.intp), axis=axis)
        return x.map_blocks(take, chunks=chunks, dtype=x.dtype)
    lead = (slice(None),) * axis
    pieces = []
    for i, j, step in runs:
        a, b = idx[i], idx[j - 1]
        if step == 1:
            pieces.append(x[lead + (slice(a, b + 1),)])
        elif step == -1:
            pieces.append(x[lead + (slice(a, b - 1 if b > 0 else None, -1),)])
        else:
            pieces.append(da.repeat(x[lead + (slice(a, a + 1),)], j - i, axis=axis))
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=axis)


def pad(x, pads: dict, mode: str, fill=0):
    """Lazily pad dask array ``x``: ``pads`` maps axis -> (before, after); ``mode`` is a
    ``fastconv._pad`` mode (``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'``,
    ``'symmetric'``) or ``'fill'`` (constant ``fill``)."""
    import dask.array as da

    if not any(b or a for b, a in pads.values()):
        return x
    if mode in ("zeros", "fill"):
        width = [tuple(pads.get(i, (0, 0))) for i in range(x.ndim)]
        value = np.asarray(fill if mode == "fill" else 0).astype(x.dtype)[()]
        return da.pad(x, width, mode="constant", constant_values=value)
    for axis, (b, a) in sorted(pads.items()):
        if b or a:
            x = _gather(x, axis, source_index(x.shape[axis], b, a, mode))
    return x


def _apply(block, func, dtype):
    return np.asarray(func(block)).astype(dtype, copy=False)


def _apply_located(block, func, dtype, block_info=None):
    return np.asarray(func(block, block_info[0]["array-location"])).astype(dtype, copy=False)


def windowed(x, layout, func, dtype, located=False):
    """Map ``func`` (numpy block -> numpy block) over the padded dask array ``x``.

    ``layout[i]`` says what axis i is: ``None``: output chunks = input chunks (blocks map
    one to one); ``("whole", n)``: one input chunk -> one output chunk of length n;
    ``("window", out, stride, span, prefer)``: ``out`` outputs, output j reading padded
    samples ``[j * stride, j * stride + span)``; output chunks from ``prefer`` (the
    unpadded input's chunks). Every block's result is cast to ``dtype``. With ``located``,
    ``func(block, location)`` also gets the block's ``(start, stop)`` per axis of ``x``."""
    import dask.array as da

    chunks, out_chunks, depth = [], [], {}
    for i, spec in enumerate(layout):
        if spec is None:                  # (empty chunks dropped: blocks are never empty)
            c = tuple(c for c in x.chunks[i] if c) or (0,)
            chunks.append(c)
            out_chunks.append(c)
        elif spec[0] == "whole":
            chunks.append((x.shape[i],))
            out_chunks.append((int(spec[1]),))
        else:
            _, out, stride, span, prefer = spec
            halo = max(span - stride, 0)
            oc = _out_chunks(out, stride, halo, prefer)
            last = x.shape[i] - stride * (out - oc[-1])
            chunks.append(tuple(o * stride for o in oc[:-1]) + (last,))
            out_chunks.append(oc)
            if halo and len(oc) > 1:
                depth[i] = (0, halo)
    x = x.rechunk(tuple(chunks))
    if depth:
        x = da.overlap.overlap(x, depth={i: depth.get(i, (0, 0)) for i in range(x.ndim)},
                               boundary="none", allow_rechunk=False)
    run = functools.partial(_apply_located if located else _apply, func=func,
                            dtype=np.dtype(dtype))
    return x.map_blocks(run, chunks=tuple(out_chunks), dtype=dtype,
                        meta=np.empty((0,) * x.ndim, dtype=dtype))


def _small(a):
    """The small operand (kernel) as an ndarray: computed if it is a dask array."""
    return np.asarray(a.compute()) if is_dask(a) else np.asarray(a)


def _big(a):
    """The large operand as a dask array."""
    import dask.array as da

    return a if is_dask(a) else da.from_array(np.asarray(a))


def _meta(a):
    """Shape and dtype stand-in for validation: no data is read or computed."""
    if is_dask(a):
        from .dispatch import _proxy
        return _proxy(a.shape, a.dtype)
    return np.asarray(a)


def _eager(func, in1, in2, **kw):
    """Degenerate inputs (empty, object dtype): the in-memory call, wrapped."""
    import dask.array as da

    return da.from_array(np.asarray(func(_small(in1), _small(in2), **kw)))


# --- conv1d / conv2d / conv3d ---------------------------------------------------------
def conv_dask(nd, fn, input, weight, bias, stride, padding, dilation, groups, padding_mode,
              algorithm):
    import dask.array as da

    from ._conv import convnd
    from .dispatch import _proxy

    check_known(fn, "input", input)
    w = as_array(_small(weight) if is_dask(weight) else weight, "weight", fn)
    b = None if bias is None else as_array(_small(bias) if is_dask(bias) else bias, "bias", fn)
    spec, _, _, _ = conv_spec(fn, nd, _proxy(input.shape, input.dtype), w, b, stride, padding,
                              dilation, groups, padding_mode)
    if spec.N == 0:
        return da.zeros(spec.out_shape, dtype=spec.out_dtype)
    x = input if spec.batched else input[None]
    prefer = x.chunks
    x = pad(x, {2 + i: tuple(p) for i, p in enumerate(spec.padding)}, padding_mode)
    layout = [None, ("whole", spec.C_out)] + [
        ("window", o, s, e, prefer[2 + i])
        for i, (o, s, e) in enumerate(zip(spec.out_size, spec.stride, spec.effective_kernel))]
    # the caller's weight and bias dtypes (not the compute dtype): each block then follows
    # the in-memory dtype rules (float16 in -> float16 out)
    run = functools.partial(convnd, nd, fn, weight=w, bias=b, stride=spec.stride, padding=0,
                            dilation=spec.dilation, groups=spec.groups, padding_mode="zeros",
                            algorithm=algorithm, device="cpu", out=None)
    out = windowed(x, layout, run, spec.out_dtype)
    return out if spec.batched else out[0]


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

    from . import signal as sg
    from ._signal_core import window
    from ._signal_checks import MSG, check_method, check_mode, check_same_ndim, swap_needed

    _check_inputs(fn, in1, in2)
    corr = fn == "correlate"
    pa, pb = _meta(in1), _meta(in2)
    if pa.ndim == pb.ndim == 0:
        b = da.asarray(in2)
        return da.asarray(in1) * (da.conj(b) if corr else b)
    check_same_ndim(pa, pb, *(("in1", "in2") if corr else ("volume", "kernel")))
    check_mode(mode)
    check_method(method)
    if pa.dtype.kind not in "biufc" or pb.dtype.kind not in "biufc":
        return _eager(getattr(sg, fn), in1, in2, mode=mode, method=method)
    rt = np.result_type(pa.dtype, pb.dtype)
    if pa.size == 0 or pb.size == 0:
        if mode == "same" and pa.size == 0 and pb.size > 0:
            return da.empty(pa.shape, dtype=rt)
        raise ValueError(MSG["empty"].format(fn=fn, mode=mode, s1=pa.shape, s2=pb.shape))
    valid_swap = swap_needed(mode, pa.shape, pb.shape)
    if valid_swap or _commute(mode, in1, in2, pa, pb):
        # convolution commutes: correlate(a, b) = convolve(reverse(conj(b)), a)
        data = _big(in2)
        if corr:
            data = _flip(data.conj() if data.dtype.kind == "c" else data)
        data, kern, call = data, _small(in1), sg.convolve
    else:
        data, kern, call = _big(in1), _small(in2), getattr(sg, fn)
    # windows of the full output (the same whichever operand is ``data``), from the shapes
    # the in-memory call uses: 'valid' after its swap, 'same' from in1 and in2
    shapes = (data.shape, kern.shape) if valid_swap else (pa.shape, pb.shape)
    windows = [window(mode, n, m) for n, m in zip(*shapes)]
    call = functools.partial(call, mode="valid", method=method)
    return _signal_windows(data, kern, windows, "fill", 0, call, rt)


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
    from . import signal as sg
    from ._signal_core import window
    from ._signal_checks import check_2d

    _check_inputs(fn, in1, in2)
    corr = fn == "correlate2d"
    pa, pb, swapped, bnd, rt, fill = check_2d(fn, _meta(in1), _meta(in2), mode, boundary,
                                              fillvalue)
    if pa.size == 0 or pb.size == 0:
        return _eager(getattr(sg, fn), in1, in2, mode=mode, boundary=boundary,
                      fillvalue=fillvalue)
    # windows of the full output, from the shapes the in-memory call uses (after its swap)
    windows = [window(mode, n, m, corr2d=corr) for n, m in zip(pa.shape, pb.shape)]
    call = getattr(sg, fn)
    if swapped:
        data, kern = _big(in2), _small(in1)
    elif _commute(mode, in1, in2, pa, pb, zero_fill=bnd == "fill" and fill == 0):
        # zero fill: convolution commutes, correlate2d(a, b) = convolve2d(rev(conj(b)), a)
        data, kern, call = _big(in2), _small(in1), sg.convolve2d
        if corr:
            data = _flip(data.conj() if data.dtype.kind == "c" else data)
    else:
        data, kern = _big(in1), _small(in2)
    if bnd == "fill" and data.dtype != rt:
        data = data.astype(rt)        # the fill value is converted to the result dtype
    call = functools.partial(call, mode="valid")
    out = _signal_windows(data, kern, windows, bnd, fill, call, rt)
    # SciPy: a swapped 'valid' correlate2d is the swapped correlation reversed
    return out[::-1, ::-1] if corr and swapped else out


def signal_freq(fn, in1, in2, mode, axes):
    """:func:`fastconv.signal.fftconvolve` / ``oaconvolve`` with a dask operand."""
    import dask.array as da

    from . import signal as sg
    from ._signal_core import window
    from ._signal_checks import (MSG, check_mode, check_same_ndim, fft_dtype, normalize_axes,
                                 swap_needed)

    _check_inputs(fn, in1, in2)
    pa, pb = _meta(in1), _meta(in2)
    if pa.ndim == pb.ndim == 0:
        return da.asarray(in1) * da.asarray(in2)
    check_same_ndim(pa, pb)
    if pa.size == 0 or pb.size == 0:
        return da.from_array(np.array([]))
    check_mode(mode, freq=True)
    ax = [i for i in normalize_axes(axes, pa.ndim) if pa.shape[i] != 1 and pb.shape[i] != 1]
    for i in range(pa.ndim):
        if i not in ax and not (pa.shape[i] == pb.shape[i] or 1 in (pa.shape[i], pb.shape[i])):
            raise ValueError(MSG["incompatible"].format(s1=pa.shape, s2=pb.shape))
    swap = swap_needed(mode, pa.shape, pb.shape, ax)
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
    call = functools.partial(getattr(sg, fn), mode="valid", axes=list(ax))
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
