"""Result arrays whose memory is recycled once the caller drops them.

A large array returned to the caller is freed when the caller drops it, and glibc gives
such memory back to the operating system (``munmap``, or trimming the heap) -- as it
does with any other library's large temporaries; the next call's result then
page-faults every 4 KiB page in again, which on the development machine costs as much
as a 3x3 convolution of the same image (about 1 ms for 8 MB). :func:`empty` hands out
arrays backed by the buffers of a small pool instead: each result's base is a
:class:`_Lease` that puts its buffer back into the pool when the last array or view
using it is gone, so an image-after-image loop writes into memory that stays mapped.

At most ``POOL_BYTES`` of dropped results are kept (the largest let go first); arrays
under ``MIN_BYTES`` come from ``numpy.empty`` (malloc reuses small blocks by itself).
The arrays are ordinary, writeable, C-contiguous ndarrays aligned to 64 bytes; only
``arr.base`` shows where the memory came from.
"""
from __future__ import annotations

import threading

import numpy as np

MIN_BYTES = 1 << 20       # smaller results: numpy.empty
POOL_BYTES = 64 << 20     # most memory kept in dropped buffers
ALIGN = 64

_lock = threading.RLock()   # re-entrant: a garbage collection inside a locked block
                           # may finalize a lease, which gives its buffer back
_free: list = []          # raw uint8 buffers, ready for reuse
_free_bytes = 0
_busy = False             # inside a block that indexes _free (on the thread holding _lock)


class _Lease:
    """The base of a pooled result: exposes the buffer to numpy and returns it to the
    pool when garbage-collected (when no array refers to it any more)."""

    __slots__ = ("buf", "__array_interface__", "__weakref__")

    def __init__(self, buf, shape, dtype):
        self.buf = buf
        self.__array_interface__ = {"shape": tuple(shape), "typestr": dtype.str,
                                    "descr": dtype.descr, "data": (buf.ctypes.data, False),
                                    "strides": None, "version": 3}

    def __del__(self):
        buf, self.buf = self.buf, None
        if buf is not None and _give_back is not None:      # None at interpreter exit
            _give_back(buf)


def _give_back(buf):
    global _free_bytes, _busy
    with _lock:
        _free.append(buf)
        _free_bytes += buf.nbytes
        if _busy:            # a collection finalized a lease inside a block below: only
            return           # append; the next give-back trims
        _busy = True
        try:
            while _free_bytes > POOL_BYTES:       # let the largest buffers go
                big = max(range(len(_free)), key=lambda i: _free[i].nbytes)
                _free_bytes -= _free.pop(big).nbytes
        finally:
            _busy = False


def _take(nbytes):
    """The smallest free buffer of nbytes .. 2 * nbytes bytes (of those, the one given
    back last: the likeliest still in cache), or a new one."""
    global _free_bytes, _busy
    with _lock:
        _busy = True
        try:
            fit = [i for i, b in enumerate(_free) if nbytes <= b.nbytes <= 2 * nbytes]
            if fit:
                buf = _free.pop(min(reversed(fit), key=lambda i: _free[i].nbytes))
                _free_bytes -= buf.nbytes
                return buf
        finally:
            _busy = False
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    skip = (-raw.ctypes.data) % ALIGN
    return raw[skip:skip + nbytes]


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array, from the pool when it is large."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= int(s)
    if nbytes < MIN_BYTES or dtype.hasobject:
        return np.empty(shape, dtype)
    shape = tuple(int(s) for s in shape)
    return np.asarray(_Lease(_take(nbytes), shape, dtype))


def clear():
    """Let every pooled buffer go."""
    global _free_bytes
    with _lock:
        _free.clear()
        _free_bytes = 0
