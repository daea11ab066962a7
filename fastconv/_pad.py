"""Explicit padding of 5-D arrays, and its adjoint (for gradients).

Every padding mode is a gather: padded position p on an axis reads source index
``src[p]`` (``-1`` for zero fill). The adjoint scatter-adds the gradient back through
the same index map, so reflect/replicate/circular gradients fold back correctly.
"""
import numpy as np

from .cpu.direct import embed


def source_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Index into an axis of length n for each of the n + before + after padded positions."""
    p = np.arange(-before, n + after)
    if mode == "zeros":
        return np.where((p >= 0) & (p < n), p, -1)
    if mode == "replicate":
        return np.clip(p, 0, n - 1)
    if mode == "circular":
        return np.mod(p, n)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(p)
        period = 2 * (n - 1)
        q = np.mod(p, period)
        return np.where(q < n, q, period - q)
    if mode == "symmetric":            # scipy's 'symm' boundary: edge sample repeated
        period = 2 * n
        q = np.mod(p, period)
        return np.where(q < n, q, period - 1 - q)
    raise ValueError(mode)


def pad(x, pads, mode, dtype=None, empty=np.empty):
    """Return a C-contiguous padded copy (or x itself when nothing needs to change).

    x: (N, C, *spatial); pads: ((before, after), ...) per spatial axis. ``empty(shape,
    dtype)`` allocates the result of a zero padding of float arrays (e.g. a workspace
    for a padded input used only during the call)."""
    dtype = x.dtype if dtype is None else dtype
    if all(b == 0 and a == 0 for b, a in pads):
        return np.ascontiguousarray(x, dtype=dtype)
    if mode == "zeros":
        shape = x.shape[:2] + tuple(n + b + a for n, (b, a) in zip(x.shape[2:], pads))
        if x.dtype == dtype and x.dtype in (np.float32, np.float64):
            # one parallel pass that writes every element once (np.zeros then a copy
            # would write the whole array twice, faulting its pages in on one thread)
            x = np.ascontiguousarray(x)
            xp = empty(shape, dtype)
            lift = (1,) * (5 - x.ndim)
            embed(xp.reshape(x.shape[:2] + lift + shape[2:]),
                  x.reshape(x.shape[:2] + lift + x.shape[2:]),
                  *((0,) * (5 - x.ndim) + tuple(b for b, _ in pads)))
            return xp
        xp = np.zeros(shape, dtype=dtype)
        inner = tuple(slice(b, b + n) for n, (b, a) in zip(x.shape[2:], pads))
        xp[(slice(None), slice(None)) + inner] = x
        return xp
    out = x
    for axis, (b, a) in enumerate(pads, start=2):
        if b or a:
            out = np.take(out, source_index(out.shape[axis], b, a, mode), axis=axis)
    return np.ascontiguousarray(out, dtype=dtype)


def pad_adjoint(gp, in_size, pads, mode):
    """Fold a gradient with respect to the padded array back onto the unpadded array."""
    if mode == "zeros":
        inner = tuple(slice(b, b + n) for n, (b, a) in zip(in_size, pads))
        return np.ascontiguousarray(gp[(slice(None), slice(None)) + inner])
    g = gp
    for axis in range(len(pads) - 1, -1, -1):
        b, a = pads[axis]
        if not (b or a):
            continue
        n = in_size[axis]
        src = source_index(n, b, a, mode)
        moved = np.moveaxis(g, axis + 2, 0)
        acc = np.zeros((n,) + moved.shape[1:], dtype=g.dtype)
        np.add.at(acc, src, moved)
        g = np.moveaxis(acc, 0, axis + 2)
    return np.ascontiguousarray(g)
