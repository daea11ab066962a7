"""Settings shared by the CPU kernels."""
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
