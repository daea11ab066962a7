"""Stateless layer operations, each forward next to its backward.

The layers in :mod:`fastconv.nn` are thin wrappers around these functions; the
heavy loops run in numba kernels (:mod:`fastconv.cpu.pool`, :mod:`fastconv.cpu.nn_act`).
Shapes follow PyTorch: ``(N, C, H, W)`` images, ``(N, C)`` class scores.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import int_tuple
from ..cpu import nn_act, pool

__all__ = ["linear", "linear_backward", "relu", "relu_backward", "max_pool2d",
           "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "log_softmax",
           "log_softmax_backward", "softmax", "nll_loss", "nll_loss_backward", "cross_entropy",
           "cross_entropy_backward", "pool_output_size"]


def check_numeric(a, fn, name="input"):
    """Raise TypeError unless ndarray ``a`` holds real numbers (bool, int or float)."""
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must be a real numeric array, got dtype {a.dtype}"
                        + (f" (shape {a.shape})" if a.ndim else ""))


def float_array(x, fn, name="input"):
    """``x`` as a C-contiguous float32/float64 ndarray (other dtypes become float32).
    0-d stays 0-d."""
    a = np.asarray(x)
    check_numeric(a, fn, name)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return a if a.flags.c_contiguous else a.copy(order="C")


def check_grad_shape(fn, grad_output, shape):
    """Raise ValueError unless ``grad_output`` has the forward output's ``shape``."""
    gs = tuple(np.shape(grad_output))
    if gs != tuple(shape):
        raise ValueError(f"{fn}: grad_output has shape {gs} but the forward's output had "
                         f"shape {tuple(shape)}")


def _pair(value, name, fn, minimum):
    return int_tuple(value, 2, name, fn, minimum)


