"""GPU entry points: called by fastconv.conv*d / conv_transpose2d / grad for device="cuda"
or GPU arrays, and by the nn layers.

Contract (SPEC section 4): GPU arrays (anything with ``__cuda_array_interface__``: numba
device arrays, CuPy, PyTorch CUDA tensors) are used zero-copy and give numba device
arrays back; host input with ``device="cuda"`` is copied in, computed and copied back as a
``numpy.ndarray``. Every algorithm and parameter works as on the CPU; validation is the
CPU's (on shape proxies), so errors read the same.

Flow, as on the CPU: pad (a gather, any padding mode, casting to the compute dtype) ->
5-D -> plan (:func:`fastconv.dispatch.plan` with ``device="cuda"``) -> ``engine`` ->
reshape / cast.

Each entry point converts its GPU arguments to numba device arrays once, up front
(:func:`runtime.convert`). An empty batch (N == 0) returns the empty or zero result
before anything is chosen or launched. When ``algorithm="auto"`` picks ``fft`` and an
operand the FFT transforms holds NaN or inf (checked on the device: one launch, one flag
read back), the best non-FFT algorithm runs instead, as on the CPU: an FFT would spread
one NaN over the whole output.
"""
from __future__ import annotations

import numpy as np

from .. import dispatch
from .._arrays import proxy as host_proxy
from .._arrays import shape_proxy
from .._spec import out_size
from .._validate import (as_array, check_algorithm, check_grad_output, check_out,
                         compute_dtypes, conv_spec, input_size, transpose_args, weight_size)
from . import array_kernel, engine
from . import runtime as rt


# --- preparing arrays -------------------------------------------------------------------
def to_gpu(a, dtype=None):
    """Device array for ``a``: zero-copy when already on the GPU, else copied in (cast on
    the host first when ``dtype`` is given)."""
    if rt.is_device(a):
        return rt.as_device(a)
    return rt.to_device(np.asarray(a), dtype)


def _batched(a, batched):
    """(N, C, ...) view of an array that may lack the batch axis."""
    if batched:
        return a
    if rt.contiguous(a):
        return rt.reshape(a, (1,) + tuple(a.shape))
    return rt.strided(a, (1,) + tuple(a.shape), (0,) + rt.element_strides(a))


def dense5(a, nd, dtype, name):
    """C-contiguous 5-D device array in ``dtype`` for batched (N, C, *spatial) ``a``
    (zero-copy when it already is one; else one gather into a workspace)."""
    a5 = rt.view5(a, nd)
    if rt.contiguous(a5) and np.dtype(a5.dtype) == dtype:
        return a5
    return array_kernel.copy5(rt.workspace(name, a5.shape, dtype), a5)


def padded5(x, spec, name="xpad"):
    """The padded 5-D input of ``spec`` (zero-copy when no padding or cast is needed)."""
    x5 = rt.view5(x, spec.nd)
    if all(b == 0 and a == 0 for b, a in spec.padding):
        return dense5(x, spec.nd, spec.dtype, name)
    xp = rt.workspace(name, (spec.N, spec.C_in) + spec.lift(spec.padded_size), spec.dtype)
    return array_kernel.pad5(xp, x5, spec.padding3, spec.padding_mode)


def vector(b, dtype):
    """A contiguous 1-D device vector in ``dtype`` (bias)."""
    if b is None:
        return None
    if rt.is_device(b):
        return array_kernel.ascontiguous(rt.as_device(b, "bias"), dtype)
    return rt.to_device(np.asarray(b), dtype)


def _plan(spec, op, algorithm, run, a, b):
    """The registry entry to run (:func:`fastconv.dispatch.plan` on the GPU); ``a`` and
    ``b`` are the C-contiguous device operands checked for NaN/inf when that matters
    (one launch, one flag read back)."""
    def timed(entry):                          # autotuning: wait for the launches
        run(entry)
        rt.cuda().synchronize()

    return dispatch.plan(spec, op, algorithm, "cuda", timed,
                         lambda: array_kernel.all_finite(a, b))


def _finish(res5, shape, out_dtype, host):
    """Reshape the 5-D result, cast to the result dtype, copy out when host."""
    if np.dtype(res5.dtype) != out_dtype:
        cast = rt.empty(res5.shape, out_dtype)
        array_kernel.copy5(cast, res5)
        res5 = cast
    res = rt.reshape(res5, shape)
    return rt.to_host(res) if host else res


