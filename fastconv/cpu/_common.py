"""Settings shared by the CPU kernels."""
import contextlib
import threading

import numba
import numpy as np

# fastmath without nnan/ninf: lets LLVM reassociate reductions and fuse multiply-adds
# (vectorised loops) while NaN and inf inputs still propagate as in SciPy/PyTorch.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# Unsigned indices: numba skips its negative-index wrap-around for them, which otherwise
# turns affine loads into selects and stops LLVM from vectorising inner loops.
U = numba.uint64
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH)


def n_tasks_target() -> int:
    """How many parallel tasks to aim for so that both (all) cores stay busy."""
    return 8 * max(1, numba.get_num_threads())


SERIAL_BELOW = 1 << 17   # multiply-adds: below this, waking worker threads costs more


@contextlib.contextmanager
def serial_if_small(work: int):
    """Run a parallel kernel on the calling thread alone when the problem is tiny.
    (numba's thread count is per calling thread, so concurrent callers are unaffected.)"""
    if work >= SERIAL_BELOW:
        yield
        return
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(n)


WORKSPACE_CAP_BYTES = 64 << 20   # largest scratch buffer kept between calls, per thread
_tls = threading.local()


def workspace(key: str, shape, dtype) -> np.ndarray:
    """An uninitialised scratch array that this thread reuses from call to call.

    Fresh large allocations are returned to the OS when freed, so every call would
    page-fault its scratch memory in again (about as slow as the copy that fills it).
    Each (thread, key) keeps one buffer of at most WORKSPACE_CAP_BYTES; callers must not
    hold the array across calls that use the same key."""
    dtype = np.dtype(dtype)
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * dtype.itemsize
    if nbytes > WORKSPACE_CAP_BYTES:
        return np.empty(shape, dtype=dtype)
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get(key)
    if buf is None or buf.nbytes < nbytes:
        buf = bufs[key] = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)
