"""Layer operations for training on the GPU, on numba device arrays (no host round trip).

Each op's backward sits next to its forward. Inputs may be any GPU array (used
zero-copy) or host arrays (copied in); results are numba device arrays. Convolutions
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

from . import gemm_kernel, nn_kernel
from . import runtime as rt


def _dev(a):
    rt.require("fastconv.cuda.nn_ops")
    return rt.as_device(a)


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(t) for t in v)


def _flat(a):
    return rt.flat(a)


def _launch(kernel, n, *args):
    blocks, threads = rt.grid1d(n)
    kernel[blocks, threads](*args)


# --- ReLU -------------------------------------------------------------------------------
def relu_forward(x):
    """max(x, 0), elementwise."""
    x = _dev(x)
    y = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._relu_fwd, x.size, _flat(y), _flat(x))
    return y


def relu_backward(grad_y, y):
    """Gradient of ReLU given its output ``y``: grad_y where y > 0."""
    gy, y = _dev(grad_y), _dev(y)
    gx = rt.empty(y.shape, y.dtype)
    _launch(nn_kernel._relu_bwd, y.size, _flat(gx), _flat(gy), _flat(y))
    return gx


# --- dropout ----------------------------------------------------------------------------
def dropout_forward(x, p, seed):
    """Inverted dropout: returns (y, mask) with mask in {0, 1/(1-p)}; ``seed`` picks the draw."""
    x = _dev(x)
    y = rt.empty(x.shape, x.dtype)
    mask = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._dropout, x.size, _flat(y), _flat(mask), _flat(x), float(p), int(seed))
    return y, mask


def dropout_backward(grad_y, mask):
    gy, mask = _dev(grad_y), _dev(mask)
    gx = rt.empty(gy.shape, gy.dtype)
    _launch(nn_kernel._mul, gy.size, _flat(gx), _flat(gy), _flat(mask))
    return gx


# --- pooling ----------------------------------------------------------------------------
def _pool_out(H, W, k, s, p):
    return (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling of (N, C, H, W); returns (y, argmax) with argmax as h * W + w (int32)."""
    x = _dev(x)
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    N, C, H, W = x.shape
    OH, OW = _pool_out(H, W, k, s, p)
    y = rt.empty((N, C, OH, OW), x.dtype)
    idx = rt.empty((N, C, OH, OW), np.int32)
    _launch(nn_kernel._maxpool_fwd, y.size, y, idx, x, k[0], k[1], s[0], s[1], p[0], p[1])
    return y, idx


def maxpool2d_backward(grad_y, argmax, input_shape, kernel_size, stride=None, padding=0):
    gy, idx = _dev(grad_y), _dev(argmax)
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    gx = rt.empty(tuple(input_shape), gy.dtype)
    _launch(nn_kernel._maxpool_bwd, gx.size, gx, gy, idx, k[0], k[1], s[0], s[1], p[0], p[1])
    return gx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """Average pooling of (N, C, H, W) (PyTorch's count_include_pad=True)."""
    x = _dev(x)
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    N, C, H, W = x.shape
    OH, OW = _pool_out(H, W, k, s, p)
    y = rt.empty((N, C, OH, OW), x.dtype)
    _launch(nn_kernel._avgpool_fwd, y.size, y, x, k[0], k[1], s[0], s[1], p[0], p[1],
            x.dtype.type(k[0] * k[1]))
    return y


def avgpool2d_backward(grad_y, input_shape, kernel_size, stride=None, padding=0):
    gy = _dev(grad_y)
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    gx = rt.empty(tuple(input_shape), gy.dtype)
    _launch(nn_kernel._avgpool_bwd, gx.size, gx, gy, k[0], k[1], s[0], s[1], p[0], p[1],
            gy.dtype.type(k[0] * k[1]))
    return gx


# --- linear -----------------------------------------------------------------------------
def linear_forward(x, weight, bias=None):
    """y = x @ weight.T + bias;  x: (B, in), weight: (out, in)."""
    x, w = _dev(x), _dev(weight)
    y = rt.empty((x.shape[0], w.shape[0]), x.dtype)
    gemm_kernel.gemm(y, x, w, None if bias is None else _dev(bias), trans_b=True)
    return y


