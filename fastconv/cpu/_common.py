"""Settings shared by the CPU kernels."""
import contextlib

import numba

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
