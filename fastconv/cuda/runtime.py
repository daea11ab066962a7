"""numba.cuda, imported lazily: device checks, device arrays, views and workspaces.

Everything that touches numba.cuda's own objects (device arrays, the simulator's fake
arrays, strided views) lives here, so the kernel wrappers stay free of those details.

Foreign GPU arrays (CuPy, PyTorch CUDA tensors, anything with ``__cuda_array_interface__``)
are wrapped zero-copy by :func:`as_device`, which calls ``numba.cuda.as_cuda_array`` with
``sync=True``: when the exporter names a stream (interface v3), numba synchronises on it
once, so the producer's pending writes are complete before our kernels (on numba's
default stream) read the data. Each entry point converts each argument once per call and
passes the numba device array on (see :func:`convert`), so that synchronisation happens
at most once per argument and call, never per kernel launch. A PyTorch tensor that
requires grad refuses to export the interface; :func:`as_device` turns that into a
``TypeError`` naming the parameter (pass ``tensor.detach()``; it is not detached
silently).

Real CUDA rejects a launch with a zero grid or block dimension, and a numba
``DeviceNDArray`` cannot ``reshape`` a non-contiguous array (the simulator silently
copies in both cases): wrappers return early for empty outputs, :func:`grid1d` and
:func:`grid_rows` never give a zero dimension, and :func:`flat` / :func:`reshape` raise
as the hardware does when a copy would be needed (:func:`ascontiguous` makes the copy on
the device where one is wanted).
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


def device_name() -> str:
    """The current GPU's name (the simulator's says so), for the autotune cache key."""
    mod = cuda()
    if simulator():
        return "simulator"
    try:
        name = mod.get_current_device().name
    except Exception:
        return "unknown"
    return name.decode() if isinstance(name, bytes) else str(name)


# --- arrays ---------------------------------------------------------------------------
_NO_CAI = object()


def _interface(a, name="argument", fn="fastconv"):
    """``a.__cuda_array_interface__``, ``_NO_CAI`` when ``a`` has none; a clear TypeError
    when the exporter refuses (a PyTorch tensor that requires grad raises RuntimeError)."""
    try:
        return a.__cuda_array_interface__
    except AttributeError:
        return _NO_CAI
    except RuntimeError as exc:
        hint = (f"pass {name}.detach() (fastconv does not track autograd; compute the "
                f"gradients with fastconv.grad or torch)") if "requires grad" in str(exc) else \
            "it cannot be used as a GPU array"
        raise TypeError(f"{fn}: {name} is a GPU tensor that does not export "
                        f"__cuda_array_interface__ ({exc}); {hint}") from None


def is_device(a) -> bool:
    """A GPU array: anything with ``__cuda_array_interface__``, or a simulator array. A
    tensor whose interface raises (PyTorch, ``requires_grad=True``) counts as one: using it
    then raises the TypeError of :func:`as_device`."""
    if a is None:
        return False
    if getattr(type(a), "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(a, "__cuda_array_interface__")
    except RuntimeError:
        return True


def gpu_dtype(a, name="argument", fn="fastconv") -> np.dtype:
    if getattr(type(a), "__cuda_ndarray__", False):
        return np.dtype(a.dtype)
    cai = _interface(a, name, fn)
    return np.dtype(cai["typestr"]) if cai is not _NO_CAI else np.dtype(a.dtype)


def as_device(a, name="argument", fn="fastconv"):
    """A numba device array for ``a``: zero-copy for GPU arrays, a copy for host data.
    ``name`` and ``fn`` go into the error for a GPU tensor that cannot be shared."""
    mod = cuda()
    if getattr(type(a), "__cuda_ndarray__", False):
        return a
    cai = _interface(a, name, fn)
    if cai is not _NO_CAI:
        return mod.as_cuda_array(a)        # sync=True: see the module docstring
    return mod.to_device(np.ascontiguousarray(a))


def convert(args, names, fn="fastconv"):
    """``args`` with every GPU array converted to a numba device array, once per distinct
    object (an object passed twice is converted once); host data and None pass through."""
    seen: dict = {}
    out = []
    for a, name in zip(args, names):
        if a is None or not is_device(a):
            out.append(a)
            continue
        d = seen.get(id(a))
        if d is None:
            d = as_device(a, name, fn)
            seen[id(a)] = d
        out.append(d)
    return out


def to_device(a, dtype=None):
    """Copy host data in (C-contiguous, cast on the host first when ``dtype`` is given)."""
    return cuda().to_device(np.ascontiguousarray(a, dtype=dtype))


def empty(shape, dtype):
    return cuda().device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def contiguous(a) -> bool:
    return bool(a.is_c_contiguous())


def flat(a):
    """The 1-D view of a C-contiguous device array."""
    return reshape(a, (int(np.prod(a.shape, dtype=np.int64)),))


def reshape(a, shape):
    """A reshaped view of a C-contiguous device array. Like numba's ``DeviceNDArray``
    (which refuses any non-contiguous reshape: "operation requires copying"), it raises
    NotImplementedError for a non-contiguous one, under the simulator too (whose arrays
    would silently copy, so in-place writes through the result would be lost)."""
    shape = tuple(int(s) for s in shape)
    if shape != tuple(a.shape) and a.size and not contiguous(a):
        raise NotImplementedError(f"fastconv: reshaping the non-contiguous device array of "
                                  f"shape {tuple(a.shape)} and strides {tuple(a.strides)} to "
                                  f"{shape} requires copying (operation requires copying)")
    return a.reshape(shape)


def view5_any(a):
    """A 5-D view of a device array of rank 0 to 5 (any strides)."""
    if 2 <= a.ndim <= 5:
        return view5(a, a.ndim - 2)
    if a.ndim == 1:
        return strided(a, (1, 1, 1, 1, a.shape[0]), (0, 0, 0, 0) + element_strides(a))
    if a.ndim == 0 or contiguous(a):
        return reshape(a, (1, 1, 1, 1, a.size))
    raise ValueError(f"a non-contiguous {a.ndim}-D GPU array (shape {tuple(a.shape)}) is not "
                     f"supported: at most 5 dimensions")


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
    """(blocks, threads) for a grid-stride loop over n items (few blocks in the simulator).
    Never a zero dimension (real CUDA rejects those): callers skip empty launches."""
    n = max(int(n), 1)
    if simulator():          # each simulated thread is an OS thread: keep launches small
        threads = min(threads, 8)
        return min(math.ceil(n / threads), 2), threads
    return min(math.ceil(n / threads), 65535 * 4), threads


def grid_rows(W: int, H: int, R: int):
    """(grid, block) for kernels over a (R, H, W) index space; rows R grid-strided.
    Never a zero dimension: callers skip empty launches."""
    W, H, R = max(int(W), 1), max(int(H), 1), max(int(R), 1)
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
