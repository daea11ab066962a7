"""Layer operations for training on the GPU, on numba device arrays (no host round trip).

Each op's backward sits next to its forward. Inputs may be any GPU array (used
zero-copy; a non-contiguous one is first gathered into a contiguous copy on the device,
as the kernels read flat buffers) or host arrays (copied in); results are numba device
arrays. Arguments updated in place (optimiser parameters and state, ``axpy``'s ``y``)
must be C-contiguous GPU arrays: anything else raises, since a copy would silently drop
the update. Empty arrays launch nothing. Convolutions
themselves go through :func:`fastconv.conv2d` / :mod:`fastconv.grad`, which accept the
same device arrays; :func:`bias_grad` gives the bias gradient.

>>> import numpy as np                                  # doctest: +SKIP
>>> from fastconv.cuda import nn_ops                    # doctest: +SKIP
>>> y = nn_ops.relu_forward(np.array([-1., 2.]))        # doctest: +SKIP
>>> y.copy_to_host()                                    # doctest: +SKIP
array([0., 2.])
"""
from __future__ import annotations

import numpy as np

from .._spec import out_size
from . import array_kernel, gemm_kernel, nn_kernel
from . import runtime as rt


def _dev(a, name="input", fn="fastconv.cuda.nn_ops"):
    """A C-contiguous device array for an argument that is only read."""
    rt.require(fn)
    return array_kernel.ascontiguous(rt.as_device(a, name, fn))


def _inplace(a, name, fn):
    """The device array of an argument updated in place: it must be a C-contiguous GPU
    array (a copy would silently lose the update)."""
    rt.require(fn)
    if not rt.is_device(a):
        raise TypeError(f"{fn}: {name} is updated in place and must be a GPU array, got "
                        f"{type(a).__name__}")
    d = rt.as_device(a, name, fn)
    if not rt.contiguous(d):
        raise ValueError(f"{fn}: {name} is updated in place and must be C-contiguous, got "
                         f"shape {tuple(d.shape)} with strides {tuple(d.strides)}")
    return d


def _same_size(fn, name, a, ref_name, ref):
    if a.size != ref.size:
        raise ValueError(f"{fn}: {name} has shape {tuple(a.shape)} but {ref_name} has shape "
                         f"{tuple(ref.shape)}")


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(t) for t in v)


def _flat(a):
    return rt.flat(a)


def _launch(kernel, n, *args):
    if n == 0:              # nothing to do (real CUDA rejects a zero-sized grid anyway)
        return
    blocks, threads = rt.grid1d(n)
    kernel[blocks, threads](*args)


# --- ReLU -------------------------------------------------------------------------------
def relu_forward(x):
    """max(x, 0), elementwise."""
    x = _dev(x, "x")
    y = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._relu_fwd, x.size, _flat(y), _flat(x))
    return y


def relu_backward(grad_y, y):
    """Gradient of ReLU given its output ``y``: 0 where y <= 0, else grad_y."""
    gy, y = _dev(grad_y, "grad_y"), _dev(y, "y")
    gx = rt.empty(y.shape, y.dtype)
    _launch(nn_kernel._relu_bwd, y.size, _flat(gx), _flat(gy), _flat(y))
    return gx


# --- dropout ----------------------------------------------------------------------------
def dropout_forward(x, p, seed):
    """Inverted dropout: returns (y, mask) with mask in {0, 1/(1-p)}; ``seed`` picks the draw."""
    x = _dev(x, "x")
    y = rt.empty(x.shape, x.dtype)
    mask = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._dropout, x.size, _flat(y), _flat(mask), _flat(x), float(p), int(seed))
    return y, mask


def dropout_backward(grad_y, mask):
    gy, mask = _dev(grad_y, "grad_y"), _dev(mask, "mask")
    gx = rt.empty(gy.shape, gy.dtype)
    _launch(nn_kernel._mul, gy.size, _flat(gx), _flat(gy), _flat(mask))
    return gx


# --- pooling ----------------------------------------------------------------------------
def _pool_out(H, W, k, s, p):
    return out_size((H + 2 * p[0], W + 2 * p[1]), k, s, (1, 1))


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, out_size=None):
    """Max pooling of (N, C, H, W); returns (y, argmax) with argmax as h * W + w (int32).

    ``out_size`` (OH, OW) overrides the floor-mode output size (``ceil_mode``: windows
    that run past the edge pool over their part inside)."""
    x = _dev(x, "x")
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    N, C, H, W = x.shape
    OH, OW = _pool_out(H, W, k, s, p) if out_size is None else out_size
    y = rt.empty((N, C, OH, OW), x.dtype)
    idx = rt.empty((N, C, OH, OW), np.int32)
    _launch(nn_kernel._maxpool_fwd, y.size, y, idx, x, k[0], k[1], s[0], s[1], p[0], p[1])
    return y, idx


