"""What kind of array is this (NumPy, GPU, Dask), where does a call run, and shape
stand-ins that carry an array's shape and dtype without its data."""
from __future__ import annotations

import functools

import numpy as np


def is_gpu_array(a) -> bool:
    """Anything with ``__cuda_array_interface__`` (numba device arrays, CuPy, PyTorch CUDA
    tensors) or a numba simulator device array."""
    try:
        return (hasattr(a, "__cuda_array_interface__")
                or bool(getattr(type(a), "__cuda_ndarray__", False)))
    except RuntimeError:      # torch: a CUDA tensor that requires grad (the GPU path says so)
        return True


def is_dask_array(a) -> bool:
    return type(a).__module__.startswith("dask.") and hasattr(a, "map_blocks")


def resolve_device(fn, device, *arrays) -> str:
    """'cpu' or 'cuda' for a call's ``device=`` argument and its array arguments."""
    if device is None:
        return "cuda" if any(is_gpu_array(a) for a in arrays if a is not None) else "cpu"
    if device in ("cpu", "cuda"):
        return device
    raise ValueError(f"{fn}: device must be None, 'cpu' or 'cuda', got {device!r}")


def proxy(shape, dtype):
    """A zero-strided array of the given shape and dtype: validation without memory
    (read-only, so one per shape and dtype serves every call)."""
    return _proxy(tuple(int(s) for s in shape), np.dtype(dtype))


@functools.lru_cache(maxsize=256)
def _proxy(shape, dtype):
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def shape_proxy(a, name="argument", fn="fastconv"):
    """``a`` itself, or for a GPU or Dask array a host stand-in carrying its shape and dtype.

    A tensor that refuses ``__cuda_array_interface__`` (PyTorch, ``requires_grad=True``)
    gets a stand-in from its own ``shape`` and ``dtype`` when those read as NumPy's, so
    that validation passes and the GPU entry point's conversion raises the TypeError that
    names the parameter."""
    if a is None:
        return None
    if is_dask_array(a):
        return proxy(a.shape, a.dtype)
    if not is_gpu_array(a):
        return a
    from .cuda import runtime
    try:
        dtype = runtime.gpu_dtype(a, name, fn)
    except TypeError as exc:
        try:
            dtype = np.dtype(str(a.dtype).rpartition(".")[2])
        except Exception:
            raise exc from None
    return proxy(a.shape, dtype)
