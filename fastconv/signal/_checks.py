"""Argument checks, dtype rules and every error message of :mod:`fastconv.signal`.

The messages keep SciPy's wording (callers match on it) and add what was received.
"""
from __future__ import annotations

import operator
import warnings

import numpy as np

MODES = ("full", "same", "valid")
METHODS = ("auto", "direct", "fft", "oa")
# scipy.signal's boundary names -> fastconv._pad modes ('fill' is a constant pad)
BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "circular", "circular": "circular",
              "symm": "symmetric", "symmetric": "symmetric"}

MSG = {
    "mode": "Acceptable mode flags are 'valid', 'same', or 'full'; got mode={!r}.",
    # fftconvolve/oaconvolve spell it in lower case in SciPy; tests match either spelling
    "mode_freq": "acceptable mode flags are 'valid', 'same', or 'full'; got mode={!r}.",
    "method": "Acceptable method flags are 'auto', 'direct', 'fft', or 'oa'; got method={!r}.",
    "boundary": ("Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), and "
                 "'symmetric' (or 'symm'); got boundary={!r}."),
    "ndim": "{a} and {b} should have the same dimensionality; got {s1} and {s2}.",
    "ndim2": "{fn} inputs must both be 2-D arrays; got shapes {s1} and {s2}.",
    "valid": ("For 'valid' mode, one must be at least as large as the other in every "
              "dimension; got shapes {s1} and {s2}."),
    "incompatible": "incompatible shapes for in1 and in2: {s1} and {s2}",
    "axes_empty": "when provided, axes cannot be empty",
    "axes_type": "axes must be a scalar or iterable of integers; got axes={!r}",
    "axes_range": "axes exceeds dimensionality of input: axes={!r} for {nd}-D inputs",
    "axes_unique": "all axes must be unique; got axes={!r}",
    "fill_cast": ("could not cast `fillvalue` directly to the output type (it was first "
                  "converted to complex): fillvalue={!r}, output dtype {}."),
    "fill_size": "`fillvalue` must be scalar or an array with one element; got shape {}.",
    "fill_empty": "`fillvalue` cannot be an empty array.",
    "type": "{fn} not available for this type: dtypes {d1} and {d2}.",
    "empty": ("{fn}: in1 and in2 must not be empty in mode {mode!r} (got shapes {s1} and "
              "{s2}); only mode='same' with an empty in1 gives an (empty) result."),
    "nan": ("Use of fft convolution on input with NAN or inf results in NAN or inf output "
            "({fn}). Consider using method='direct' instead."),
    "empty_boundary": ("{fn}: boundary {b!r} needs a non-empty in1 to wrap or reflect "
                       "(got shape {s1}); use boundary='fill'."),
}


def check_mode(mode, freq=False):
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(MSG["mode_freq" if freq else "mode"].format(mode))
    return mode


def check_method(method):
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(MSG["method"].format(method))
    return method


def check_boundary(boundary):
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        raise ValueError(MSG["boundary"].format(boundary))
    return BOUNDARIES[boundary]


def check_same_ndim(in1, in2, a="in1", b="in2"):
    if in1.ndim != in2.ndim:
        raise ValueError(MSG["ndim"].format(a=a, b=b, s1=in1.shape, s2=in2.shape))


def check_numeric(fn, in1, in2):
    for a in (in1, in2):
        if a.dtype.kind not in "biufc":
            raise ValueError(MSG["type"].format(fn=fn, d1=in1.dtype, d2=in2.dtype))


def swap_needed(mode, shape1, shape2, axes=None) -> bool:
    """True when 'valid' mode needs in2 to play in1's part; raises if neither fits."""
    if mode != "valid" or not shape1:
        return False
    axes = range(len(shape1)) if axes is None else axes
    ok1 = all(shape1[i] >= shape2[i] for i in axes)
    ok2 = all(shape2[i] >= shape1[i] for i in axes)
    if not (ok1 or ok2):
        raise ValueError(MSG["valid"].format(s1=tuple(shape1), s2=tuple(shape2)))
    return not ok1


def normalize_axes(axes, ndim) -> list:
    """SciPy's rules for the ``axes`` argument of fftconvolve/oaconvolve."""
    if axes is None:
        return list(range(ndim))
    if np.isscalar(axes) or (isinstance(axes, np.ndarray) and axes.ndim == 0):
        axes = [axes]
    try:
        arr = np.asarray(axes)
    except (TypeError, ValueError):
        raise ValueError(MSG["axes_type"].format(axes)) from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(MSG["axes_type"].format(axes))
    if arr.size == 0:
        raise ValueError(MSG["axes_empty"])
    out = []
    for a in arr.tolist():
        a = operator.index(a)
        if a < -ndim or a >= ndim:
            raise ValueError(MSG["axes_range"].format(axes, nd=ndim))
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(MSG["axes_unique"].format(axes))
    return out


