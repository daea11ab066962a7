"""Run NumPy's BLAS on one thread for a while, so that fastconv's own threads can each
call it on their own image.

Why: OpenBLAS's worker threads keep spinning for about 0.1 s after every GEMM. When a
numba kernel (the im2col gather) runs right after a multithreaded GEMM, it shares the
cores with those spinning threads and runs up to twice as slowly. Giving each of our
threads whole images (gather, then a single-threaded GEMM) keeps every core busy with
useful work and leaves no spinning threads behind.

Only OpenBLAS (what NumPy's wheels ship, and most Linux distributions) is recognised,
through its ``openblas_set_num_threads`` entry point found in the libraries this process
has loaded. Anything else (MKL, Accelerate, an unknown build): ``single_threaded()``
yields False and callers keep their multithreaded path.
"""
import contextlib
import ctypes
import os
import threading

import numpy as np

_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")

_lock = threading.Lock()
_state = {"api": None, "users": 0, "saved": 0}


def _loaded_libraries():
    try:
        with open("/proc/self/maps") as f:
            fields = (line.split(None, 5) for line in f)
            paths = {parts[5].strip() for parts in fields if len(parts) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if ".so" in p and "blas" in os.path.basename(p).lower())


def _find_api():
    """(set_num_threads, get_num_threads) of NumPy's OpenBLAS, or () when there is none."""
    libs = _loaded_libraries()
    numpy_dir = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    # NumPy's own copy first (wheels put it in numpy.libs next to the package); SciPy's
    # and torch's copies serve other functions and are left alone when NumPy's is found
    ours = [p for p in libs if p.startswith(os.path.join(numpy_dir, "numpy.libs"))]
    for path in ours or [p for p in libs if "scipy" not in p and "torch" not in p]:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SYMBOLS:
            setter = getattr(lib, name, None)
            getter = getattr(lib, name.replace("set_num", "get_num"), None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return ()


def _api():
    if _state["api"] is None:
        _state["api"] = _find_api()
    return _state["api"]


def _after_fork_in_child():
    # A fork taken while another thread was inside single_threaded(): no thread of the
    # child will leave it, so restore BLAS's thread count here (and a fresh lock, in
    # case the parent's was held).
    global _lock
    _lock = threading.Lock()
    if _state["users"] and _state["api"]:
        _state["api"][0](_state["saved"])
    _state["users"] = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def single_threaded():
    """Within the block NumPy's BLAS runs each call on the calling thread; yields whether
    that could be arranged. Nested and concurrent users share one switch: the thread
    count is restored when the last of them leaves."""
    with _lock:
        api = _api()
        if api and _state["users"] == 0:
            _state["saved"] = api[1]()
            api[0](1)
        if api:
            _state["users"] += 1
    try:
        yield bool(api)
    finally:
        if api:
            with _lock:
                _state["users"] -= 1
                if _state["users"] == 0:
                    api[0](_state["saved"])
