"""Settings shared by the CPU kernels."""
import contextlib
import functools
import math
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


def any_layout(kernel, arrays, *args):
    """``kernel(*arrays, *args)``, the ``arrays`` typed as writable arrays of any layout
    ('A'; the kernel must not write to those it is given read-only, and the caller must
    check that those it writes are writable).

    numba compiles a kernel once per combination of its arguments' types, and an array's
    type includes its layout (C-contiguous or strided) and whether it is read-only. Large
    kernels (20-30 s to compile on 2 cores) that read strides anyway are called through
    this, so that each compiles once per dtype, whatever the operands it is given (and
    reuses that compilation from numba's cache). A call costs a few microseconds more
    than the dispatcher's own: the entry point is looked up by what decides the
    arguments' numba types (for arrays: dtype, dimensions, layout flags; else the Python
    type), and the numba types are made only on a miss."""
    key = (kernel, tuple([(a.dtype, a.ndim) for a in arrays]),
           tuple([(a.dtype, a.ndim, a.flags.c_contiguous, a.flags.f_contiguous,
                   a.flags.writeable) if isinstance(a, np.ndarray) else type(a) for a in args]))
    entry = _ENTRIES.get(key)
    if entry is None:
        if not hasattr(kernel, "compile"):           # NUMBA_DISABLE_JIT: plain Python
            return kernel(*arrays, *args)
        sig = tuple(numba.typeof(a).copy(layout="A", readonly=False) for a in arrays) + tuple(
            numba.typeof(a) for a in args)
        entry = _ENTRIES[key] = kernel.compile(sig)
    return entry(*arrays, *args)


_ENTRIES = {}     # (kernel, argument descriptions) -> the compiled entry point


SERIAL_BELOW = 1 << 17   # multiply-adds: below this, waking worker threads costs more


class serial_if_small:
    """``with serial_if_small(work):`` runs a parallel kernel on the calling thread alone
    when the problem is tiny. (numba's thread count is per calling thread, so concurrent
    callers are unaffected.) A class, not a generator: its few microseconds are a
    visible part of small calls."""

    __slots__ = ("serial", "threads")

    def __init__(self, work: int):
        self.serial = work < SERIAL_BELOW

    def __enter__(self):
        if self.serial:
            self.threads = numba.get_num_threads()
            numba.set_num_threads(1)

    def __exit__(self, *exc):
        if self.serial:
            numba.set_num_threads(self.threads)


@contextlib.contextmanager
def reuse(store: dict, save: bool):
    """A layer's saved transforms: within, the kernels' layout transforms of an operand
    (see :func:`kept`) are put into ``store`` (``save``, the layer's forward) or found
    there again for the very same array object (the backward), as PyTorch saves tensors
    for the backward. The transform is of the values at the forward, the point whose
    gradient the backward computes."""
    prev = getattr(_tls, "store", None)
    _tls.store = (store, save)
    try:
        yield
    finally:
        _tls.store = prev


def kept(key: str, src, make):
    """``make(fresh)``, the transform ``key`` of array ``src``, or the one saved for this
    object under :func:`reuse` (``fresh``: whether the result must be an array of its own,
    not a workspace, because it is being saved)."""
    scope = getattr(_tls, "store", None)
    if scope is None:
        return make(False)
    store, save = scope
    hit = store.get(key)
    if hit is not None and hit[0] is src:
        return hit[1]
    if not save:
        return make(False)
    val = make(True)
    store[key] = (src, val)
    return val


WORKSPACE_CAP_BYTES = 64 << 20   # largest scratch buffer kept between calls, per thread
_tls = threading.local()


ALIGN_BYTES = 64     # workspaces start on a cache line (and on any vector's width)


def workspace(key: str, shape, dtype) -> np.ndarray:
    """An uninitialised scratch array that this thread reuses from call to call, starting
    on an ALIGN_BYTES boundary (those of at most WORKSPACE_CAP_BYTES).

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
        size = max(nbytes, 1 << 16)
        raw = np.empty(size + ALIGN_BYTES, dtype=np.uint8)
        skip = -raw.ctypes.data % ALIGN_BYTES
        buf = bufs[key] = raw[skip:skip + size]
    return buf[:nbytes].view(dtype).reshape(shape)


def pack_weight(w, groups, R, perm=None):
    """The register tiles' weight layout: wp[g, ob, t, j] = w[g*Og + R*ob + j, tap perm[t]]
    (taps flat over (C/g, k...); perm None: in order), zero past a group's last channel.
    Small weights (the per-call cost matters): one gather through an index cached per
    shape; large ones: built directly (no index kept alive)."""
    O = w.shape[0]
    T = w.size // O if O else 0
    if w.size > PACK_INDEX_MAX:
        return _tile_layout(w.reshape(O, T), groups, R, perm, 0)
    src = _pack_index(groups, O, T, R, None if perm is None else perm.tobytes())
    wz = np.empty(w.size + 1, dtype=w.dtype)     # the weights, then the padding's zero
    wz[:-1] = w.reshape(-1)
    wz[-1] = 0
    return wz[src]


PACK_INDEX_MAX = 1 << 16     # weight elements up to which pack_weight caches an index


def _tile_layout(w2, groups, R, perm, fill):
    """pack_weight's layout of ``w2`` (O, T), ``fill`` past a group's last channel."""
    O, T = w2.shape
    Og = O // groups
    nob = -(-Og // R)
    taps = w2.reshape(groups, Og, T)
    if perm is not None:
        taps = taps[:, :, perm]
    wp = np.full((groups, nob * R, taps.shape[2]), fill, dtype=w2.dtype)
    wp[:, :Og] = taps
    return np.ascontiguousarray(wp.reshape(groups, nob, R, -1).transpose(0, 1, 3, 2))


@functools.lru_cache(maxsize=256)
def _pack_index(groups, O, T, R, perm):
    # the layout of the weights' flat indices, O*T (wz's zero) past the channels
    src = _tile_layout(np.arange(O * T, dtype=np.int32).reshape(O, T), groups, R,
                       None if perm is None else np.frombuffer(perm, dtype=np.int64), O * T)
    src.flags.writeable = False
    return src