def linear_backward(grad_y, x, weight, need_input_grad=True):
    """(grad_x, grad_weight, grad_bias) of :func:`linear_forward`."""
    gy, x, w = _dev(grad_y), _dev(x), _dev(weight)
    gx = None
    if need_input_grad:
        gx = rt.empty(x.shape, x.dtype)
        gemm_kernel.gemm(gx, gy, w)                       # (B, out) @ (out, in)
    gw = rt.empty(w.shape, w.dtype)
    gemm_kernel.gemm(gw, gy, x, trans_a=True)             # (out, B) @ (B, in)
    return gx, gw, bias_grad(gy)


def bias_grad(grad_y):
    """Sum of (N, C, ...) gradients over every axis but C: the bias gradient."""
    gy = _dev(grad_y)
    N, C = gy.shape[:2]
    inner = int(np.prod(gy.shape[2:], dtype=np.int64))
    out = rt.empty((C,), gy.dtype)
    blocks = min(C, 4 if rt.simulator() else 65535)
    nn_kernel._channel_sum[blocks, nn_kernel.RT](out, _flat(gy), inner)
    return out


# --- log-softmax and NLL ----------------------------------------------------------------
def log_softmax_forward(x):
    """log_softmax over dim 1 of (B, K)."""
    x = _dev(x)
    y = rt.empty(x.shape, x.dtype)
    _launch(nn_kernel._log_softmax_fwd, x.shape[0], y, x)
    return y


def log_softmax_backward(grad_y, y):
    gy, y = _dev(grad_y), _dev(y)
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


def nll_loss_forward(logp, target):
    """Mean negative log-likelihood; a (1,) device array (read it with ``float(a[0])``)."""
    logp = _dev(logp)
    loss = rt.empty((1,), logp.dtype)
    nn_kernel._nll_fwd[1, nn_kernel.RT](loss, logp, _targets(target), 1.0 / logp.shape[0])
    return loss


def nll_loss_backward(shape, target, dtype=np.float32):
    """Gradient of the mean NLL with respect to the log-probabilities."""
    g = rt.empty(tuple(shape), dtype)
    _launch(nn_kernel._nll_bwd, g.size, g, _targets(target), 1.0 / shape[0])
    return g


def count_correct(scores, target):
    """Number of rows whose argmax equals the target: a (1,) float64 device array."""
    scores = _dev(scores)
    count = rt.empty((1,), np.float64)
    nn_kernel._count_correct[1, nn_kernel.RT](count, scores, _targets(target))
    return count


# --- optimisers and helpers -------------------------------------------------------------
def sgd_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, first=False):
    """PyTorch's SGD update, in place on device arrays (``buf``: the momentum buffer)."""
    p, g, b = _dev(param), _dev(grad), _dev(buf)
    _launch(nn_kernel._sgd, p.size, _flat(p), _flat(g), _flat(b), float(lr), float(momentum),
            float(dampening), float(weight_decay), bool(nesterov), bool(first))


def adam_step(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """PyTorch's Adam update (step counts from 1), in place."""
    p, g, m, v = _dev(param), _dev(grad), _dev(m), _dev(v)
    b1, b2 = betas
    _launch(nn_kernel._adam, p.size, _flat(p), _flat(g), _flat(m), _flat(v), float(lr),
            float(b1), float(b2), float(eps), float(weight_decay), 1.0 - b1 ** step,
            1.0 - b2 ** step)


def axpy(y, a, x):
    """y += a * x in place (gradient accumulation)."""
    y, x = _dev(y), _dev(x)
    _launch(nn_kernel._axpy, y.size, _flat(y), y.dtype.type(a), _flat(x))
    return y


def zeros(shape, dtype=np.float32):
    return rt.zeros(shape, dtype)


def zeros_like(a):
    return rt.zeros(a.shape, a.dtype)
