"""The public convolution functions: route (CPU, GPU or Dask) -> validate -> plan -> run.

conv1d/2d/3d, conv_transpose2d and the gradients behind :mod:`fastconv.grad`. Host
arrays run :mod:`fastconv._pipeline`, GPU arrays :mod:`fastconv.cuda.api`, Dask arrays
:mod:`fastconv._dask` (whose chunks run the same in-memory pipeline).
"""
from __future__ import annotations

import functools

import numpy as np

from . import _pipeline
from ._arrays import is_dask_array, is_gpu_array, proxy, resolve_device, shape_proxy
from ._spec import out_size
from ._validate import (_plain, as_array, check_algorithm, check_grad_output, check_out,
                        check_precision, compute_dtypes, conv_spec, input_size, transpose_args,
                        weight_size)
from .dispatch import ALGORITHM_NAMES, precision_scope


def convnd(nd, fn, input, weight, bias, stride, padding, dilation, groups, padding_mode,
           algorithm, device, out, precision=None):
    check_algorithm(fn, algorithm, ALGORITHM_NAMES)
    precision = check_precision(fn, precision)
    if is_dask_array(input):
        if out is not None:
            raise TypeError(f"{fn}: out= is not supported with a dask input (the result is a "
                            f"lazy dask array); call .compute() and copy, or drop out=")
        if device not in (None, "cpu"):
            raise ValueError(f"{fn}: device={device!r} is not supported with a dask input "
                             f"(dask chunks run on the CPU)")
        from ._dask import conv_dask
        return conv_dask(nd, fn, input, weight, bias, stride, padding, dilation, groups,
                         padding_mode, algorithm, precision)
    dev = resolve_device(fn, device, input, weight, bias)
    if dev == "cuda":
        from .cuda import api as cuda_api
        spec, _, _, _ = conv_spec(fn, nd, shape_proxy(input, "input", fn),
                                  shape_proxy(weight, "weight", fn), shape_proxy(bias, "bias", fn),
                                  stride, padding, dilation, groups, padding_mode)
        with precision_scope(precision):
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
    res = _pipeline.forward(spec, x, w, b, algorithm, out5, precision)
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
    algorithm : {{'auto', 'direct', 'im2col', 'fft', 'winograd', 'winograd_f2'}}
        A speed choice: every algorithm gives the same result within its documented
        tolerance, with NaN and inf in the same places (Winograd: within its output
        tiles). ``'auto'`` uses :func:`fastconv.choose_algorithm`. ``'winograd'``
        (F(4x4,3x3)) and ``'winograd_f2'`` (F(2x2,3x3)) run 3x3 kernels of stride and
        dilation 1 only (else ValueError).
    device : None, 'cpu' or 'cuda'
        None: the GPU if ``input`` is a GPU array, else the CPU.
    out : ndarray, optional
        C-contiguous array of the result's shape and dtype.
    precision : {{None, 'highest', 'high', 'medium'}}
        What ``'auto'`` may choose (see :func:`fastconv.set_precision`); None: the
        global level.

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
           padding_mode="zeros", algorithm="auto", device=None, out=None, precision=None):
    return convnd(1, "conv1d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out, precision)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", device=None, out=None, precision=None):
    return convnd(2, "conv2d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out, precision)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", algorithm="auto", device=None, out=None, precision=None):
    return convnd(3, "conv3d", input, weight, bias, stride, padding, dilation, groups,
                  padding_mode, algorithm, device, out, precision)


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
def input_grad(nd, fn, input_size_, weight, grad_output, stride, padding, dilation, groups,
               padding_mode, algorithm, precision=None):
    """dL/dinput of conv{nd}d, for a given dL/doutput. Returns (grad, spec)."""
    check_algorithm(fn, algorithm, ALGORITHM_NAMES)
    precision = check_precision(fn, precision)
    if _host_pair(weight, grad_output, input_size_, stride, padding, dilation, groups,
                  padding_mode):
        spec, size = _grad_spec("input", nd, fn, weight.shape, weight.dtype, input_size_,
                                grad_output.shape, grad_output.dtype, stride, padding,
                                dilation, groups, padding_mode)
        w, go = weight.astype(spec.dtype, copy=False), grad_output
    else:
        if is_gpu_array(weight) or is_gpu_array(grad_output):
            from .cuda import api as cuda_api
            with precision_scope(precision):
                return cuda_api.input_grad(nd, fn, input_size_, weight, grad_output, stride,
                                           padding, dilation, groups, padding_mode, algorithm)
        w = as_array(weight, "weight", fn)
        go = as_array(grad_output, "grad_output", fn)
        spec, size = _grad_spec.__wrapped__("input", nd, fn, w.shape, w.dtype, input_size_,
                                            go.shape, go.dtype, stride, padding, dilation,
                                            groups, padding_mode)
        w = w.astype(spec.dtype, copy=False)
    if spec.N == 0:
        return np.zeros(size, dtype=spec.out_dtype), spec
    gx = _pipeline.input_grad(spec, go, w, algorithm, precision)
    return gx.reshape(size).astype(spec.out_dtype, copy=False), spec