# -- linear ------------------------------------------------------------------------------
def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` (as ``torch.nn.functional.linear``).

    Parameters
    ----------
    x : ndarray, shape (..., in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    ndarray, shape (..., out_features)

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.linear(np.array([[1., 2.]]), np.array([[1., 1.], [0., 1.]]), np.array([0., 10.]))
    array([[ 3., 12.]])
    """
    y = np.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_output, x, weight, input_grad=True):
    """Gradients of :func:`linear`: ``(grad_x, grad_weight, grad_bias)``.

    ``grad_x`` is None when ``input_grad`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> gx, gw, gb = F.linear_backward(np.array([[1., 2.]]), np.array([[3., 4.]]), np.eye(2))
    >>> gx.tolist(), gw.tolist(), gb.tolist()
    ([[1.0, 2.0]], [[3.0, 4.0], [6.0, 8.0]], [1.0, 2.0])
    """
    rows = math.prod(x.shape[:-1])
    g2 = grad_output.reshape(rows, grad_output.shape[-1])
    x2 = x.reshape(rows, x.shape[-1])
    gw = g2.T @ x2
    gb = g2.sum(axis=0)
    gx = np.matmul(grad_output, weight) if input_grad else None
    return gx, gw, gb


# -- ReLU --------------------------------------------------------------------------------
def relu(x):
    """``max(x, 0)`` elementwise; NaN propagates (as ``torch.relu``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.relu(np.array([-1., 0., 2.], np.float32))
    array([0., 0., 2.], dtype=float32)
    """
    return nn_act.relu_fwd(float_array(x, "relu"))


def relu_backward(grad_output, output):
    """Gradient of :func:`relu` from its ``output``: ``grad_output`` where ``output`` is not
    ``<= 0``, else 0 (so a NaN output passes the gradient through, as PyTorch).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.relu_backward(np.ones(3, np.float32), np.array([0., 0., 2.], np.float32))
    array([0., 0., 1.], dtype=float32)
    """
    check_grad_shape("relu_backward", grad_output, np.shape(output))
    go = float_array(grad_output, "relu_backward", "grad_output").astype(output.dtype, copy=False)
    return nn_act.relu_bwd(go, float_array(output, "relu_backward", "output"))


# -- pooling -----------------------------------------------------------------------------
def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output length on one axis.

    Examples
    --------
    >>> from fastconv.nn import functional as F
    >>> F.pool_output_size(24, 2, 2, 0, 1, False), F.pool_output_size(5, 2, 2, 0, 1, True)
    (12, 3)
    """
    num = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_args(fn, shape, kernel_size, stride, padding, dilation, ceil_mode):
    if len(shape) not in (3, 4):
        raise ValueError(f"{fn}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{tuple(shape)}")
    k = _pair(kernel_size, "kernel_size", fn, 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _pair(stride, "stride", fn, 1)
    p = _pair(padding, "padding", fn, 0)
    d = _pair(dilation, "dilation", fn, 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{fn}: padding should be at most half of kernel_size, got padding={p} "
                         f"and kernel_size={k}")
    H, W = shape[-2:]
    out = tuple(pool_output_size(n, ki, si, pi, di, ceil_mode)
                for n, ki, si, pi, di in zip((H, W), k, s, p, d))
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"{fn}: input of shape {tuple(shape)} is too small for kernel_size={k}, "
                         f"stride={s}, padding={p}, dilation={d}: the output size would be {out}")
    return k, s, p, d, out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling (as ``torch.nn.functional.max_pool2d``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or tuple (kH, kW)
    stride : int or tuple, default ``kernel_size``
    padding : int or tuple, default 0
        Implicit -inf padding on both sides, at most half the kernel.
    dilation : int or tuple, default 1
    ceil_mode : bool, default False
        Round the output size up instead of down.
    return_indices : bool, default False
        Also return the flat index ``h * W + w`` of each maximum (what
        :func:`max_pool2d_backward` needs). A window that holds no input element (all
        padding, possible with dilation) gives -inf, as PyTorch, and index -1.

    Returns
    -------
    ndarray, shape (N, C, H_out, W_out) (and the int64 indices, same shape)
        ``H_out = floor((H + 2 pH - dH (kH - 1) - 1) / sH) + 1`` (ceil with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> y
    array([[[[ 5.,  7.],
             [13., 15.]]]], dtype=float32)
    >>> F.max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]], dtype=float32)
    """
    a = float_array(x, "max_pool2d")
    k, s, p, d, out_size = _pool_args("max_pool2d", a.shape, kernel_size, stride, padding,
                                      dilation, ceil_mode)
    H, W = a.shape[-2:]
    y, idx = pool.maxpool2d_fwd(a.reshape(-1, H, W), out_size, k, s, p, d)
    shape = a.shape[:-2] + out_size
    y = y.reshape(shape)
    return (y, idx.reshape(shape)) if return_indices else y


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d`: each output gradient goes to its maximum's position.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, H_out, W_out)
    indices : ndarray, the forward's ``return_indices`` output
    input_shape : tuple, the forward input's shape

    Returns
    -------
    grad_input : ndarray of ``input_shape``
        Zero except at each window's maximum; an index of -1 (a window with no input
        element, entirely in padding) sends its gradient nowhere.

    Raises
    ------
    ValueError
        Shapes that disagree, or an index outside ``[-1, H * W)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> x = np.array([[[[1., 3.], [2., 0.]]]], np.float32)
    >>> y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> F.max_pool2d_backward(np.full_like(y, 5.), idx, x.shape)[0, 0]
    array([[0., 5.],
           [0., 0.]], dtype=float32)
    """
    go = np.ascontiguousarray(grad_output)
    if go.dtype not in (np.float32, np.float64):
        go = go.astype(np.float32)
    if go.shape != indices.shape:
        raise ValueError(f"max_pool2d_backward: grad_output has shape {go.shape} but indices "
                         f"have shape {indices.shape}")
    H, W = input_shape[-2:]
    P = int(np.prod(input_shape[:-2]))
    gx, n_bad = pool.maxpool2d_bwd(go.reshape(P, *go.shape[-2:]),
                                   np.ascontiguousarray(indices, dtype=np.int64)
                                   .reshape(P, *go.shape[-2:]), (H, W))
    if n_bad:
        raise ValueError(f"max_pool2d_backward: {n_bad} indices lie outside [0, {H * W}) for "
                         f"an input of shape {tuple(input_shape)} (-1 marks an all-padding "
                         f"window); pass the indices max_pool2d returned for this input")
    return gx.reshape(input_shape)


