"""The layers' and losses' GPU paths: numba device arrays in, device arrays out.

A layer runs here when its input is a GPU array (``model.to("cuda")`` puts the
parameters on the device). This module is imported on the first such call only, so a
CPU-only install never imports numba.cuda. The heavy lifting is in
:mod:`fastconv.cuda.nn_ops` (activations, pooling, linear, softmax / NLL) and behind
:func:`fastconv.conv2d` / :mod:`fastconv.grad` (convolutions on device arrays).

What the GPU kernels do not cover raises ``NotImplementedError`` naming the option:
max pooling with dilation, average pooling whose windows are clipped (``ceil_mode``
with a partial last window, ``count_include_pad=False`` with padding), log-softmax over
anything but the last axis of (N, C) scores, and losses with class weights,
``reduction='none'`` or ``ignore_index`` targets.
"""
from __future__ import annotations

import numpy as np

from .._arrays import is_gpu_array
from .._conv import conv2d, input_grad, weight_grad
from ..cuda import array_kernel, nn_ops
from ..cuda import runtime as rt
from . import functional as F

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# --- arrays -------------------------------------------------------------------------------
def check_params(layer):
    """A clear error when a GPU input meets parameters still on the host."""
    for p in layer._parameters.values():
        if p is not None and not is_gpu_array(p.data):
            raise RuntimeError(f"{type(layer).__name__}: the input is a GPU array but the "
                               f"parameters are on the CPU; move the model first with "
                               f"model.to('cuda')")


def dense(x, dtype=None, fn="input", name="input"):
    """``x`` as a C-contiguous device array of ``dtype`` (default: float32 and float64 kept,
    every other dtype cast to float32, as on the CPU); no copy when it already is one,
    else one gather on the device (no host round trip)."""
    a = rt.as_device(x, name, fn)
    dt = np.dtype(a.dtype)
    if dt.kind == "c":
        raise TypeError(f"{fn}: {name} must be a real numeric array, got dtype {dt}")
    if dtype is None:
        dtype = dt if dt in _FLOATS else np.dtype(np.float32)
    return array_kernel.ascontiguous(a, dtype)


def _batch4(a):
    """(C, H, W) -> (1, C, H, W); 4-D as it is."""
    return a if a.ndim == 4 else rt.reshape(a, (1,) + tuple(a.shape))


def _back(a, shape):
    # (device arrays' shapes are compared as tuples: the simulator's reject negative indices)
    return a if tuple(a.shape) == tuple(shape) else rt.reshape(a, shape)


# --- Conv2d -------------------------------------------------------------------------------
def _conv_kw(layer):
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                groups=layer.groups, padding_mode=layer.padding_mode, algorithm=layer.algorithm)


def conv2d_forward(layer, x):
    check_params(layer)
    w = layer.weight.data
    x = dense(x, w.dtype, "Conv2d")
    b = None if layer.bias is None else layer.bias.data
    kw = _conv_kw(layer)
    y = conv2d(x, w, b, kw.pop("stride"), kw.pop("padding"), kw.pop("dilation"),
               kw.pop("groups"), **kw)
    layer._keep(x=x)
    return y


def conv2d_backward(layer, grad_output, input_grad_):
    x = layer._take()["x"]
    w = layer.weight.data
    go = dense(grad_output, w.dtype, "Conv2d.backward", "grad_output")
    kw = _conv_kw(layer)
    args = (kw["stride"], kw["padding"], kw["dilation"], kw["groups"], kw["padding_mode"],
            kw["algorithm"])
    if layer.weight.requires_grad:
        layer.weight.accumulate(weight_grad(2, "Conv2d.backward", x, tuple(w.shape), go, *args))
    if layer.bias is not None and layer.bias.requires_grad:
        layer.bias.accumulate(nn_ops.bias_grad(_batch4(go)))
    if not input_grad_:
        return None
    return input_grad(2, "Conv2d.backward", tuple(x.shape), w, go, *args)[0]


# --- Linear -------------------------------------------------------------------------------
def linear_forward(layer, x):
    check_params(layer)
    w = layer.weight.data
    x = dense(x, w.dtype, "Linear")
    if x.ndim == 0 or tuple(x.shape)[-1] != layer.in_features:
        raise ValueError(f"Linear: input of shape {tuple(x.shape)} does not end in "
                         f"in_features={layer.in_features}")
    rows = x.size // max(layer.in_features, 1) if layer.in_features else 0
    x2 = _back(x, (rows, layer.in_features))
    y = nn_ops.linear_forward(x2, w, None if layer.bias is None else layer.bias.data)
    layer._keep(x=x2, shape=tuple(x.shape))
    return _back(y, tuple(x.shape)[:-1] + (layer.out_features,))


