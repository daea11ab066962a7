"""Run NumPy's BLAS on one thread for a while, so that fastconv's own threads can each
call it on their own image.

Why: OpenBLAS's worker threads keep spinning for about 0.1 s after every GEMM. When a
numba kernel (the im2col gather) runs right after a multithreaded GEMM, it shares the
cores with those spinning threads and runs up to twice as slowly. Giving each of our
threads whole images (gather, then a single-threaded GEMM) keeps every core busy with
useful work and leaves no spinning threads behind.

The BLAS libraries are found and set through threadpoolctl (OpenBLAS, MKL, BLIS,
FlexiBLAS), once per process: NumPy's own copy when it can be told apart (wheels ship it
in ``numpy.libs`` or inside the package; SciPy's and torch's copies serve other
functions and are left alone), else every BLAS but those. Libraries whose thread count
is per calling thread (OpenBLAS built on OpenMP) cannot be set for our worker threads,
and Accelerate has no thread-count API: then ``single_threaded()`` yields False and
callers keep their multithreaded path.
"""
import collections
import contextlib
import os
import threading

import numpy as np
import threadpoolctl

_Api = collections.namedtuple("_Api", "set get libs")

_lock = threading.Lock()
_state = {"api": None, "users": 0, "saved": None}
# threadpoolctl (>= 3.8) lets one thread at a time change a process-wide OpenBLAS: the
# first to set it, until it leaves its threadpool_limits block. Our first user and our
# last may be different threads, so each change hands that role back at once.
_OWNERSHIP = getattr(threadpoolctl, "CONTROLLING_THREAD_OWNERSHIP", None)


def _release_control():
    if _OWNERSHIP is not None and _OWNERSHIP.count == 0:       # not in a block of its own
        threadpoolctl.OpenBLASController.clear_controlling_thread()


def _numpy_blas():
    """threadpoolctl's controllers of the BLAS that NumPy's matmul calls."""
    libs = [lib for lib in threadpoolctl.ThreadpoolController()
            .select(user_api="blas").lib_controllers
            if getattr(lib, "threading_layer", None) != "openmp"]
    numpy_pkg = os.path.dirname(os.path.realpath(np.__file__))
    homes = (numpy_pkg + os.sep, os.path.join(os.path.dirname(numpy_pkg), "numpy.libs") + os.sep)
    ours = [lib for lib in libs if os.path.realpath(lib.filepath).startswith(homes)]
    return ours or [lib for lib in libs if "scipy" not in lib.filepath
                    and "torch" not in lib.filepath]


def _find_api():
    """_Api(set(n), get(), libs) for NumPy's BLAS, or () when none can be set."""
    libs = _numpy_blas()
    if not libs:
        return ()

    def set_threads(n):
        for lib, k in zip(libs, n if isinstance(n, list) else [n] * len(libs)):
            lib.set_num_threads(k)
        _release_control()

    return _Api(set_threads, lambda: libs[0].num_threads, libs)


def _api():
    if _state["api"] is None:
        _state["api"] = _find_api()
    return _state["api"]


def libraries():
    """The BLAS libraries (threadpoolctl controllers) that ``single_threaded`` sets."""
    api = _api()
    return list(api.libs) if api else []


def _after_fork_in_child():
    # A fork taken while another thread was inside single_threaded(): no thread of the
    # child will leave it, so restore BLAS's thread count here (and a fresh lock, in
    # case the parent's was held).
    global _lock
    _lock = threading.Lock()
    if _state["users"] and _state["api"]:
        _state["api"].set(_state["saved"])
    _state["users"] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _enter():
    api = _api()
    if not api:
        return False
    if _state["users"] == 0:
        saved = [lib.num_threads for lib in api.libs]
        api.set(1)
        if any(lib.num_threads != 1 for lib in api.libs):
            # another thread holds threadpoolctl's control of it (in its own
            # threadpool_limits block): leave BLAS as it is
            api.set(saved)
            return False
        _state["saved"] = saved
    _state["users"] += 1
    return True


@contextlib.contextmanager
def single_threaded():
    """Within the block NumPy's BLAS runs each call on the calling thread; yields whether
    that could be arranged. Nested and concurrent users share one switch: the thread
    count is restored when the last of them leaves."""
    with _lock:
        ok = _enter()
    try:
        yield ok
    finally:
        if ok:
            with _lock:
                _state["users"] -= 1
                if _state["users"] == 0:
                    _state["api"].set(_state["saved"])