def _check_out(fn, out, shape, dtype, host):
    if host:
        check_out(fn, out, shape, dtype)
        return
    gpu = rt.is_device(out)
    check_out(fn, out, shape, dtype, gpu=(gpu, rt.gpu_dtype(out) if gpu else None,
                                          gpu and rt.contiguous(rt.as_device(out))))


# --- forward ----------------------------------------------------------------------------
def conv_forward(fn, spec, input, weight, bias, algorithm, out=None):
    """conv{nd}d on the GPU for a validated ``spec`` (built from shape proxies)."""
    rt.require(fn)
    host = not rt.is_device(input)
    input, weight, bias, out = rt.convert((input, weight, bias, out),
                                          ("input", "weight", "bias", "out"), fn)
    if out is not None:
        _check_out(fn, out, spec.out_shape, spec.out_dtype, host)
    if spec.N == 0:
        if out is not None:
            return out
        return (np.empty(spec.out_shape, spec.out_dtype) if host
                else rt.empty(spec.out_shape, spec.out_dtype))
    x = _batched(to_gpu(input, None if rt.is_device(input) else spec.dtype), spec.batched)
    w = to_gpu(weight, None if rt.is_device(weight) else spec.dtype)
    xp = padded5(x, spec)
    w5 = dense5(_batched(w, True), spec.nd, spec.dtype, "w5")
    b = vector(bias, spec.dtype)
    shape5 = (spec.N, spec.C_out) + spec.lift(spec.out_size)
    out5 = None
    if out is not None and not host and spec.out_dtype == spec.dtype:
        out5 = rt.reshape(rt.as_device(out), shape5)

    def run(entry, dst=None):
        return engine.forward(xp, w5, b, spec.stride3, spec.dilation3, spec.groups,
                              entry.kernels("cuda"), dst)

    res5 = run(_plan(spec, "forward", algorithm, run, xp, w5), out5)
    if out5 is not None:
        return out
    res = _finish(res5, spec.out_shape, spec.out_dtype, host)
    if out is None:
        return res
    if host:
        out[...] = res
    else:
        array_kernel.copy5(rt.reshape(rt.as_device(out), shape5), rt.reshape(res, shape5))
    return out


# --- gradients --------------------------------------------------------------------------
def input_grad(nd, fn, input_size_, weight, grad_output, stride, padding, dilation, groups,
               padding_mode, algorithm):
    """dL/dinput of conv{nd}d on the GPU. Returns (grad, spec); grad is a device array when
    ``grad_output`` or ``weight`` is one, else a host array."""
    check_algorithm(fn, algorithm, dispatch.ALGORITHM_NAMES)
    rt.require(fn)
    host = not (rt.is_device(grad_output) or rt.is_device(weight))
    weight, grad_output = rt.convert((weight, grad_output), ("weight", "grad_output"), fn)
    wp = as_array(shape_proxy(weight), "weight", fn)
    gop = as_array(shape_proxy(grad_output), "grad_output", fn)
    size = input_size(fn, nd, input_size_, gop.shape)
    dtype, _ = compute_dtypes(fn, {"weight": wp, "grad_output": gop})
    spec, _, _, _ = conv_spec(fn, nd, host_proxy(size, dtype), wp, None,
                              stride, padding, dilation, groups, padding_mode)
    check_grad_output(fn, gop.shape, spec)
    if spec.N == 0:
        z = np.zeros(size, spec.out_dtype)
        return (z if host else rt.to_device(z)), spec
    go = to_gpu(grad_output, None if rt.is_device(grad_output) else spec.dtype)
    go5 = dense5(_batched(go, spec.batched), nd, spec.dtype, "go5")
    w5 = dense5(to_gpu(weight, None if rt.is_device(weight) else spec.dtype), nd, spec.dtype, "w5")
    def run(entry):
        return engine.backward_input(go5, w5, spec.lift(spec.padded_size), spec.stride3,
                                     spec.dilation3, spec.groups, entry.kernels("cuda"))

    gxp = run(_plan(spec, "input_grad", algorithm, run, go5, w5))
    if any(b or a for b, a in spec.padding):
        gx = rt.empty((spec.N, spec.C_in) + spec.lift(spec.in_size), spec.dtype)
        array_kernel.pad5_adjoint(gx, gxp, spec.padding3, spec.padding_mode)
    else:
        gx = gxp
    return _finish(gx, size, spec.out_dtype, host), spec