def linear_backward(layer, grad_output, input_grad_):
    ctx = layer._take()
    x2, shape = ctx["x"], ctx["shape"]
    w = layer.weight.data
    go = dense(grad_output, w.dtype, "Linear.backward", "grad_output")
    F.check_grad_shape("Linear.backward", go, shape[:-1] + (layer.out_features,))
    bias = layer.bias is not None and layer.bias.requires_grad
    gx, gw, gb = nn_ops.linear_backward(_back(go, (x2.shape[0], layer.out_features)), x2, w,
                                        input_grad_, bias)
    if layer.weight.requires_grad:
        layer.weight.accumulate(gw)
    if bias:
        layer.bias.accumulate(gb)
    return None if gx is None else _back(gx, shape)


# --- activations --------------------------------------------------------------------------
def relu_forward(layer, x):
    y = nn_ops.relu_forward(dense(x, None, "ReLU"))
    layer._keep(y=y)
    return y


def relu_backward(grad_output, y):
    return nn_ops.relu_backward(dense(grad_output, y.dtype, "ReLU.backward", "grad_output"), y)


def dropout_forward(layer, x, gen):
    a = dense(x, None, "Dropout")
    if not layer.training or layer.p == 0:
        layer._keep(scale=None)
        return a
    if layer.p < 1:
        seed = int(gen.integers(0, 2**63 - 1))
        y, mask = nn_ops.dropout_forward(a, layer.p, seed)
    else:
        y, mask = nn_ops.zeros(a.shape, a.dtype), nn_ops.zeros(a.shape, a.dtype)
    layer._keep(scale=mask)
    return y


def dropout_backward(grad_output, mask):
    go = dense(grad_output, mask.dtype, "Dropout.backward", "grad_output")
    return nn_ops.dropout_backward(go, mask)