def weight_grad(nd, fn, input, weight_size_, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm, precision=None):
    """dL/dweight of conv{nd}d."""
    check_algorithm(fn, algorithm, ALGORITHM_NAMES)
    precision = check_precision(fn, precision)
    if _host_pair(input, grad_output, weight_size_, stride, padding, dilation, groups,
                  padding_mode):
        spec, wsize = _grad_spec("weight", nd, fn, input.shape, input.dtype, weight_size_,
                                 grad_output.shape, grad_output.dtype, stride, padding,
                                 dilation, groups, padding_mode)
        x, go = input, grad_output
    else:
        if is_gpu_array(input) or is_gpu_array(grad_output):
            from .cuda import api as cuda_api
            with precision_scope(precision):
                return cuda_api.weight_grad(nd, fn, input, weight_size_, grad_output, stride,
                                            padding, dilation, groups, padding_mode, algorithm)
        weight_size(fn, nd, weight_size_)          # (its errors first, as ever)
        x = as_array(input, "input", fn)
        go = as_array(grad_output, "grad_output", fn)
        spec, wsize = _grad_spec.__wrapped__("weight", nd, fn, x.shape, x.dtype, weight_size_,
                                             go.shape, go.dtype, stride, padding, dilation,
                                             groups, padding_mode)
    x = (x if spec.batched else x[None]).astype(spec.dtype, copy=False)
    gw = _pipeline.weight_grad(spec, x, go, algorithm, precision)
    return gw.reshape(wsize).astype(spec.out_dtype, copy=False)


def _host_pair(a, go, *params):
    """Whether a gradient call takes the cached checks: two NumPy arrays and plain
    parameters (ints, strings and tuples of them: see _validate._plain)."""
    return type(a) is np.ndarray and type(go) is np.ndarray and all(map(_plain, params))


@functools.lru_cache(maxsize=512)
def _grad_spec(kind, nd, fn, a_shape, a_dtype, size, go_shape, go_dtype, stride, padding,
               dilation, groups, padding_mode):
    """The checks of a gradient call by shapes and dtypes (of the weight for an input
    gradient, of the input for a weight gradient, and of grad_output), on stand-ins:
    (spec, the result's shape). Errors are raised, never cached."""
    a, go = proxy(a_shape, a_dtype), proxy(go_shape, go_dtype)
    if kind == "input":
        as_array(a, "weight", fn)
        as_array(go, "grad_output", fn)
        shape = input_size(fn, nd, size, go_shape)
        compute_dtypes(fn, {"weight": a, "grad_output": go})
        spec = conv_spec(fn, nd, proxy(shape, np.result_type(a, go)), a, None, stride,
                         padding, dilation, groups, padding_mode)[0]
    else:
        shape = weight_size(fn, nd, size)
        as_array(a, "input", fn)
        as_array(go, "grad_output", fn)
        compute_dtypes(fn, {"input": a, "grad_output": go})
        spec = conv_spec(fn, nd, a, proxy(shape, np.result_type(a, go)), None, stride,
                         padding, dilation, groups, padding_mode)[0]
    check_grad_output(fn, go_shape, spec)
    return spec, shape


def conv_transposend(nd, fn, input, weight, bias, stride, padding, output_padding, groups,
                     dilation, algorithm, device, precision=None):
    check_algorithm(fn, algorithm, ALGORITHM_NAMES)
    precision = check_precision(fn, precision)
    if resolve_device(fn, device, input, weight, bias) == "cuda":
        from .cuda import api as cuda_api
        with precision_scope(precision):
            return cuda_api.conv_transpose(fn, nd, input, weight, bias, stride, padding,
                                           output_padding, groups, dilation, algorithm)
    x = as_array(input, "input", fn)
    w = as_array(weight, "weight", fn)
    b = None if bias is None else as_array(bias, "bias", fn)
    s, p, d, op, batched, in_size = transpose_args(fn, nd, x.shape, w.shape,
                                                   None if b is None else b.shape, stride,
                                                   padding, output_padding, dilation, groups)
    dtype, out_dtype = compute_dtypes(fn, {"input": x, "weight": w, "bias": b})
    if b is not None:          # the bias may widen the result: compute in that dtype
        x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
    xb = x if batched else x[None]
    # output_padding >= stride (allowed when < dilation) makes the matching forward output
    # longer than the input: its extra positions carry zero gradient
    fwd = out_size(tuple(n + 2 * pi for n, pi in zip(in_size[2:], p)), w.shape[2:], s, d)
    if fwd != tuple(xb.shape[2:]) and all(f >= i for f, i in zip(fwd, xb.shape[2:])):
        xb = np.pad(xb, [(0, 0), (0, 0)] + [(0, f - i) for f, i in zip(fwd, xb.shape[2:])])
    gx, spec = input_grad(nd, fn, in_size, w, xb, s, p, d, groups, "zeros", algorithm,
                          precision)
    if b is not None:
        gx = gx + b.astype(spec.dtype).reshape((1, -1) + (1,) * nd)
        gx = gx.astype(out_dtype, copy=False)
    return gx if batched else gx[0]


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algorithm="auto", device=None, precision=None):
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
    algorithm, device, precision :
        As for :func:`conv2d`.

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
                            output_padding, groups, dilation, algorithm, device, precision)