def weight_grad(nd, fn, input, weight_size_, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm):
    """dL/dweight of conv{nd}d on the GPU (device array out when an input is one)."""
    check_algorithm(fn, algorithm, dispatch.ALGORITHM_NAMES)
    rt.require(fn)
    host = not (rt.is_device(input) or rt.is_device(grad_output))
    input, grad_output = rt.convert((input, grad_output), ("input", "grad_output"), fn)
    wsize = weight_size(fn, nd, weight_size_)
    xpx = as_array(shape_proxy(input), "input", fn)
    gop = as_array(shape_proxy(grad_output), "grad_output", fn)
    dtype, _ = compute_dtypes(fn, {"input": xpx, "grad_output": gop})
    spec, _, _, _ = conv_spec(fn, nd, host_proxy(xpx.shape, dtype), host_proxy(wsize, dtype),
                              None, stride, padding, dilation, groups, padding_mode)
    check_grad_output(fn, gop.shape, spec)
    if spec.N == 0:                      # an empty batch contributes nothing
        z = np.zeros(wsize, spec.out_dtype)
        return z if host else rt.to_device(z)
    x = _batched(to_gpu(input, None if rt.is_device(input) else spec.dtype), spec.batched)
    go = to_gpu(grad_output, None if rt.is_device(grad_output) else spec.dtype)
    go5 = dense5(_batched(go, spec.batched), nd, spec.dtype, "go5")
    xp = padded5(x, spec)
    def run(entry):
        return engine.backward_weight(xp, go5, spec.lift(spec.kernel), spec.stride3,
                                      spec.dilation3, spec.groups, entry.kernels("cuda"))

    gw = run(_plan(spec, "weight_grad", algorithm, run, xp, go5))
    return _finish(gw, wsize, spec.out_dtype, host)


# --- the transposed convolution ---------------------------------------------------------
def conv_transpose(fn, nd, input, weight, bias, stride, padding, output_padding, groups,
                   dilation, algorithm):
    """conv_transpose{nd}d on the GPU: the input gradient of conv{nd}d, plus bias."""
    check_algorithm(fn, algorithm, dispatch.ALGORITHM_NAMES)
    rt.require(fn)
    host = not rt.is_device(input)
    input, weight, bias = rt.convert((input, weight, bias), ("input", "weight", "bias"), fn)
    x = as_array(shape_proxy(input), "input", fn)
    w = as_array(shape_proxy(weight), "weight", fn)
    bp = None if bias is None else as_array(shape_proxy(bias), "bias", fn)
    s, p, d, op, batched, in_size = transpose_args(fn, nd, x.shape, w.shape,
                                                   None if bp is None else bp.shape, stride,
                                                   padding, output_padding, dilation, groups)
    xin = to_gpu(input) if rt.is_device(input) else to_gpu(np.asarray(input))
    xin = _batched(xin, batched)
    if bp is not None:       # a bias that widens the result dtype: compute in that dtype (CPU too)
        wide = compute_dtypes(fn, {"input": x, "weight": w, "bias": bp})[1]
        if wide != compute_dtypes(fn, {"input": x, "weight": w})[1]:
            xin = array_kernel.ascontiguous(xin, wide)
            weight = (array_kernel.ascontiguous(to_gpu(weight), wide) if rt.is_device(weight)
                      else np.asarray(weight).astype(wide))
    # output_padding >= stride (allowed when < dilation) makes the matching forward output
    # longer than the input: its extra positions carry zero gradient (as on the CPU)
    fwd = out_size(tuple(n + 2 * pi for n, pi in zip(in_size[2:], p)), w.shape[2:], s, d)
    have = tuple(xin.shape[2:])
    if fwd != have and all(f >= i for f, i in zip(fwd, have)):
        grown = rt.empty(tuple(xin.shape[:2]) + fwd, rt.gpu_dtype(xin))
        pads = ((0, 0),) * (3 - nd) + tuple((0, f - i) for f, i in zip(fwd, have))
        array_kernel.pad5(rt.view5(grown, nd), rt.view5(xin, nd), pads, "zeros")
        xin = grown
    gx, spec = input_grad(nd, fn, in_size, to_gpu(weight) if rt.is_device(weight) else weight,
                          xin, s, p, d, groups, "zeros", algorithm)
    # gx is a device array here (xin is on the GPU)
    if bp is not None:
        if spec.N:
            array_kernel.add_channel_bias(rt.view5(gx, nd), vector(bias, np.dtype(gx.dtype)))
    if not batched:
        gx = gx[0]
    return rt.to_host(gx) if host else gx
