"""The public convolution functions: validate -> ConvSpec -> dispatch -> kernel."""
from __future__ import annotations

import numpy as np

from . import _engine, dispatch
from ._pad import pad, pad_adjoint
from ._spec import ConvSpec, lift5
from ._validate import check_algorithm, check_out, conv_spec, size_tuple


# --- devices --------------------------------------------------------------------------
def is_gpu_array(a) -> bool:
    # __cuda_ndarray__: numba's device arrays, including the CUDA simulator's
    try:
        return (hasattr(a, "__cuda_array_interface__")
                or bool(getattr(type(a), "__cuda_ndarray__", False)))
    except RuntimeError:      # torch: a CUDA tensor that requires grad (the GPU path says so)
        return True


def is_dask_array(a) -> bool:
    return type(a).__module__.startswith("dask.") and hasattr(a, "map_blocks")


def resolve_device(fn, device, *arrays) -> str:
    if device is None:
        return "cuda" if any(is_gpu_array(a) for a in arrays if a is not None) else "cpu"
    if device in ("cpu", "cuda"):
        return device
    raise ValueError(f"{fn}: device must be None, 'cpu' or 'cuda', got {device!r}")


def _shape_proxy(a):
    """Host stand-in (zero-strided, no copy) for validating a GPU array's shape and dtype."""
    if a is None or not is_gpu_array(a):
        return a
    from .cuda.api import proxy
    return proxy(a)


# --- forward --------------------------------------------------------------------------
def run_forward(spec: ConvSpec, x, w, b, algorithm, out=None):
    """Pad, lift to 5-D, choose and run. x is batched, in the compute dtype.
    Returns the 5-D result in the compute dtype (``out`` when given)."""
    xp = lift5(pad(x, spec.padding, spec.padding_mode, spec.dtype), spec.nd)
    w5 = np.ascontiguousarray(lift5(w, spec.nd))
    b = None if b is None else np.ascontiguousarray(b)

    def run(algo, out=None):
        return _engine.forward(xp, w5, b, spec.stride3, spec.dilation3, spec.groups, algo, out)

    algo = _finite_or_direct(dispatch.select(spec, algorithm, run), algorithm, xp, w5)
    return run(algo, out)


def _finite_or_direct(algo, algorithm, *operands):
    """'auto' never runs an FFT over a NaN or inf: the transform would spread it over the
    whole result, where the direct sum keeps it local."""
    if algo == "fft" and algorithm == "auto" and not all(np.isfinite(a).all() for a in operands):
        return "direct"
    return algo


def convnd(nd, fn, input, weight, bias, stride, padding, dilation, groups, padding_mode,
           algorithm, device, out):
    check_algorithm(fn, algorithm)
    if is_dask_array(input):
        if out is not None:
            raise TypeError(f"{fn}: out= is not supported with a dask input (the result is a "
                            f"lazy dask array); call .compute() and copy, or drop out=")
        if device not in (None, "cpu"):
            raise ValueError(f"{fn}: device={device!r} is not supported with a dask input "
                             f"(dask chunks run on the CPU)")
        from ._dask import conv_dask
        return conv_dask(nd, fn, input, weight, bias, stride, padding, dilation, groups,
                         padding_mode, algorithm)
    dev = resolve_device(fn, device, input, weight, bias)
    if dev == "cuda":
        from .cuda import api as cuda_api
        spec, _, _, _ = conv_spec(fn, nd, _shape_proxy(input), _shape_proxy(weight),
                                  _shape_proxy(bias), stride, padding, dilation, groups, padding_mode)
        return cuda_api.conv_forward(fn, spec, input, weight, bias, algorithm, out)
    spec, x, w, b = conv_spec(fn, nd, input, weight, bias, stride, padding, dilation, groups,
                              padding_mode)
    if out is not None:
        check_out(fn, out, spec.out_shape, spec.out_dtype)
    if spec.N == 0:
        res = np.empty(spec.out_shape, dtype=spec.out_dtype)
        return res if out is None else out
    # the kernels write ``out`` while they read the operands: an ``out`` that overlaps
    # them gets a temporary result first
    direct_out = (out is not None and spec.out_dtype == spec.dtype
                  and not any(np.may_share_memory(out, a) for a in (x, w, b) if a is not None))
    out5 = out.reshape((spec.N, spec.C_out) + spec.lift(spec.out_size)) if direct_out else None
    res = run_forward(spec, x, w, b, algorithm, out5)
    if direct_out:
        return out
    res = res.reshape((spec.N, spec.C_out) + spec.out_size)
    if not spec.batched:
        res = res[0]
    if res.dtype != spec.out_dtype:
        res = res.astype(spec.out_dtype)
    if out is not None:
        out[...] = res
        return out
    return res