def maxpool2d_backward(grad_y, argmax, input_shape, kernel_size, stride=None, padding=0):
    gy, idx = _dev(grad_y, "grad_y"), _dev(argmax, "argmax")
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    gx = rt.empty(tuple(input_shape), gy.dtype)
    _launch(nn_kernel._maxpool_bwd, gx.size, gx, gy, idx, k[0], k[1], s[0], s[1], p[0], p[1])
    return gx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, divisor=None):
    """Average pooling of (N, C, H, W) (PyTorch's count_include_pad=True): each window sum
    divided by ``divisor`` (default: the window size kH * kW)."""
    x = _dev(x, "x")
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    N, C, H, W = x.shape
    OH, OW = _pool_out(H, W, k, s, p)
    y = rt.empty((N, C, OH, OW), x.dtype)
    _launch(nn_kernel._avgpool_fwd, y.size, y, x, k[0], k[1], s[0], s[1], p[0], p[1],
            x.dtype.type(k[0] * k[1] if divisor is None else divisor))
    return y


def avgpool2d_backward(grad_y, input_shape, kernel_size, stride=None, padding=0, divisor=None):
    gy = _dev(grad_y, "grad_y")
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    gx = rt.empty(tuple(input_shape), gy.dtype)
    _launch(nn_kernel._avgpool_bwd, gx.size, gx, gy, k[0], k[1], s[0], s[1], p[0], p[1],
            gy.dtype.type(k[0] * k[1] if divisor is None else divisor))
    return gx


# --- linear -----------------------------------------------------------------------------
def linear_forward(x, weight, bias=None):
    """y = x @ weight.T + bias;  x: (B, in), weight: (out, in)."""
    x, w = _dev(x, "x"), _dev(weight, "weight")
    y = rt.empty((x.shape[0], w.shape[0]), x.dtype)
    gemm_kernel.gemm(y, x, w, None if bias is None else _dev(bias, "bias"), trans_b=True)
    return y


def linear_backward(grad_y, x, weight, need_input_grad=True, need_bias_grad=True):
    """(grad_x, grad_weight, grad_bias) of :func:`linear_forward` (None for the gradients
    not needed)."""
    gy, x, w = _dev(grad_y, "grad_y"), _dev(x, "x"), _dev(weight, "weight")
    gx = None
    if need_input_grad:
        gx = rt.empty(x.shape, x.dtype)
        gemm_kernel.gemm(gx, gy, w)                       # (B, out) @ (out, in)
    gw = rt.empty(w.shape, w.dtype)
    gemm_kernel.gemm(gw, gy, x, trans_a=True)             # (out, B) @ (B, in)
    return gx, gw, (bias_grad(gy) if need_bias_grad else None)


def bias_grad(grad_y):
    """Sum of (N, C, ...) gradients over every axis but C: the bias gradient."""
    gy = _dev(grad_y, "grad_y")
    N, C = gy.shape[:2]
    inner = int(np.prod(gy.shape[2:], dtype=np.int64))
    out = rt.empty((C,), gy.dtype)
    if C == 0:
        return out
    if N * inner == 0:
        return array_kernel.zeros((C,), gy.dtype)
    blocks = min(C, 4 if rt.simulator() else 65535)
    nn_kernel._channel_sum[blocks, nn_kernel.RT](out, _flat(gy), inner)
    return out


# --- log-softmax and NLL ----------------------------------------------------------------
def log_softmax_forward(x):
    """log_softmax over dim 1 of (B, K)."""
    x = _dev(x, "x")
    y = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._log_softmax_fwd, x.shape[0], y, x)
    return y


def log_softmax_backward(grad_y, y):
    gy, y = _dev(grad_y, "grad_y"), _dev(y, "y")
    gx = rt.empty(y.shape, y.dtype)
    _launch(nn_kernel._log_softmax_bwd, y.shape[0], gx, gy, y)
    return gx


def _targets(target):
    if rt.is_device(target):
        t = rt.as_device(target)
        if np.dtype(t.dtype) == np.int64:
            return t
        return rt.to_device(t.copy_to_host(), np.int64)
    return rt.to_device(np.asarray(target), np.int64)


def nll_loss_forward(logp, target, scale=None):
    """Mean negative log-likelihood; a (1,) device array (read it with ``float(a[0])``).

    ``scale`` multiplies the sum instead of ``1 / B`` (1.0: the summed loss)."""
    logp = _dev(logp, "logp")
    loss = rt.empty((1,), logp.dtype)
    if scale is None:       # the mean over no rows is NaN (as PyTorch)
        scale = 1.0 / logp.shape[0] if logp.shape[0] else float("nan")
    scale = float(scale)
    nn_kernel._nll_fwd[1, nn_kernel.RT](loss, logp, _targets(target), scale)
    return loss


