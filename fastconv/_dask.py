"""Dask arrays in, lazy Dask arrays out (SPEC section 7).

The input is padded once (lazily, ``dask.array.pad``), then every output block is a
``conv`` of the input region it needs: the block's own rows plus the kernel's halo,
``(o1 - 1) * stride + (k - 1) * dilation + 1`` samples starting at ``o0 * stride``.
Batch chunks map one to one; spatial chunks get exactly the overlap the kernel needs,
for any stride, dilation and padding mode. Each task is a plain in-memory call, so the
graph runs unchanged on threads, processes or a dask.distributed cluster.
"""
from __future__ import annotations

import functools

import numpy as np

from ._validate import as_array, conv_spec

_DASK_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _splits(total: int, parts: int):
    """Split range(total) into `parts` nearly equal (start, stop) pieces."""
    parts = max(1, min(parts, total))
    edges = np.linspace(0, total, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def conv_dask(nd, fn, input, weight, bias, stride, padding, dilation, groups, padding_mode,
              algorithm):
    import dask.array as da

    from ._conv import convnd
    from .dispatch import _proxy

    w = weight.compute() if hasattr(weight, "compute") else as_array(weight, "weight", fn)
    b = None if bias is None else (bias.compute() if hasattr(bias, "compute")
                                   else as_array(bias, "bias", fn))
    spec, _, w, b = conv_spec(fn, nd, _proxy(input.shape, input.dtype), w, b, stride, padding,
                              dilation, groups, padding_mode)
    x = input if spec.batched else input[None]
    if spec.N == 0:
        return da.zeros(spec.out_shape, dtype=spec.out_dtype)
    pads = [(0, 0), (0, 0)] + [tuple(p) for p in spec.padding]
    if any(a or c for a, c in spec.padding):
        mode = _DASK_PAD[padding_mode]
        x = da.pad(x, pads, mode=mode, **({"constant_values": 0} if mode == "constant" else {}))
    x = x.rechunk({1: -1})
    run = functools.partial(convnd, nd, fn, weight=w, bias=b, stride=spec.stride, padding=0,
                            dilation=spec.dilation, groups=spec.groups, padding_mode="zeros",
                            algorithm=algorithm, device="cpu", out=None)

    batch_ranges = []
    start = 0
    for c in input.chunks[0] if spec.batched else (1,):
        batch_ranges.append((start, start + c))
        start += c
    axis_ranges = [_splits(o, len(input.chunks[input.ndim - nd + i]))
                   for i, o in enumerate(spec.out_size)]
    ek = spec.effective_kernel

    def block(bidx, ranges):
        b0, b1 = bidx
        region = [slice(b0, b1), slice(None)]
        for (o0, o1), s, e in zip(ranges, spec.stride, ek):
            region.append(slice(o0 * s, (o1 - 1) * s + e))
        piece = x[tuple(region)].rechunk(-1)
        shape = (b1 - b0, spec.C_out) + tuple(o1 - o0 for o0, o1 in ranges)
        return piece.map_blocks(run, dtype=spec.out_dtype,
                                chunks=tuple((s,) for s in shape))

    def nest(bidx, depth, chosen):
        if depth == nd:
            return block(bidx, chosen)
        return [nest(bidx, depth + 1, chosen + [r]) for r in axis_ranges[depth]]

    blocks = [[nest(br, 0, [])] for br in batch_ranges]      # channel axis: one block
    out = da.block(blocks)
    return out if spec.batched else out[0]

