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

from dataclasses import replace

from . import _pipeline
from ._arrays import is_dask_array as is_dask
from ._arrays import proxy
from ._pad import source_index
from ._validate import as_array, conv_spec


# --- shared helpers -------------------------------------------------------------------
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
        return proxy(a.shape, a.dtype)
    return np.asarray(a)


def _eager(func, in1, in2, **kw):
    """Degenerate inputs (empty, object dtype): the in-memory call, wrapped."""
    import dask.array as da

    return da.from_array(np.asarray(func(_small(in1), _small(in2), **kw)))


# --- conv1d / conv2d / conv3d ---------------------------------------------------------
def conv_dask(nd, fn, input, weight, bias, stride, padding, dilation, groups, padding_mode,
              algorithm, precision=None):
    import dask.array as da

    check_known(fn, "input", input)
    w = as_array(_small(weight) if is_dask(weight) else weight, "weight", fn)
    b = None if bias is None else as_array(_small(bias) if is_dask(bias) else bias, "bias", fn)
    spec, _, w, b = conv_spec(fn, nd, proxy(input.shape, input.dtype), w, b, stride, padding,
                              dilation, groups, padding_mode)
    if spec.N == 0:
        return da.zeros(spec.out_shape, dtype=spec.out_dtype)
    x = input if spec.batched else input[None]
    prefer = x.chunks
    x = pad(x, {2 + i: tuple(p) for i, p in enumerate(spec.padding)}, padding_mode)
    layout = [None, ("whole", spec.C_out)] + [
        ("window", o, s, e, prefer[2 + i])
        for i, (o, s, e) in enumerate(zip(spec.out_size, spec.stride, spec.effective_kernel))]
    run = functools.partial(_conv_block, spec=spec, w=np.ascontiguousarray(w),
                            b=None if b is None else np.ascontiguousarray(b), algorithm=algorithm,
                            precision=precision)
    out = windowed(x, layout, run, spec.out_dtype)
    return out if spec.batched else out[0]


def _conv_block(block, spec, w, b, algorithm, precision=None):
    """One output block: the in-memory pipeline on the block of the padded input (the
    call was validated once, for the whole array)."""
    sub = replace(spec, N=block.shape[0], in_size=tuple(block.shape[2:]),
                  padding=((0, 0),) * spec.nd, padding_mode="zeros", batched=True)
    res = _pipeline.forward(sub, block.astype(spec.dtype, copy=False), w, b, algorithm,
                            precision=precision)
    return res.reshape((sub.N, sub.C_out) + sub.out_size).astype(spec.out_dtype, copy=False)