def _avg_args(fn, shape, kernel_size, stride, padding, ceil_mode, divisor_override):
    k, s, p, _, out = _pool_args(fn, shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is None:
        div = 0
    elif (isinstance(divisor_override, (numbers.Integral, np.integer))
          and not isinstance(divisor_override, bool) and divisor_override > 0):
        div = int(divisor_override)
    else:
        raise ValueError(f"{fn}: divisor_override must be None or a positive int, "
                         f"got {divisor_override!r}")
    return k, s, p, out, div


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling (as ``torch.nn.functional.avg_pool2d``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, ceil_mode :
        As for :func:`max_pool2d` (zero padding).
    count_include_pad : bool, default True
        Count the zero padding in the divisor.
    divisor_override : int, optional
        Divide every window sum by this instead.

    Returns
    -------
    ndarray, shape (N, C, H_out, W_out)
        ``H_out = floor((H + 2 pH - kH) / sH) + 1`` (ceil with ``ceil_mode``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> F.avg_pool2d(x, 2)
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]], dtype=float32)
    >>> F.avg_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), x.shape, 2)[0, 0, 0]
    array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """
    a = float_array(x, "avg_pool2d")
    k, s, p, out_size, div = _avg_args("avg_pool2d", a.shape, kernel_size, stride, padding,
                                       ceil_mode, divisor_override)
    H, W = a.shape[-2:]
    y = pool.avgpool2d_fwd(a.reshape(-1, H, W), out_size, k, s, p, count_include_pad, div)
    return y.reshape(a.shape[:-2] + out_size)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d` (same arguments, plus the forward input's shape).

    Returns
    -------
    grad_input : ndarray of ``input_shape``
        Each output's gradient spread over its window, divided as the forward divides.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.avg_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), (1, 1, 2, 2), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]], dtype=float32)
    """
    k, s, p, out_size, div = _avg_args("avg_pool2d_backward", tuple(input_shape), kernel_size,
                                       stride, padding, ceil_mode, divisor_override)
    go = float_array(grad_output, "avg_pool2d_backward", "grad_output")
    expected = tuple(input_shape[:-2]) + out_size
    if go.shape != expected:
        raise ValueError(f"avg_pool2d_backward: grad_output has shape {go.shape}, expected "
                         f"{expected} for input shape {tuple(input_shape)}")
    gx = pool.avgpool2d_bwd(go.reshape(-1, *out_size), tuple(input_shape[-2:]), k, s, p,
                            count_include_pad, div)
    return gx.reshape(input_shape)