def fill_scalar(fillvalue, dtype):
    """The constant of boundary='fill', converted to the output dtype the way SciPy does."""
    dtype = np.dtype(dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(fillvalue, np.ndarray):
                if not np.can_cast(fillvalue.dtype, dtype):
                    raise TypeError("unsafe cast")
                arr = fillvalue.astype(dtype)
            else:
                arr = np.array(fillvalue, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(MSG["fill_cast"].format(fillvalue, dtype)) from None
    if arr.size != 1:
        if arr.size == 0:
            raise ValueError(MSG["fill_empty"])
        raise ValueError(MSG["fill_size"].format(arr.shape))
    return arr.reshape(())[()]


def check_2d(fn, a, b, mode, boundary, fillvalue):
    """The checks of convolve2d/correlate2d, in SciPy's order, on arrays or on stand-ins
    with ``shape``/``ndim``/``dtype``. Returns (a, b, swapped, boundary, result dtype,
    fill constant): a and b swapped when 'valid' mode needs it; the fill constant is 0
    for the other boundaries."""
    if not a.ndim == b.ndim == 2:
        raise ValueError(MSG["ndim2"].format(fn=fn, s1=a.shape, s2=b.shape))
    swapped = swap_needed(mode, a.shape, b.shape)
    if swapped:
        a, b = b, a
    check_mode(mode)
    bnd = check_boundary(boundary)
    check_numeric(fn, a, b)
    res_dtype = np.result_type(a.dtype, b.dtype)
    fill = fill_scalar(fillvalue, res_dtype) if bnd == "fill" else 0
    return a, b, swapped, bnd, res_dtype, fill


# --- dtypes ---------------------------------------------------------------------------
def direct_dtype(res_dtype: np.dtype) -> np.dtype:
    """Compute dtype of the direct method for result dtype ``res_dtype`` (integers exact in int64)."""
    if res_dtype.kind in "biu":
        return np.dtype(np.int64)
    if res_dtype.kind == "f":
        return np.dtype(np.float32) if res_dtype.itemsize <= 4 else np.dtype(np.float64)
    if res_dtype.kind == "c":
        return np.dtype(np.complex64) if res_dtype.itemsize <= 8 else np.dtype(np.complex128)
    raise TypeError(f"unsupported dtype {res_dtype}")


def fft_dtype(*dtypes) -> np.dtype:
    """dtype that scipy.signal.fftconvolve returns: integers (and bool) become float64,
    float16 computes in float32."""
    ds = [np.dtype(np.float64) if np.dtype(d).kind in "biu" else np.dtype(d) for d in dtypes]
    res_dtype = np.result_type(*ds)
    if res_dtype == np.float16:
        res_dtype = np.dtype(np.float32)
    return res_dtype


def fft_compute_dtype(ft: np.dtype) -> np.dtype:
    """What our FFT kernels compute in for result dtype ``ft`` (long double -> double)."""
    if ft.kind == "c":
        return np.dtype(np.complex64) if ft.itemsize <= 8 else np.dtype(np.complex128)
    return np.dtype(np.float32) if ft.itemsize <= 4 else np.dtype(np.float64)


# --- the argument step shared by the in-memory and Dask paths ------------------------------
def check_nd(fn, a, b, mode, method):
    """convolve / correlate's argument step (``a``, ``b``: arrays or shape-and-dtype
    stand-ins of Dask arrays). Raises for bad arguments; returns what the call is:
    ``'scalar'`` (two 0-d inputs: their product), ``'object'`` (non-numeric: numpy's
    fallback), ``'empty'`` (an empty 'same' result of ``a``'s shape) or ``'run'``."""
    if a.ndim == b.ndim == 0:
        return "scalar"
    check_same_ndim(a, b, *(("in1", "in2") if fn == "correlate" else ("volume", "kernel")))
    check_mode(mode)
    check_method(method)
    if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc":
        return "object"
    if a.size == 0 or b.size == 0:
        if mode == "same" and a.size == 0 and b.size > 0:
            return "empty"
        raise ValueError(MSG["empty"].format(fn=fn, mode=mode, s1=a.shape, s2=b.shape))
    return "run"


def check_freq(a, b, mode, axes):
    """fftconvolve / oaconvolve's argument step (arrays or stand-ins). Returns
    ``(kind, axes, swap)``: kind ``'scalar'``, ``'empty'`` or ``'run'``; the convolved
    axes (those where neither input has length 1); whether 'valid' swaps the inputs."""
    if a.ndim == b.ndim == 0:
        return "scalar", [], False
    check_same_ndim(a, b)
    if a.size == 0 or b.size == 0:
        return "empty", [], False
    check_mode(mode, freq=True)
    ax = [i for i in normalize_axes(axes, a.ndim) if a.shape[i] != 1 and b.shape[i] != 1]
    for i in range(a.ndim):
        if i not in ax and not (a.shape[i] == b.shape[i] or 1 in (a.shape[i], b.shape[i])):
            raise ValueError(MSG["incompatible"].format(s1=a.shape, s2=b.shape))
    return "run", ax, swap_needed(mode, a.shape, b.shape, ax)
