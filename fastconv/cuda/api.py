"""GPU entry points: called by fastconv.conv*d / conv_transpose2d / grad for device="cuda"
or GPU arrays, and by the nn layers.

Contract (SPEC section 4): GPU arrays (anything with ``__cuda_array_interface__``: numba
device arrays, CuPy, PyTorch CUDA tensors) are used zero-copy and give numba device
arrays back; host input with ``device="cuda"`` is copied in, computed and copied back as a
``numpy.ndarray``. Every algorithm and parameter works as on the CPU; validation is the
CPU's (on shape proxies), so errors read the same.

Flow, as on the CPU: pad (a gather, any padding mode, casting to the compute dtype) ->
5-D -> choose (``cost.select``) -> ``engine`` -> reshape / cast.

Each entry point converts its GPU arguments to numba device arrays once, up front
(:func:`runtime.convert`). An empty batch (N == 0) returns the empty or zero result
before anything is chosen or launched. When ``algorithm="auto"`` picks ``fft`` and an
operand the FFT transforms holds NaN or inf (checked on the device: one launch, one flag
read back), the best non-FFT algorithm runs instead, as on the CPU: an FFT would spread
one NaN over the whole output.
"""
from __future__ import annotations

import numpy as np

from .._conv import _check_grad_output, _split_input_size
from .._validate import as_array, check_algorithm, compute_dtypes, conv_spec, transpose_args
from . import cost, engine, pad_kernel
from . import runtime as rt


# --- preparing arrays -------------------------------------------------------------------
def proxy(a, name="argument", fn="fastconv"):
    """A host stand-in (zero-strided, no copy) carrying a GPU array's shape and dtype.

    A tensor that refuses ``__cuda_array_interface__`` (PyTorch, ``requires_grad=True``)
    gets a stand-in from its own ``shape`` and ``dtype`` when those read as NumPy's, so
    that validation passes and the entry point's conversion raises the TypeError that
    names the parameter."""
    if a is None or not rt.is_device(a):
        return a
    try:
        dtype = rt.gpu_dtype(a, name, fn)
    except TypeError as exc:
        try:
            dtype = np.dtype(str(a.dtype).rpartition(".")[2])
        except Exception:
            raise exc from None
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(a.shape))


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
    return pad_kernel.copy5(rt.workspace(name, a5.shape, dtype), a5)


def padded5(x, spec, name="xpad"):
    """The padded 5-D input of ``spec`` (zero-copy when no padding or cast is needed)."""
    x5 = rt.view5(x, spec.nd)
    if all(b == 0 and a == 0 for b, a in spec.padding):
        return dense5(x, spec.nd, spec.dtype, name)
    xp = rt.workspace(name, (spec.N, spec.C_in) + spec.lift(spec.padded_size), spec.dtype)
    return pad_kernel.pad5(xp, x5, spec.padding3, spec.padding_mode)


def vector(b, dtype):
    """A contiguous 1-D device vector in ``dtype`` (bias)."""
    if b is None:
        return None
    if rt.is_device(b):
        return rt.ascontiguous(rt.as_device(b, "bias"), dtype)
    return rt.to_device(np.asarray(b), dtype)


def _no_fft_on_nonfinite(spec, algorithm, algo, a, b):
    """``algo``, or the best non-FFT algorithm when ``auto`` chose fft and the transformed
    operands ``a`` or ``b`` (C-contiguous device arrays) hold NaN or inf."""
    if algorithm == "auto" and algo == "fft" and not pad_kernel.all_finite(a, b):
        return cost.without_fft(spec)
    return algo


def _finish(res5, shape, out_dtype, host):
    """Reshape the 5-D result, cast to the result dtype, copy out when host."""
    if np.dtype(res5.dtype) != out_dtype:
        cast = rt.empty(res5.shape, out_dtype)
        pad_kernel.copy5(cast, res5)
        res5 = cast
    res = rt.reshape(res5, shape)
    return rt.to_host(res) if host else res