def nll_loss_backward(shape, target, dtype=np.float32, scale=None):
    """Gradient of the mean NLL (or of ``scale`` times the sum) with respect to the
    log-probabilities."""
    g = rt.empty(tuple(shape), dtype)
    if scale is None:
        scale = 1.0 / shape[0] if shape[0] else float("nan")
    scale = float(scale)
    _launch(nn_kernel._nll_bwd, g.size, g, _targets(target), scale)
    return g


def count_correct(scores, target):
    """Number of rows whose argmax equals the target: a (1,) float64 device array."""
    scores = _dev(scores, "scores")
    count = rt.empty((1,), np.float64)
    nn_kernel._count_correct[1, nn_kernel.RT](count, scores, _targets(target))
    return count


# --- optimisers and helpers -------------------------------------------------------------
def sgd_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, first=False, maximize=False):
    """PyTorch's SGD update, in place on device arrays (``buf``: the momentum buffer,
    written from ``grad`` when ``first``; unused when ``momentum`` is 0)."""
    fn = "sgd_step"
    p = _inplace(param, "param", fn)
    g = _dev(grad, "grad", fn)
    _same_size(fn, "grad", g, "param", p)
    if float(momentum) != 0:
        b = _inplace(buf, "buf", fn)
        _same_size(fn, "buf", b, "param", p)
    else:
        b = g               # the kernel does not touch the buffer without momentum
    _launch(nn_kernel._sgd, p.size, _flat(p), _flat(g), _flat(b), float(lr), float(momentum),
            float(dampening), float(weight_decay), bool(nesterov), bool(first),
            -1.0 if maximize else 1.0)


def adam_step(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, vmax=None, maximize=False):
    """PyTorch's Adam update (step counts from 1), in place (``vmax``: AMSGrad's running
    maximum of ``v``, needed when ``amsgrad``)."""
    fn = "adam_step"
    if amsgrad and vmax is None:
        raise ValueError("adam_step: amsgrad needs the vmax buffer")
    p = _inplace(param, "param", fn)
    g = _dev(grad, "grad", fn)
    m, v = _inplace(m, "m", fn), _inplace(v, "v", fn)
    vm = _inplace(vmax, "vmax", fn) if amsgrad else v   # unused without amsgrad
    for name, a in (("grad", g), ("m", m), ("v", v), ("vmax", vm)):
        _same_size(fn, name, a, "param", p)
    b1, b2 = betas
    _launch(nn_kernel._adam, p.size, _flat(p), _flat(g), _flat(m), _flat(v), _flat(vm),
            float(lr), float(b1), float(b2), float(eps), float(weight_decay), 1.0 - b1 ** step,
            1.0 - b2 ** step, bool(amsgrad), -1.0 if maximize else 1.0)


def take(src, index):
    """Rows ``src[index]`` of a C-contiguous device array (a gather on the GPU: batches of a
    shuffled data set without a host round trip).

    >>> import numpy as np                                          # doctest: +SKIP
    >>> from fastconv.cuda import nn_ops                            # doctest: +SKIP
    >>> nn_ops.take(np.arange(6.).reshape(3, 2), np.array([2, 0])).copy_to_host()  # doctest: +SKIP
    array([[4., 5.],
           [0., 1.]])
    """
    rt.require("take")
    src = rt.as_device(src, "src", "take")   # not copied: a whole data set, typically
    if not rt.contiguous(src) or src.ndim == 0:
        raise ValueError(f"take: src must be a C-contiguous array with a row axis, "
                         f"got shape {tuple(src.shape)}")
    if rt.is_device(index):
        idx = rt.as_device(index, "index", "take")
    else:
        host = np.asarray(index)
        if host.ndim != 1 or host.dtype.kind not in "iu":
            raise TypeError(f"take: index must be a 1-D integer array, got {host.dtype} "
                            f"{host.shape}")
        if host.size and (host.min() < 0 or host.max() >= src.shape[0]):
            raise IndexError(f"take: index out of range for {src.shape[0]} rows")
        idx = rt.to_device(host, np.int64)
    if idx.ndim != 1:
        raise ValueError(f"take: index must be 1-D, got shape {tuple(idx.shape)}")
    row = int(np.prod(src.shape[1:], dtype=np.int64))
    out = rt.empty((idx.shape[0],) + tuple(src.shape[1:]), src.dtype)
    if out.size:
        _launch(nn_kernel._take_rows, out.size, _flat(out), _flat(src), idx, row)
    return out


def axpy(y, a, x):
    """y += a * x in place (gradient accumulation)."""
    y = _inplace(y, "y", "axpy")
    x = _dev(x, "x", "axpy")
    _same_size("axpy", "x", x, "y", y)
    _launch(nn_kernel._axpy, y.size, _flat(y), y.dtype.type(a), _flat(x))
    return y


def zeros(shape, dtype=np.float32):
    return array_kernel.zeros(shape, dtype)


def zeros_like(a):
    return array_kernel.zeros(a.shape, a.dtype)
