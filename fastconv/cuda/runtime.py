"""numba.cuda, imported lazily: device checks, device arrays, views and workspaces.

Everything that touches numba.cuda's own objects (device arrays, the simulator's fake
arrays, strided views) lives here, so the kernel wrappers stay free of those details.
"""
from __future__ import annotations

import math

import numpy as np

# numba-cuda <= 0.30 registers an overload for np.row_stack when it builds its typing
# registries (on the first kernel compile); NumPy 2.5 removed that alias of np.vstack, so
# every compile fails with AttributeError. Restore the alias for numba's sake.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

_cuda = None
_available = None


def cuda():
    """The ``numba.cuda`` module, imported on first use (a clear error when missing)."""
    global _cuda
    if _cuda is None:
        try:
            from numba import cuda as mod
        except Exception as exc:   # ImportError, or a broken CUDA install
            raise RuntimeError("fastconv: the GPU backend needs numba's CUDA target "
                               f"(pip install numba-cuda); importing numba.cuda failed: {exc}") from None
        _cuda = mod
    return _cuda


def simulator() -> bool:
    """True under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return cuda().jit.__module__.startswith("numba.cuda.simulator")


def smem_align():
    """Byte alignment for shared arrays read as vectors (the simulator rejects the option)."""
    return None if simulator() else 16


def _alignment_supported() -> bool:
    import inspect
    try:
        return "alignment" in inspect.signature(cuda().shared.array).parameters
    except (TypeError, ValueError):
        return True


def kernel(fn):
    """``cuda.jit(cache=True)``; on numba-cuda versions whose shared arrays take no
    ``alignment`` the kernel is rebuilt from its source without it (scalar shared loads)."""
    mod = cuda()
    if simulator() or _alignment_supported():
        return mod.jit(cache=True)(fn)
    import inspect
    import textwrap
    src = textwrap.dedent(inspect.getsource(fn)).replace(", alignment=ALIGN", "")
    src = src[src.index("def "):]
    ns: dict = {}
    exec(compile(src, inspect.getsourcefile(fn) or "<kernel>", "exec"), fn.__globals__, ns)
    return mod.jit(ns[fn.__name__])


def require(fn: str = "fastconv"):
    """numba.cuda, or a RuntimeError saying why the GPU cannot be used."""
    global _available
    mod = cuda()
    if simulator():
        return mod
    if _available is None:
        try:
            _available = bool(mod.is_available())
        except Exception:   # driver errors surface here on some installs
            _available = False
    if not _available:
        raise RuntimeError(f"{fn}: device='cuda' needs a usable CUDA GPU, but numba.cuda found "
                           "none (numba.cuda.is_available() is False): check the NVIDIA driver "
                           "and the numba-cuda install, or run with device='cpu' (the default)")
    return mod


# --- arrays ---------------------------------------------------------------------------
def is_device(a) -> bool:
    """A GPU array: anything with ``__cuda_array_interface__``, or a simulator array."""
    return a is not None and (hasattr(a, "__cuda_array_interface__")
                              or bool(getattr(type(a), "__cuda_ndarray__", False)))


def gpu_dtype(a) -> np.dtype:
    cai = getattr(a, "__cuda_array_interface__", None)
    return np.dtype(cai["typestr"]) if cai is not None else np.dtype(a.dtype)


def as_device(a):
    """A numba device array for ``a``: zero-copy for GPU arrays, a copy for host data."""
    mod = cuda()
    if getattr(type(a), "__cuda_ndarray__", False):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return mod.as_cuda_array(a)
    return mod.to_device(np.ascontiguousarray(a))


def to_device(a, dtype=None):
    """Copy host data in (C-contiguous, cast on the host first when ``dtype`` is given)."""
    return cuda().to_device(np.ascontiguousarray(a, dtype=dtype))


def empty(shape, dtype):
    return cuda().device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def zeros(shape, dtype):
    from . import pad_kernel
    a = empty(shape, dtype)
    pad_kernel.fill(a, 0)
    return a


def contiguous(a) -> bool:
    return bool(a.is_c_contiguous())


def flat(a):
    """The 1-D view of a C-contiguous device array."""
    return a.reshape(int(np.prod(a.shape, dtype=np.int64)))


def reshape(a, shape):
    return a.reshape(tuple(int(s) for s in shape))


def strided(a, shape, strides):
    """A view of device array ``a`` (same first element) with element ``strides``."""
    itemsize = np.dtype(a.dtype).itemsize
    shape = tuple(int(s) for s in shape)
    bstrides = tuple(int(s) * itemsize for s in strides)
    if simulator():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        base = a._ary
        return FakeCUDAArray(np.lib.stride_tricks.as_strided(base, shape, bstrides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    return DeviceNDArray(shape, bstrides, a.dtype, stream=0, gpu_data=a.gpu_data)


def element_strides(a) -> tuple:
    itemsize = np.dtype(a.dtype).itemsize
    return tuple(int(s) // itemsize for s in a.strides)


def view5(a, nd: int):
    """(N, C, *spatial) -> (N, C, D, H, W): a reshape when contiguous, else a strided view."""
    shape = tuple(a.shape[:2]) + (1,) * (3 - nd) + tuple(a.shape[2:])
    if a.ndim == 5:
        return a
    if contiguous(a):
        return reshape(a, shape)
    st = element_strides(a)
    return strided(a, shape, st[:2] + (0,) * (3 - nd) + st[2:])


def sub(a, offset: int, shape, strides):
    """A strided view of contiguous ``a`` starting ``offset`` elements in."""
    f = flat(a)
    return strided(f[int(offset):], shape, strides)


def to_host(a):
    return a.copy_to_host()


# --- launches -------------------------------------------------------------------------
def grid1d(n: int, threads: int = 256):
    """(blocks, threads) for a grid-stride loop over n items (few blocks in the simulator)."""
    n = max(int(n), 1)
    if simulator():          # each simulated thread is an OS thread: keep launches small
        threads = min(threads, 8)
        return min(math.ceil(n / threads), 2), threads
    return min(math.ceil(n / threads), 65535 * 4), threads


def grid_rows(W: int, H: int, R: int):
    """(grid, block) for kernels over a (R, H, W) index space; rows R grid-strided."""
    if simulator():
        return (min(math.ceil(W / 2), 2), min(math.ceil(H / 2), 2), min(R, 2)), (2, 2)
    return (math.ceil(W / 32), math.ceil(H / 8), min(R, 65535)), (32, 8)


# --- cached small device arrays and reusable workspaces -------------------------------
_consts: dict = {}
_work: dict = {}


def const(key, make):
    """A device copy of the host array ``make()``, uploaded once per ``key``."""
    a = _consts.get(key)
    if a is None:
        if len(_consts) > 512:
            _consts.clear()
        a = to_device(make())
        _consts[key] = a
    return a


def workspace(name: str, shape, dtype):
    """A scratch device array, reused across calls (kernels run in stream order, so a
    buffer is free again as soon as the next launch that uses it is queued)."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    n = max(int(np.prod(shape, dtype=np.int64)), 1)
    key = (name, dtype.str)
    buf = _work.get(key)
    if buf is None or buf.shape[0] < n:
        buf = None
        _work.pop(key, None)
        buf = empty((n,), dtype)
        _work[key] = buf
    return buf[:n].reshape(shape) if shape else buf[:1]


def release_workspaces():
    """Free the scratch buffers (they are otherwise kept for the next call)."""
    _work.clear()
    _consts.clear()