def _check_out(fn, out, shape, dtype, host):
    if host:
        from .._validate import check_out
        check_out(fn, out, shape, dtype)
        return
    if not rt.is_device(out):
        raise TypeError(f"{fn}: out must be a GPU array when the input is one, "
                        f"got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out has shape {tuple(out.shape)} but the result has shape "
                         f"{tuple(shape)}")
    if rt.gpu_dtype(out) != dtype:
        raise TypeError(f"{fn}: out has dtype {rt.gpu_dtype(out)} but the result has dtype {dtype}")
    if not rt.contiguous(rt.as_device(out)):
        raise ValueError(f"{fn}: out must be C-contiguous (shape {tuple(out.shape)})")


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

    def run(algo, dst=None):
        return engine.forward(xp, w5, b, spec.stride3, spec.dilation3, spec.groups, algo, dst)

    algo = _no_fft_on_nonfinite(spec, algorithm, cost.select(spec, algorithm, run), xp, w5)
    res5 = run(algo, out5)
    if out5 is not None:
        return out
    res = _finish(res5, spec.out_shape, spec.out_dtype, host)
    if out is None:
        return res
    if host:
        out[...] = res
    else:
        pad_kernel.copy5(rt.reshape(rt.as_device(out), shape5), rt.reshape(res, shape5))
    return out


# --- gradients --------------------------------------------------------------------------
def input_grad(nd, fn, input_size, weight, grad_output, stride, padding, dilation, groups,
               padding_mode, algorithm):
    """dL/dinput of conv{nd}d on the GPU. Returns (grad, spec); grad is a device array when
    ``grad_output`` or ``weight`` is one, else a host array."""
    check_algorithm(fn, algorithm)
    rt.require(fn)
    host = not (rt.is_device(grad_output) or rt.is_device(weight))
    weight, grad_output = rt.convert((weight, grad_output), ("weight", "grad_output"), fn)
    size = _split_input_size(fn, nd, input_size)
    wp = as_array(proxy(weight), "weight", fn)
    gop = as_array(proxy(grad_output), "grad_output", fn)
    dtype, _ = compute_dtypes(fn, wp, gop)
    spec, _, _, _ = conv_spec(fn, nd, np.broadcast_to(np.zeros((), dtype), size), wp, None,
                              stride, padding, dilation, groups, padding_mode)
    _check_grad_output(fn, gop, spec)
    if spec.N == 0:
        z = np.zeros(size, spec.out_dtype)
        return (z if host else rt.to_device(z)), spec
    go = to_gpu(grad_output, None if rt.is_device(grad_output) else spec.dtype)
    go5 = dense5(_batched(go, spec.batched), nd, spec.dtype, "go5")
    w5 = dense5(to_gpu(weight, None if rt.is_device(weight) else spec.dtype), nd, spec.dtype, "w5")
    algo = _no_fft_on_nonfinite(spec, algorithm, cost.select(spec, algorithm), go5, w5)
    gxp = engine.backward_input(go5, w5, spec.lift(spec.padded_size), spec.stride3,
                                spec.dilation3, spec.groups, algo)
    if any(b or a for b, a in spec.padding):
        gx = rt.empty((spec.N, spec.C_in) + spec.lift(spec.in_size), spec.dtype)
        pad_kernel.pad5_adjoint(gx, gxp, spec.padding3, spec.padding_mode)
    else:
        gx = gxp
    return _finish(gx, size, spec.out_dtype, host), spec