_CONV_DOC = """{nd}-D convolution (cross-correlation, as ``torch.nn.functional.conv{nd}d``).

    Parameters
    ----------
    input : array_like, shape (N, C_in, {sp}) or unbatched (C_in, {sp})
        Also a GPU array (see ``device``) or a ``dask.array.Array``, which gives a lazy
        Dask result equal to the in-memory call (no ``out``).
    weight : array_like, shape (C_out, C_in / groups, {ksp})
    bias : array_like, shape (C_out,), optional
    stride : int or tuple of {nd} ints
        A single number or a tuple. Default: 1
    padding : int, tuple, per-side pairs, 'valid' or 'same'
        A single number, a tuple of {nd}, or {nd} ``(before, after)`` pair(s);
        ``'same'`` with stride > 1 follows TensorFlow/JAX (output = ceil(size / stride)).
        Default: 0
    dilation : int or tuple of {nd} ints
        Default: 1
    groups : int
        ``C_in`` and ``C_out`` must both be divisible by it. Default: 1
    padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}
    algorithm : {{'auto', 'direct', 'im2col', 'fft'}}
        A speed choice only: every algorithm gives the same result for finite inputs
        (``'fft'`` spreads a NaN or inf over the whole output, so ``'auto'`` does not use
        it for non-finite input). ``'auto'`` uses :func:`fastconv.choose_algorithm`.
    device : None, 'cpu' or 'cuda'
        None: the GPU if ``input`` is a GPU array, else the CPU.
    out : ndarray, optional
        C-contiguous array of the result's shape and dtype.

    Returns
    -------
    ndarray, shape (N, C_out, {osp})
        ``out = floor((in + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``
        per spatial axis. float32/float64 keep their dtype; integers and bool give float64;
        float16 is computed in float32 and returned as float16.

    Examples
    --------
    {example}
    """


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", device=None, out=None):
    return convnd(1, "conv1d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", device=None, out=None):
    return convnd(2, "conv2d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", device=None, out=None):
    return convnd(3, "conv3d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out)


conv1d.__doc__ = _CONV_DOC.format(nd=1, sp="L", ksp="kL", osp="L_out", example="""\
>>> import numpy as np, fastconv as fc
    >>> fc.conv1d(np.array([[[1., 2., 3., 4.]]]), np.array([[[1., -1.]]]))
    array([[[-1., -1., -1.]]])""")
conv2d.__doc__ = _CONV_DOC.format(nd=2, sp="H, W", ksp="kH, kW", osp="H_out, W_out", example="""\
>>> import numpy as np, fastconv as fc
    >>> x = np.arange(1., 10.).reshape(1, 1, 3, 3)
    >>> w = np.array([[[[1., 0.], [0., 1.]]]])
    >>> fc.conv2d(x, w)
    array([[[[ 6.,  8.],
             [12., 14.]]]])
    >>> fc.conv2d(np.ones((2, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32),
    ...           stride=2, padding="same").shape
    (2, 4, 4, 4)""")
conv3d.__doc__ = _CONV_DOC.format(nd=3, sp="D, H, W", ksp="kD, kH, kW", osp="D_out, H_out, W_out",
                                  example="""\
>>> import numpy as np, fastconv as fc
    >>> fc.conv3d(np.ones((1, 2, 4, 4, 4)), np.ones((3, 2, 2, 2, 2))).shape
    (1, 3, 3, 3, 3)""")


# --- gradients and the transposed convolution ------------------------------------------
def _split_input_size(fn, nd, input_size):
    return size_tuple(fn, "input_size", input_size, (nd + 2, nd + 1),
                      "(N, C_in, *spatial), or (C_in, *spatial) unbatched")


def _check_grad_output(fn, go, spec):
    if tuple(go.shape) != tuple(spec.out_shape):
        raise ValueError(f"{fn}: grad_output has shape {tuple(go.shape)} but the forward "
                         f"convolution's output has shape {spec.out_shape}")


def input_grad(nd, fn, input_size, weight, grad_output, stride, padding, dilation, groups,
               padding_mode, algorithm):
    """dL/dinput of conv{nd}d, for a given dL/doutput. Returns (grad, spec)."""
    check_algorithm(fn, algorithm)
    if is_gpu_array(weight) or is_gpu_array(grad_output):
        from .cuda import api as cuda_api
        return cuda_api.input_grad(nd, fn, input_size, weight, grad_output, stride, padding,
                                   dilation, groups, padding_mode, algorithm)
    size = _split_input_size(fn, nd, input_size)
    from ._validate import as_array, compute_dtypes
    w = as_array(weight, "weight", fn)
    go = as_array(grad_output, "grad_output", fn)
    compute_dtypes(fn, w, go)
    spec, _, w, _ = conv_spec(fn, nd, dispatch._proxy(size, np.result_type(w, go)), w, None,
                              stride, padding, dilation, groups, padding_mode)
    _check_grad_output(fn, go, spec)
    if spec.N == 0:
        return np.zeros(size, dtype=spec.out_dtype), spec
    go5 = np.ascontiguousarray(go.reshape((spec.N, spec.C_out) + spec.lift(spec.out_size)), dtype=spec.dtype)
    w5 = np.ascontiguousarray(lift5(w, nd))
    algo = _finite_or_direct(dispatch.select(spec, algorithm, op="input_grad"), algorithm, go5, w5)
    gxp = _engine.backward_input(go5, w5, spec.lift(spec.padded_size),
                                 spec.stride3, spec.dilation3, spec.groups, algo)
    gxp = gxp.reshape((spec.N, spec.C_in) + spec.padded_size)
    gx = pad_adjoint(gxp, spec.in_size, spec.padding, spec.padding_mode)
    return gx.reshape(size).astype(spec.out_dtype, copy=False), spec


def weight_grad(nd, fn, input, weight_size, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm):
    """dL/dweight of conv{nd}d."""
    check_algorithm(fn, algorithm)
    if is_gpu_array(input) or is_gpu_array(grad_output):
        from .cuda import api as cuda_api
        return cuda_api.weight_grad(nd, fn, input, weight_size, grad_output, stride, padding,
                                    dilation, groups, padding_mode, algorithm)
    wsize = size_tuple(fn, "weight_size", weight_size, (nd + 2,), "(C_out, C_in/groups, *kernel)")
    from ._validate import as_array, compute_dtypes
    x = as_array(input, "input", fn)
    go = as_array(grad_output, "grad_output", fn)
    compute_dtypes(fn, x, go)
    spec, x, _, _ = conv_spec(fn, nd, x, dispatch._proxy(wsize, np.result_type(x, go)),
                              None, stride, padding, dilation, groups, padding_mode)
    _check_grad_output(fn, go, spec)
    go5 = np.ascontiguousarray(go.reshape((spec.N, spec.C_out) + spec.lift(spec.out_size)), dtype=spec.dtype)
    xp = lift5(pad(x, spec.padding, spec.padding_mode, spec.dtype), nd)
    algo = _finite_or_direct(dispatch.select(spec, algorithm, op="weight_grad"), algorithm, xp, go5)
    gw = _engine.backward_weight(xp, go5, spec.lift(spec.kernel), spec.stride3, spec.dilation3,
                                 spec.groups, algo)
    return gw.reshape(wsize).astype(spec.out_dtype, copy=False)


def conv_transposend(nd, fn, input, weight, bias, stride, padding, output_padding, groups,
                     dilation, algorithm, device):
    check_algorithm(fn, algorithm)
    if resolve_device(fn, device, input, weight, bias) == "cuda":
        from .cuda import api as cuda_api
        return cuda_api.conv_transpose(fn, nd, input, weight, bias, stride, padding,
                                       output_padding, groups, dilation, algorithm)
    from ._validate import as_array, compute_dtypes, transpose_args
    x = as_array(input, "input", fn)
    w = as_array(weight, "weight", fn)
    b = None if bias is None else as_array(bias, "bias", fn)
    s, p, d, op, batched, in_size = transpose_args(fn, nd, x.shape, w.shape, stride, padding,
                                                   output_padding, dilation, groups)
    if b is not None and b.shape != (in_size[1],):
        raise ValueError(f"{fn}: bias must have shape ({in_size[1]},) to match weight shape "
                         f"{w.shape} and groups={groups}, got {b.shape}")
    dtype, out_dtype = compute_dtypes(fn, *((x, w) if b is None else (x, w, b)))
    if b is not None:          # the bias may widen the result: compute in that dtype
        x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
    size = in_size[2:]
    xb = x if batched else x[None]
    # output_padding >= stride (allowed when < dilation) makes the matching forward output
    # longer than the input: its extra positions carry zero gradient
    fwd = tuple((n + 2 * pi - di * (k - 1) - 1) // si + 1
                for n, pi, di, k, si in zip(size, p, d, w.shape[2:], s))
    if fwd != tuple(xb.shape[2:]) and all(f >= i for f, i in zip(fwd, xb.shape[2:])):
        xb = np.pad(xb, [(0, 0), (0, 0)] + [(0, f - i) for f, i in zip(fwd, xb.shape[2:])])
    gx, spec = input_grad(nd, fn, in_size, w, xb, s, p, d, groups, "zeros", algorithm)
    if b is not None:
        gx = gx + b.astype(spec.dtype).reshape((1, -1) + (1,) * nd)
        gx = gx.astype(out_dtype, copy=False)
    return gx if batched else gx[0]


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", device=None):
    """2-D transposed convolution (as ``torch.nn.functional.conv_transpose2d``).

    The adjoint of :func:`conv2d`: ``conv_transpose2d(y, w)`` is the gradient of
    ``<conv2d(x, w), y>`` with respect to ``x``.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or tuple (sH, sW)
    groups : int

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
        ``H_out = (H - 1) * sH - 2 * pH + dH * (kH - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv as fc
    >>> y = np.array([[[[1., 2.], [3., 4.]]]])
    >>> w = np.array([[[[1., 0.], [0., 1.]]]])
    >>> fc.conv_transpose2d(y, w)
    array([[[[1., 2., 0.],
             [3., 5., 2.],
             [0., 3., 4.]]]])
    """
    return conv_transposend(2, "conv_transpose2d", input, weight, bias, stride, padding,
                            output_padding, groups, dilation, algorithm, device)