# -- log-softmax -------------------------------------------------------------------------
def _check_dim(dim, ndim, fn):
    if not isinstance(dim, (numbers.Integral, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{fn}: dim must be an int, got {dim!r}")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"{fn}: dim {dim} is out of range for an input with {ndim} dimension(s)")
    return int(dim) % max(ndim, 1)


def _rows(a, dim):
    """View/copy ``a`` as (M, K) rows with axis ``dim`` last; and the way back."""
    if a.ndim == 0:
        return a.reshape(1, 1), lambda r: r.reshape(())
    if dim == a.ndim - 1:                          # already rows: no copies
        shape = a.shape
        rows = np.ascontiguousarray(a).reshape(math.prod(shape[:-1]), shape[-1])
        return rows, lambda r: r.reshape(shape)
    moved = np.moveaxis(a, dim, -1)
    shape = moved.shape
    rows = np.ascontiguousarray(moved).reshape(math.prod(shape[:-1]), shape[-1])
    return rows, lambda r: np.ascontiguousarray(np.moveaxis(r.reshape(shape), -1, dim))


def log_softmax(x, dim):
    """``x - logsumexp(x, dim)`` (as ``torch.nn.functional.log_softmax``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.log_softmax(np.array([[0., 0.]]), dim=1)
    array([[-0.69314718, -0.69314718]])
    """
    a = float_array(x, "log_softmax")
    d = _check_dim(dim, a.ndim, "log_softmax")
    rows, back = _rows(a, d)
    return back(nn_act.log_softmax_fwd(rows))


def log_softmax_backward(grad_output, output, dim):
    """Gradient of :func:`log_softmax` from its ``output``:
    ``grad_output - exp(output) * sum(grad_output, dim)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> y = F.log_softmax(np.zeros((1, 2)), dim=1)
    >>> F.log_softmax_backward(np.array([[1., 0.]]), y, dim=1)
    array([[ 0.5, -0.5]])
    """
    d = _check_dim(dim, output.ndim, "log_softmax_backward")
    check_grad_shape("log_softmax_backward", grad_output, output.shape)
    go = float_array(grad_output, "log_softmax_backward", "grad_output").astype(output.dtype,
                                                                              copy=False)
    grows, back = _rows(go, d)
    yrows, _ = _rows(output, d)
    return back(nn_act.log_softmax_bwd(grows, yrows))


def softmax(x, dim):
    """``exp(log_softmax(x, dim))``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.softmax(np.zeros((1, 4)), dim=1)
    array([[0.25, 0.25, 0.25, 0.25]])
    """
    return np.exp(log_softmax(x, dim))


# -- losses ------------------------------------------------------------------------------
REDUCTIONS = ("mean", "sum", "none")


def _class_layout(fn, inp, target):
    """Validate (input, target) of a classification loss; return input as (M, C) rows with
    the class axis last, targets as (M,) int64, and how to restore the layout."""
    if inp.ndim == 0:
        raise ValueError(f"{fn}: input must be (N, C), (C,) or (N, C, d1, ...), got a scalar")
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype} "
                        f"(class-probability targets are not supported)")
    if inp.ndim == 1:
        expected = ()
    else:
        expected = (inp.shape[0],) + inp.shape[2:]
    if t.shape != expected:
        raise ValueError(f"{fn}: target has shape {t.shape} but input of shape {inp.shape} "
                         f"needs target shape {expected}")
    dim = 0 if inp.ndim == 1 else 1
    rows, back = _rows(inp, dim)
    return rows, t.reshape(-1).astype(np.int64, copy=False), back


def _check_targets(fn, t, C, ignore_index):
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise ValueError(f"{fn}: target {int(t[bad][0])} is out of bounds for {C} classes "
                         f"(targets must be in [0, {C - 1}] or ignore_index={ignore_index})")


def _check_weight(fn, weight, C, dtype):
    if weight is None:
        return None
    w = np.asarray(weight, dtype=dtype)
    if w.shape != (C,):
        raise ValueError(f"{fn}: weight must have shape ({C},) (one per class), got {w.shape}")
    return w