def weight_grad(nd, fn, input, weight_size, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm):
    """dL/dweight of conv{nd}d on the GPU (device array out when an input is one)."""
    check_algorithm(fn, algorithm)
    rt.require(fn)
    host = not (rt.is_device(input) or rt.is_device(grad_output))
    input, grad_output = rt.convert((input, grad_output), ("input", "grad_output"), fn)
    wsize = tuple(int(s) for s in weight_size)
    if len(wsize) != nd + 2:
        raise ValueError(f"{fn}: weight_size must have {nd + 2} entries (C_out, C_in/groups, "
                         f"*kernel), got {tuple(weight_size)}")
    xpx = as_array(proxy(input), "input", fn)
    gop = as_array(proxy(grad_output), "grad_output", fn)
    dtype, _ = compute_dtypes(fn, xpx, gop)
    spec, _, _, _ = conv_spec(fn, nd, np.broadcast_to(np.zeros((), dtype), xpx.shape),
                              np.broadcast_to(np.zeros((), dtype), wsize), None, stride, padding,
                              dilation, groups, padding_mode)
    _check_grad_output(fn, gop, spec)
    if spec.N == 0:                      # an empty batch contributes nothing
        z = np.zeros(wsize, spec.out_dtype)
        return z if host else rt.to_device(z)
    x = _batched(to_gpu(input, None if rt.is_device(input) else spec.dtype), spec.batched)
    go = to_gpu(grad_output, None if rt.is_device(grad_output) else spec.dtype)
    go5 = dense5(_batched(go, spec.batched), nd, spec.dtype, "go5")
    xp = padded5(x, spec)
    algo = _no_fft_on_nonfinite(spec, algorithm, cost.select(spec, algorithm), xp, go5)
    gw = engine.backward_weight(xp, go5, spec.lift(spec.kernel), spec.stride3, spec.dilation3,
                                spec.groups, algo)
    return _finish(gw, wsize, spec.out_dtype, host)


# --- the transposed convolution ---------------------------------------------------------
def conv_transpose(fn, nd, input, weight, bias, stride, padding, output_padding, groups,
                   dilation, algorithm):
    """conv_transpose{nd}d on the GPU: the input gradient of conv{nd}d, plus bias."""
    check_algorithm(fn, algorithm)
    rt.require(fn)
    host = not rt.is_device(input)
    input, weight, bias = rt.convert((input, weight, bias), ("input", "weight", "bias"), fn)
    x = as_array(proxy(input), "input", fn)
    w = as_array(proxy(weight), "weight", fn)
    s, p, d, op, batched, in_size = transpose_args(fn, nd, x.shape, w.shape, stride, padding,
                                                   output_padding, dilation, groups)
    bp = None if bias is None else as_array(proxy(bias), "bias", fn)
    if bp is not None and bp.shape != (in_size[1],):
        raise ValueError(f"{fn}: bias must have shape ({in_size[1]},) to match weight shape "
                         f"{w.shape} and groups={groups}, got {bp.shape}")
    xin = to_gpu(input) if rt.is_device(input) else to_gpu(np.asarray(input))
    xin = _batched(xin, batched)
    if bp is not None:       # a bias that widens the result dtype: compute in that dtype (CPU too)
        wide = compute_dtypes(fn, x, w, bp)[1]
        if wide != compute_dtypes(fn, x, w)[1]:
            xin = rt.ascontiguous(xin, wide)
            weight = (rt.ascontiguous(to_gpu(weight), wide) if rt.is_device(weight)
                      else np.asarray(weight).astype(wide))
    # output_padding >= stride (allowed when < dilation) makes the matching forward output
    # longer than the input: its extra positions carry zero gradient (as on the CPU)
    size = in_size[2:]
    fwd = tuple((n + 2 * pi - di * (k - 1) - 1) // si + 1
                for n, pi, di, k, si in zip(size, p, d, w.shape[2:], s))
    have = tuple(xin.shape[2:])
    if fwd != have and all(f >= i for f, i in zip(fwd, have)):
        grown = rt.empty(tuple(xin.shape[:2]) + fwd, rt.gpu_dtype(xin))
        pads = ((0, 0),) * (3 - nd) + tuple((0, f - i) for f, i in zip(fwd, have))
        pad_kernel.pad5(rt.view5(grown, nd), rt.view5(xin, nd), pads, "zeros")
        xin = grown
    gx, spec = input_grad(nd, fn, in_size, to_gpu(weight) if rt.is_device(weight) else weight,
                          xin, s, p, d, groups, "zeros", algorithm)
    # gx is a device array here (xin is on the GPU)
    if bp is not None:
        if spec.N:
            pad_kernel.add_channel_bias(rt.view5(gx, nd), vector(bias, np.dtype(gx.dtype)))
    if not batched:
        gx = gx[0]
    return rt.to_host(gx) if host else gx