def log_softmax_forward(layer, x):
    a = dense(x, None, "LogSoftmax")
    dim = F._check_dim(layer._dim(a.ndim), a.ndim, "LogSoftmax")
    if dim != a.ndim - 1 or a.ndim not in (1, 2):
        raise NotImplementedError(f"LogSoftmax on the GPU: only over the last axis of (N, C) "
                                  f"or (C,) input, got shape {tuple(a.shape)} and dim={layer.dim}")
    K = tuple(a.shape)[-1]
    rows = (a.size // max(K, 1), K)
    y = _back(nn_ops.log_softmax_forward(_back(a, rows)), a.shape)
    layer._keep(y=y)
    return y


def log_softmax_backward(grad_output, y):
    go = dense(grad_output, y.dtype, "LogSoftmax.backward", "grad_output")
    K = tuple(y.shape)[-1]
    rows = (y.size // max(K, 1), K)
    return _back(nn_ops.log_softmax_backward(_back(go, rows), _back(y, rows)), y.shape)


def flatten(x, start, end):
    a = array_kernel.ascontiguous(rt.as_device(x, "input", "Flatten"))
    shape = tuple(a.shape)
    mid = int(np.prod(shape[start:end + 1], dtype=np.int64))
    return _back(a, shape[:start] + (mid,) + shape[end + 1:]), shape


def reshape(grad_output, shape):
    return _back(array_kernel.ascontiguous(rt.as_device(grad_output, "grad_output", "Flatten.backward")),
                 shape)


# --- pooling ------------------------------------------------------------------------------
def max_pool_forward(layer, x):
    a = dense(x, None, "MaxPool2d")
    shape = tuple(a.shape)
    geo = layer._geometry.get(shape)
    if geo is None:
        geo = F._pool_args("MaxPool2d", shape, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.ceil_mode)
        layer._geometry[shape] = geo
    k, s, p, d, out_size = geo
    if d != (1, 1):
        raise NotImplementedError(f"MaxPool2d on the GPU: dilation {d} is not supported "
                                  f"(only 1)")
    y, idx = nn_ops.maxpool2d_forward(_batch4(a), k, s, p, out_size=out_size)
    out_shape = shape[:-2] + tuple(out_size)
    y, idx = _back(y, out_shape), _back(idx, out_shape)
    layer._keep(idx=idx, shape=shape, geo=(k, s, p))
    return (y, idx) if layer.return_indices else y


def max_pool_backward(ctx, grad_output):
    idx, shape, (k, s, p) = ctx["idx"], ctx["shape"], ctx["geo"]
    go = dense(grad_output, None, "MaxPool2d.backward", "grad_output")
    if tuple(go.shape) != tuple(idx.shape):
        raise ValueError(f"MaxPool2d.backward: grad_output has shape {tuple(go.shape)}, "
                         f"expected {tuple(idx.shape)}")
    gx = nn_ops.maxpool2d_backward(_batch4(go), _batch4(idx), _batch4_shape(shape), k, s, p)
    return _back(gx, shape)


def _batch4_shape(shape):
    return tuple(shape) if len(shape) == 4 else (1,) + tuple(shape)


def _avg_geometry(layer, shape):
    (kernel_size, stride, padding, ceil_mode, count_include_pad,
     divisor_override) = layer._args()
    k, s, p, out, div = F._avg_args("AvgPool2d", shape, kernel_size, stride, padding,
                                    ceil_mode, divisor_override)
    if ceil_mode and out != F._pool_args("AvgPool2d", shape, k, s, p, 1, False)[-1]:
        raise NotImplementedError("AvgPool2d on the GPU: ceil_mode with a partial last window "
                                  "is not supported")
    if not count_include_pad and p != (0, 0) and not div:
        raise NotImplementedError("AvgPool2d on the GPU: count_include_pad=False with padding "
                                  "is not supported")
    return k, s, p, (div or None)


def avg_pool_forward(layer, x):
    a = dense(x, None, "AvgPool2d")
    shape = tuple(a.shape)
    k, s, p, div = _avg_geometry(layer, shape)
    y = nn_ops.avgpool2d_forward(_batch4(a), k, s, p, divisor=div)
    layer._keep(shape=shape)
    return _back(y, shape[:-2] + tuple(y.shape)[-2:])


def avg_pool_backward(layer, grad_output, shape):
    k, s, p, div = _avg_geometry(layer, shape)
    go = dense(grad_output, None, "AvgPool2d.backward", "grad_output")
    gx = nn_ops.avgpool2d_backward(_batch4(go), _batch4_shape(shape), k, s, p, divisor=div)
    return _back(gx, shape)


# --- losses -------------------------------------------------------------------------------
def _targets(fn, target, N, C, ignore_index):
    """(N,) int64 device targets; host targets are range-checked (device ones cannot be
    without a copy, so they are trusted)."""
    if is_gpu_array(target):
        t = rt.as_device(target, "target", fn)
        if np.dtype(t.dtype).kind not in "iu":
            raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype}")
        if tuple(t.shape) != (N,):
            raise ValueError(f"{fn}: target has shape {tuple(t.shape)}, expected ({N},)")
        return t if np.dtype(t.dtype) == np.int64 else rt.to_device(t.copy_to_host(), np.int64)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != (N,):
        raise ValueError(f"{fn}: target has shape {t.shape}, expected ({N},)")
    if (t == ignore_index).any():
        raise NotImplementedError(f"{fn} on the GPU: targets equal to ignore_index are not "
                                  f"supported")
    F._check_targets(fn, t.astype(np.int64), C, ignore_index)
    return rt.to_device(t, np.int64)


def loss_forward(loss, input, target, fn, log_softmax):
    """NLL (of ``log_softmax(input)`` when ``log_softmax``): the loss as a float (one scalar
    copied back); keeps what :func:`loss_backward` needs."""
    if loss.weight is not None or loss.reduction == "none":
        raise NotImplementedError(f"{fn} on the GPU: class weights and reduction='none' are "
                                  f"not supported")
    x = dense(input, None, fn)
    if x.ndim != 2:
        raise NotImplementedError(f"{fn} on the GPU: input must be (N, C) scores, got shape "
                                  f"{tuple(x.shape)}")
    N, C = x.shape
    t = _targets(fn, target, N, C, loss.ignore_index)
    logp = nn_ops.log_softmax_forward(x) if log_softmax else x
    if loss.reduction == "sum":
        scale = 1.0
    else:
        scale = 1.0 / N if N else float("nan")
    value = nn_ops.nll_loss_forward(logp, t, scale) if N else None
    loss._ctx["loss"] = {"shape": (N, C), "target": t, "scale": scale, "dtype": x.dtype,
                         "logp": logp if log_softmax else None}
    if value is None:
        return float("nan") if loss.reduction == "mean" else 0.0
    return float(value.copy_to_host()[0])


def loss_backward(ctx, grad):
    s = 1.0 if grad is None else float(grad)
    g = nn_ops.nll_loss_backward(ctx["shape"], ctx["target"], ctx["dtype"], ctx["scale"] * s)
    if ctx["logp"] is not None:
        g = nn_ops.log_softmax_backward(g, ctx["logp"])
    return g