def _nll(fn, logp, target, weight, ignore_index, reduction):
    """Shared forward of NLL / cross entropy. Returns (loss, ctx for backward)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    rows, t, back = _class_layout(fn, logp, target)
    M, C = rows.shape
    w = _check_weight(fn, weight, C, rows.dtype)
    losses, wi, bad, loss_sum, denom = nn_act.nll_rows(rows, t, w, ignore_index)
    if bad >= 0:
        _check_targets(fn, t, C, ignore_index)            # raises, naming the target
    if reduction == "none":
        loss = losses.reshape(target_shape(logp))
        denom = None
    elif reduction == "sum":
        loss = float(loss_sum)
        denom = 1.0
    else:
        loss = float(loss_sum / denom) if denom else float("nan")
    return loss, (rows.shape, t, wi, denom, back, logp.dtype, reduction, target_shape(logp),
                  fn, ignore_index)


def target_shape(inp):
    return () if inp.ndim == 1 else (inp.shape[0],) + inp.shape[2:]


def _nll_grad(ctx, grad=None):
    """dL/d(log-probabilities), in the input's layout. Rows whose target is ignore_index
    get zero gradient, also when no row is left for the mean (as PyTorch)."""
    (M, C), t, wi, denom, back, dtype, reduction, loss_shape, fn, ignore_index = ctx
    if reduction == "none":
        if grad is None:
            gl = np.ones(M, dtype)
        else:
            ga = np.asarray(grad)
            if ga.shape != loss_shape or ga.dtype.kind not in "biuf":
                raise ValueError(f"{fn}: grad must be a real array of the loss's shape "
                                 f"{loss_shape} (reduction='none'), got shape {ga.shape} and "
                                 f"dtype {ga.dtype}")
            gl = ga.astype(dtype).reshape(-1)
        return nn_act.nll_grad((M, C), t, wi, gl, 0.0, ignore_index), back
    if grad is None:
        s = 1.0
    else:
        ga = np.asarray(grad)
        if ga.ndim != 0 or ga.dtype.kind not in "biuf":
            raise ValueError(f"{fn}: grad must be a real scalar for reduction="
                             f"{reduction!r}, got shape {ga.shape} and dtype {ga.dtype}")
        s = float(ga)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = s / np.float64(denom)
    return nn_act.nll_grad((M, C), t, wi, None, sd, ignore_index), back


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities (as ``torch.nn.functional.nll_loss``).

    Parameters
    ----------
    input : ndarray, shape (N, C), (C,) or (N, C, d1, ...)
        Log-probabilities, e.g. :func:`log_softmax` output.
    target : integer ndarray, shape (N,), () or (N, d1, ...)
        Class indices in ``[0, C)`` (or ``ignore_index``).
    weight : ndarray, shape (C,), optional
        Per-class weights; the mean divides by the sum of the targets' weights.
    ignore_index : int, default -100
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    float (or ndarray of the target's shape with ``reduction='none'``)

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> logp = np.log(np.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> round(F.nll_loss(logp, np.array([0, 1])), 4)
    0.4904
    """
    fn = "nll_loss"
    logp = float_array(input, fn)
    return _nll(fn, logp, target, weight, ignore_index, reduction)[0]


def nll_loss_backward(input, target, weight=None, ignore_index=-100, reduction="mean",
                      grad=None):
    """Gradient of :func:`nll_loss` with respect to ``input`` (``grad``: dL/d loss, default 1).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.nll_loss_backward(np.zeros((2, 2)), np.array([0, 1]))
    array([[-0.5,  0. ],
           [ 0. , -0.5]])
    """
    fn = "nll_loss_backward"
    logp = float_array(input, fn)
    _, ctx = _nll(fn, logp, target, weight, ignore_index, reduction)
    g, back = _nll_grad(ctx, grad)
    return back(g)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """``nll_loss(log_softmax(input, class axis), target)`` (as
    ``torch.nn.functional.cross_entropy`` with class-index targets).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> round(F.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2])), 4)   # log(4)
    1.3863
    """
    x = float_array(input, "cross_entropy")
    logp = log_softmax(x, 0 if x.ndim == 1 else 1)
    return _nll("cross_entropy", logp, target, weight, ignore_index, reduction)[0]


def cross_entropy_backward(input, target, weight=None, ignore_index=-100, reduction="mean",
                           grad=None):
    """Gradient of :func:`cross_entropy` with respect to ``input``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import functional as F
    >>> F.cross_entropy_backward(np.zeros((1, 2)), np.array([0]))
    array([[-0.5,  0.5]])
    """
    x = float_array(input, "cross_entropy_backward")
    dim = 0 if x.ndim == 1 else 1
    logp = log_softmax(x, dim)
    _, ctx = _nll("cross_entropy_backward", logp, target, weight, ignore_index, reduction)
    g, back = _nll_grad(ctx, grad)
    return log_softmax_backward(back(g), logp, dim)
