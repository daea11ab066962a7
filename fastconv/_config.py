"""Defaults and environment switches, in one place."""
import os
import sys
import threading
from pathlib import Path

import numba
import platformdirs
import threadpoolctl
from numba.core import config as numba_config
from numba.np.ufunc import parallel as numba_parallel

#: time candidates on first use of a shape (``fastconv.set_autotune`` / FASTCONV_AUTOTUNE=1)
AUTOTUNE = os.environ.get("FASTCONV_AUTOTUNE", "0").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """``$FASTCONV_CACHE_DIR``, else the user cache dir of this platform
    (``platformdirs.user_cache_dir("fastconv")``: ``$XDG_CACHE_HOME/fastconv`` or
    ``~/.cache/fastconv`` on Linux, ``~/Library/Caches/fastconv`` on macOS,
    ``%LOCALAPPDATA%\\fastconv\\Cache`` on Windows)."""
    env = os.environ.get("FASTCONV_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("fastconv", appauthor=False))


def data_dir():
    """``$FASTCONV_DATA_DIR`` or None."""
    env = os.environ.get("FASTCONV_DATA_DIR")
    return Path(env).expanduser() if env else None


# --- numba's worker threads ------------------------------------------------------------
# Why this is here (measured on 2 cores, MNIST training, see README "Threads"):
# numba's 'omp' layer calls GOMP_parallel through the dynamic linker's global scope
# first, so when PyTorch was imported earlier (it loads its own libgomp with
# RTLD_GLOBAL) numba's workers ran in torch's OpenMP runtime, whose wait policy was read
# from the environment when torch was imported: its workers spun ~3 ms after every
# region and fought numpy's BLAS threads (6 -> 20-28 ms/step). So fastconv loads numba's
# OpenMP pool itself, right before numba starts its threads: bound to its own libgomp
# (RTLD_DEEPBIND on Linux), which reads a short spin while it loads (GOMP_SPINCOUNT,
# unless the user set a policy). The process environment is restored at once, so OpenMP
# libraries loaded by others keep their settings. Not at import: a library loaded later
# that links libgomp.so.1 (torch) would find ours by its soname and share it.
# The spin: a worker that waits passively (OMP_WAIT_POLICY=PASSIVE, what fastconv set
# before) sleeps at once and takes ~50 us to wake for the next kernel, which small
# layers pay several times per op (MNIST: 3.6 ms/step passive, 3.1 with 10000 spins,
# 2.7 with 30000); libgomp's default (300000 spins, ~7 ms here) is what fought BLAS.
# 30000 spins are ~0.7 ms on the development machine.
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
WAIT_ENV = {"GOMP_SPINCOUNT": "30000"}   # for fastconv's own runtime, unless the user set
                                         # one of _WAIT_VARS
_threads = {"note": None, "openmp_runtime": None, "wait_policy": None, "private": False}


def _openmp_libraries():
    return {lib.filepath for lib in threadpoolctl.ThreadpoolController()
            .select(user_api="openmp").lib_controllers}


def _load_openmp_pool():
    """Import numba's OpenMP pool bound to its own libgomp, loaded with fastconv's wait
    policy; records what happened in ``_threads``."""
    if "numba.np.ufunc.omppool" in sys.modules:
        _threads["note"] = "numba's OpenMP pool was loaded before fastconv was imported"
        return
    user_policy = {v: os.environ[v] for v in _WAIT_VARS if v in os.environ}
    # RTLD_DEEPBIND: the pool's calls go to the libgomp it links, not to one that another
    # library put in the global scope (not with LD_PRELOAD: sanitizers, malloc
    # replacements and DEEPBIND do not mix)
    deep = getattr(os, "RTLD_DEEPBIND", 0) if not os.environ.get("LD_PRELOAD") else 0
    before = _openmp_libraries()
    flags = sys.getdlopenflags()
    try:
        if not user_policy:
            os.environ.update(WAIT_ENV)
        sys.setdlopenflags(flags | deep)
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        _threads["note"] = "numba's OpenMP layer is not available here"
        return
    finally:
        sys.setdlopenflags(flags)
        if not user_policy:
            for var in WAIT_ENV:
                os.environ.pop(var, None)
    new = sorted(_openmp_libraries() - before)
    _threads["private"] = bool(deep)
    if new:
        _threads["openmp_runtime"] = os.path.basename(new[0])
        _threads["wait_policy"] = ", ".join(f"{k}={v}" for k, v in
                                            (user_policy or WAIT_ENV).items())
    else:
        _threads["note"] = ("numba's OpenMP runtime was loaded before fastconv: its wait "
                            "policy is what the environment said then")


def _prepare_numba_threads():
    """Choose numba's threading layer and have its OpenMP pool loaded by
    ``_load_openmp_pool`` when numba starts its threads (before the first parallel
    call). Leaves alone what the user chose: a NUMBA_THREADING_LAYER other than omp, a
    priority of their own, numba threads already started."""
    if numba_parallel._is_initialized:
        _threads["note"] = "numba's threads were started before fastconv was imported"
        return
    layer = str(numba_config.THREADING_LAYER).lower()
    if layer == "default" and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
        # tbb when installed would come first; omp is the layer fastconv is tuned on
        numba_config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    elif layer != "omp":
        _threads["note"] = f"numba threading layer {layer!r} chosen by the user"
        return
    launch = getattr(numba_parallel, "_launch_threads", None)
    if launch is None:                          # another numba: load it now instead
        _load_openmp_pool()
        return
    lock = threading.Lock()

    def launch_threads():
        # numba calls this (a module global, looked up at each call) before every
        # parallel region, compilation and thread-count query; the first call loads
        # the pool and gives numba back its own function
        with lock:
            if numba_parallel._launch_threads is launch_threads:
                if not numba_parallel._is_initialized and str(
                        numba_config.THREADING_LAYER).lower() in ("default", "omp"):
                    _load_openmp_pool()
                numba_parallel._launch_threads = launch
        return launch()

    numba_parallel._launch_threads = launch_threads


def threading_info() -> dict:
    """How fastconv's threads are set up in this process, for bug reports and
    ``show_config``-style output.

    Starts numba's threads, as a parallel call would (a library linking libgomp.so.1
    that is loaded afterwards shares fastconv's OpenMP runtime, see README "Threads").

    Keys: ``numba_threading_layer``, ``numba_threads``, ``openmp_runtime`` (the OpenMP library fastconv loaded for numba,
    None if it did not), ``openmp_wait_policy`` (what that runtime read while it loaded),
    ``openmp_private`` (its calls bound to it, whatever else is loaded), ``note`` (why
    fastconv left something as it found it, or None), ``blas`` (the BLAS libraries that
    fastconv's GEMMs use, from threadpoolctl: ``internal_api``, file name,
    ``num_threads`` now) and ``blas_limited_in_tiles`` (whether im2col can run them
    single-threaded, see ``fastconv.cpu._blas``).
    """
    from .cpu import _blas
    threads = numba.get_num_threads()            # launches numba's threads
    libs = _blas.libraries()
    return {
        "numba_threading_layer": numba.threading_layer(),
        "numba_threads": threads,
        "openmp_runtime": _threads["openmp_runtime"],
        "openmp_wait_policy": _threads["wait_policy"],
        "openmp_private": _threads["private"],
        "note": _threads["note"],
        "blas": [{"internal_api": lib.internal_api, "file": os.path.basename(lib.filepath),
                  "num_threads": lib.num_threads} for lib in libs],
        "blas_limited_in_tiles": bool(libs),
    }


_prepare_numba_threads()


# --- precision level (fastconv.set_precision / FASTCONV_PRECISION) -------------------------
#: what algorithm="auto" may choose: "highest" (direct-sum error only), "high" (default:
#: also FFT and Winograd), "medium" (anything faster with a documented error)
PRECISION = os.environ.get("FASTCONV_PRECISION", "high").strip().lower() or "high"
if PRECISION not in ("highest", "high", "medium"):
    import warnings
    warnings.warn(f"fastconv: ignoring FASTCONV_PRECISION={PRECISION!r}: precision must be one "
                  f"of ('highest', 'high', 'medium'); using 'high'", RuntimeWarning)
    PRECISION = "high"
