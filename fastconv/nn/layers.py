"""The layers: each ``forward`` keeps what its ``backward`` needs, right next to it."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _pipeline
from .._arrays import proxy
from .._validate import (check_algorithm, check_groups_divide, check_int, check_padding,
                         check_padding_mode, check_precision, conv_spec, int_tuple)
from ..dispatch import ALGORITHM_NAMES, lanes_weight_grad, precision_scope
from ..cpu import nn_act, pool
from ..cpu._common import reuse
from . import functional as F
from . import init
from .module import Module, Parameter, as_generator, check_float_dtype, on_gpu

# Every layer runs on the GPU when its input is a GPU array (anything with
# ``__cuda_array_interface__``; see Module.to("cuda")): the code is in fastconv.nn._cuda,
# imported on that first call only, so CPU-only use never imports numba.cuda.

__all__ = ["Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "Dropout", "Flatten",
           "LogSoftmax", "Identity"]


def _host_input_error(layer):
    return RuntimeError(f"{type(layer).__name__}: the parameters are on the GPU "
                        f"(model.to('cuda')) but the input is a host array; pass a GPU array "
                        f"(e.g. numba.cuda.to_device(x)) or move the model back with "
                        f"model.to('cpu')")


def _cast(x, dtype, fn, name="input"):
    """x as a C-contiguous array of ``dtype`` (no copy when it already is one)."""
    if isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous:
        return x
    a = np.asarray(x)
    F.check_numeric(a, fn, name)
    return a.astype(dtype, order="C", copy=False)


# -- Conv2d --------------------------------------------------------------------------------
class _ConvPlan:
    """A validated Conv2d problem for one input shape: the spec and the 5-D shapes the
    pipeline works on, computed once (the algorithm is planned per call by
    :func:`fastconv.dispatch.plan`, a memo lookup, so that its non-finite rule sees the
    data)."""

    __slots__ = ("spec", "batched", "padded", "xp5_shape", "w5_shape", "y_shape", "go5_shape")

    def __init__(self, spec):
        self.spec = spec
        self.batched = spec.batched
        self.padded = any(b or a for b, a in spec.padding)
        self.xp5_shape = (spec.N, spec.C_in) + spec.lift(spec.padded_size)
        self.w5_shape = (spec.C_out, spec.C_in // spec.groups) + spec.lift(spec.kernel)
        self.y_shape = (spec.N, spec.C_out) + spec.out_size
        self.go5_shape = (spec.N, spec.C_out) + spec.lift(spec.out_size)


class Conv2d(Module):
    """2-D convolution layer (as ``torch.nn.Conv2d``) on fastconv's kernels.

    The forward runs the kernels behind :func:`fastconv.conv2d`, the backward those
    behind :func:`fastconv.grad.conv2d_weight` / :func:`fastconv.grad.conv2d_input`
    (one code path per algorithm, see :mod:`fastconv.cpu.engine`); validation and the
    algorithm choice happen once per input shape.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple (kH, kW)
    stride : int or tuple (sH, sW). Default: 1
    padding : int, tuple (pH, pW), per-side pairs ``((top, bottom), (left, right))``,
        ``'valid'`` or ``'same'``. Default: 0
    dilation : int or tuple (dH, dW). Default: 1
    groups : int. Default: 1
    bias : bool. Default: True
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    algorithm : {'auto', 'direct', 'im2col', 'fft', 'winograd', 'winograd_f2'}
        ``'auto'`` asks :func:`fastconv.choose_algorithm`, per op (forward, weight and
        input gradients).
    precision : {None, 'highest', 'high', 'medium'}
        What ``'auto'`` may choose for this layer (see :func:`fastconv.set_precision`);
        None (default): the global level when the layer runs.
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator
        Source of the initial weights (default: the global generator, see
        :func:`fastconv.nn.manual_seed`).

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels / groups, kH, kW)
        Initialised from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels / groups * kH * kW
        (PyTorch's ``kaiming_uniform_(a=sqrt(5))``).
    bias : Parameter, shape (out_channels,), or None
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Notes
    -----
    Input ``(N, C_in, H, W)`` or ``(C_in, H, W)``, cast to the layer's dtype; output
    ``(N, C_out, H_out, W_out)`` with
    ``H_out = floor((H + pad_top + pad_bottom - dH (kH - 1) - 1) / sH) + 1``.
    In train mode the forward keeps its input (and a transposed copy where its kernel
    made one) for the backward: do not modify the input in place in between (PyTorch
    raises there; here the backward would mix the old and the new values).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> conv = nn.Conv2d(1, 10, kernel_size=5)
    >>> conv
    Conv2d(1, 10, kernel_size=(5, 5), stride=(1, 1))
    >>> y = conv(np.zeros((2, 1, 28, 28), np.float32))
    >>> y.shape, y.dtype.name
    ((2, 10, 24, 24), 'float32')
    >>> conv.backward(np.ones_like(y)).shape, conv.weight.grad.shape
    ((2, 1, 28, 28), (10, 1, 5, 5))
    >>> nn.Conv2d(64, 64, 3, padding=1, precision="highest")   # never Winograd or FFT
    Conv2d(64, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), precision='highest')
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, algorithm="auto",
                 precision=None, dtype=np.float32, rng=None):
        super().__init__()
        fn = "Conv2d"
        self.in_channels = check_int(fn, "in_channels", in_channels, 1)
        self.out_channels = check_int(fn, "out_channels", out_channels, 1)
        self.groups = check_int(fn, "groups", groups, 1)
        check_groups_divide(fn, self.groups, in_channels=self.in_channels,
                            out_channels=self.out_channels)
        self.kernel_size = int_tuple(kernel_size, 2, "kernel_size", fn, 1)
        self.stride = int_tuple(stride, 2, "stride", fn, 1)
        self.dilation = int_tuple(dilation, 2, "dilation", fn, 1)
        pads = check_padding(fn, padding, 2)
        # in the form given (PyTorch's repr): a string, per-side pairs, or (pH, pW)
        per_side = isinstance(padding, (tuple, list)) and any(
            isinstance(p, (tuple, list)) for p in padding)
        self.padding = pads if isinstance(pads, str) or per_side else tuple(b for b, _ in pads)
        check_padding_mode(fn, padding_mode)
        self.padding_mode = padding_mode
        check_algorithm(fn, algorithm, ALGORITHM_NAMES)
        self.algorithm = algorithm
        self.precision = check_precision(fn, precision)
        dt = check_float_dtype(dtype, fn)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self._plans = {}
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Re-draw weight and bias with PyTorch's default initialisation."""
        gen = as_generator(rng, "Conv2d")
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=gen)
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight.shape)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound, rng=gen)

    def _dtype_changed(self, dtype):
        self._plans.clear()

    def _device_changed(self, device):
        self._plans.clear()

    def _plan(self, x):
        """Validate once per input shape (as the public API does)."""
        w = self.weight.data
        if not isinstance(w, np.ndarray):
            raise _host_input_error(self)
        spec, _, _, _ = conv_spec("Conv2d", 2, proxy(x.shape, w.dtype), w,
                                  None if self.bias is None else proxy(self.bias.shape, w.dtype),
                                  self.stride, self.padding, self.dilation, self.groups,
                                  self.padding_mode)
        plan = self._plans[(x.shape, w.dtype)] = _ConvPlan(spec)
        return plan

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            with precision_scope(self.precision):
                return _cuda.conv2d_forward(self, x)
        w = self.weight.data
        x = _cast(x, w.dtype, "Conv2d")
        plan = self._plans.get((x.shape, w.dtype)) or self._plan(x)
        spec = plan.spec
        xb = x if plan.batched else x[None]
        keep = self.training and self.weight.requires_grad and lanes_weight_grad(spec)
        # zero padding left to the engine (read in place by the kernels that can, see
        # _pipeline.forward), except where the weight gradient reuses the forward's
        # transforms of the padded input (lanes_weight_grad)
        unpadded = plan.padded and _pipeline.unpadded_route(spec, xb) and not keep
        xp5 = (_pipeline.unpadded5(spec, xb) if unpadded else _pipeline.pad5(spec, xb)) \
            if plan.padded else xb.reshape(plan.xp5_shape)
        saved = {}      # the kernels' transforms of xp5 that the weight gradient reuses
        with reuse(saved, keep):
            y = _pipeline.forward5(spec, xp5, w.reshape(plan.w5_shape),
                                   None if self.bias is None else self.bias.data,
                                   self.algorithm, precision=self.precision, unpadded=unpadded)
        self._keep(xp5=xp5, plan=plan, saved=saved, unpadded=unpadded)
        y = y.reshape(plan.y_shape)
        return y if plan.batched else y[0]

    def backward(self, grad_output, input_grad=True):
        """dL/d input (None when ``input_grad`` is False); adds dL/d weight and dL/d bias
        into their ``.grad``."""
        if on_gpu(grad_output):
            from . import _cuda
            with precision_scope(self.precision):
                return _cuda.conv2d_backward(self, grad_output, input_grad)
        ctx = self._take()
        xp5, plan = ctx["xp5"], ctx["plan"]
        spec = plan.spec
        w = self.weight.data
        go = _cast(grad_output, w.dtype, "Conv2d.backward", "grad_output")
        F.check_grad_shape("Conv2d.backward", go, spec.out_shape)
        go5 = go.reshape(plan.go5_shape)
        if self.weight.requires_grad:
            with reuse(ctx["saved"], False):
                gw = _pipeline.weight_grad5(spec, xp5, go5, self.algorithm, self.precision,
                                            ctx["unpadded"])
            self.weight.accumulate(gw.reshape(w.shape))
        if self.bias is not None and self.bias.requires_grad:
            N, O = go5.shape[:2]
            self.bias.accumulate(nn_act.channel_sums(go5.reshape(N, O, math.prod(go5.shape[2:]))))
        if not input_grad:
            return None
        gx = _pipeline.input_grad_unpadded(spec, go5, w.reshape(plan.w5_shape), self.algorithm,
                                           self.precision)
        return gx if plan.batched else gx[0]

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if isinstance(self.padding, str):
            s += f", padding={self.padding}"
        elif self.padding not in ((0, 0), ((0, 0), (0, 0))):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.precision is not None:
            s += f", precision={self.precision!r}"
        return s


# -- Linear --------------------------------------------------------------------------------
class Linear(Module):
    """Fully connected layer ``y = x @ weight.T + bias`` (as ``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool. Default: True
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator (see :class:`Conv2d`)

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features), U(-1/sqrt(in), 1/sqrt(in))
    bias : Parameter, shape (out_features,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> fc = nn.Linear(320, 50)
    >>> fc
    Linear(in_features=320, out_features=50, bias=True)
    >>> fc(np.zeros((64, 320), np.float32)).shape
    (64, 50)
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features, 0)
        self.out_features = check_int("Linear", "out_features", out_features, 0)
        dt = check_float_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Re-draw weight and bias with PyTorch's default initialisation."""
        gen = as_generator(rng, "Linear")
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=gen)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound, rng=gen)

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            return _cuda.linear_forward(self, x)
        w = self.weight.data
        if not isinstance(w, np.ndarray):
            raise _host_input_error(self)
        x = _cast(x, w.dtype, "Linear")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input of shape {x.shape} does not end in "
                             f"in_features={self.in_features}")
        y = F.linear(x, w, None if self.bias is None else self.bias.data)
        self._keep(x=x)
        return y

    def backward(self, grad_output, input_grad=True):
        """dL/d input (None when ``input_grad`` is False); fills weight/bias ``.grad``."""
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.linear_backward(self, grad_output, input_grad)
        x = self._take()["x"]
        go = _cast(grad_output, self.weight.data.dtype, "Linear.backward", "grad_output")
        F.check_grad_shape("Linear.backward", go, x.shape[:-1] + (self.out_features,))
        gx, gw, gb = F.linear_backward(go, x, self.weight.data, input_grad)
        if self.weight.requires_grad:
            self.weight.accumulate(gw)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# -- parameter-free layers -------------------------------------------------------------------
class _OutputLayer(Module):
    """Base of the layers whose backward needs only their output (ReLU, LogSoftmax):
    ``forward`` keeps it with :meth:`_output`; ``backward`` checks ``grad_output``
    against it and calls :meth:`_grad` (CPU or GPU arrays)."""

    def _output(self, y):
        self._keep(y=y)
        return y

    def backward(self, grad_output, input_grad=True):
        y = self._take()["y"]
        if not input_grad:
            return None
        F.check_grad_shape(f"{type(self).__name__}.backward", grad_output, y.shape)
        return self._grad(grad_output, y)


class ReLU(_OutputLayer):
    """``max(x, 0)`` elementwise (as ``torch.nn.ReLU``; a numba kernel).

    Parameters
    ----------
    inplace : bool, default False
        Overwrite the input (when it is a C-contiguous float array) instead of allocating.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> relu = nn.ReLU()
    >>> relu(np.array([-1., 2.], np.float32)).tolist()
    [0.0, 2.0]
    >>> relu.backward(np.ones(2, np.float32)).tolist()
    [0.0, 1.0]
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            return _cuda.relu_forward(self, x)
        if (self.inplace and isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)
                and x.flags.c_contiguous and x.flags.writeable):
            y = nn_act.relu_fwd(x, out=x)
        else:
            y = F.relu(x)
        return self._output(y)

    def _grad(self, grad_output, y):
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.relu_backward(grad_output, y)
        return F.relu_backward(grad_output, y)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class MaxPool2d(Module):
    """2-D max pooling (as ``torch.nn.MaxPool2d``); the forward stores the argmax indices
    for the backward.

    Parameters
    ----------
    kernel_size : int or tuple
    stride : int or tuple, default ``kernel_size``
    padding : int or tuple, default 0
    dilation : int or tuple, default 1
    return_indices : bool, default False
    ceil_mode : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.MaxPool2d(2)
    >>> pool
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    >>> pool(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if (stride is not None and stride != ()) else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        F._pool_args("MaxPool2d", (1, 1, 1 << 20, 1 << 20), kernel_size, self.stride, padding,
                     dilation, ceil_mode)          # argument checks now, not at first call
        self._geometry = {}                       # input shape -> validated pooling geometry

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            return _cuda.max_pool_forward(self, x)
        a = F.float_array(x, "MaxPool2d")
        geo = self._geometry.get(a.shape)
        if geo is None:
            k, s, p, d, out_size = F._pool_args("MaxPool2d", a.shape, self.kernel_size,
                                                self.stride, self.padding, self.dilation,
                                                self.ceil_mode)
            geo = (k, s, p, d, out_size, pool.is_2x2s2(k, s, p, d, a.shape[-2:], out_size))
            self._geometry[a.shape] = geo
        k, s, p, d, out_size, two = geo
        H, W = a.shape[-2:]
        shape = a.shape[:-2] + out_size
        if two:             # MaxPool2d(2): one-byte argmax codes, indices only when asked for
            y, code = pool.maxpool2x2_fwd(a.reshape(-1, H, W))
            self._keep(code=code, shape=a.shape, out=shape, dtype=a.dtype)
            if not self.return_indices:
                return y.reshape(shape)
            return y.reshape(shape), pool.maxpool2x2_indices(code, W).reshape(shape)
        y, idx = pool.maxpool2d_fwd(a.reshape(-1, H, W), out_size, k, s, p, d)
        y, idx = y.reshape(shape), idx.reshape(shape)
        self._keep(idx=idx, shape=a.shape, dtype=a.dtype)
        return (y, idx) if self.return_indices else y

    _fuses_next = True

    def _forward_fused(self, nxt, x):
        """``nxt(self(x))`` in one pass when ``nxt`` is a ReLU and this is MaxPool2d(2) on a
        host array of a shape seen before (what :class:`Sequential` asks for the pair), else
        NotImplemented. Both layers keep what their own backward needs, and
        :meth:`_backward_fused` does both backwards in one pass."""
        if (type(self) is not MaxPool2d or type(nxt) is not ReLU or self.return_indices
                or type(x) is not np.ndarray):
            return NotImplemented
        a = F.float_array(x, "MaxPool2d")
        geo = self._geometry.get(a.shape)
        if geo is None or not geo[-1]:
            return NotImplemented
        H, W = a.shape[-2:]
        shape = a.shape[:-2] + geo[4]
        y, code = pool.maxpool2x2_fwd(a.reshape(-1, H, W), relu=True)
        y = nxt._output(y.reshape(shape))
        self._keep(code=code, shape=a.shape, out=shape, dtype=a.dtype, relu_y=y)
        return y

    def _backward_fused(self, nxt, grad_output, input_grad=True):
        """``self.backward(nxt.backward(grad_output), input_grad)`` in one pass after a
        :meth:`_forward_fused` of the pair; NotImplemented otherwise."""
        y = self._ctx.get("relu_y")
        if y is None or nxt._ctx.get("y") is not y or on_gpu(grad_output):
            return NotImplemented
        nxt._take()
        ctx = self._take()
        F.check_grad_shape("ReLU.backward", grad_output, y.shape)     # as ReLU's backward
        if not input_grad:
            return None
        go = F.float_array(grad_output, "relu_backward", "grad_output").astype(y.dtype,
                                                                            copy=False)
        code, shape = ctx["code"], ctx["shape"]
        return pool.maxpool2x2_bwd(go.reshape(code.shape), code, shape[-2:],
                                   relu=True).reshape(shape)

    def backward(self, grad_output, input_grad=True):
        ctx = self._take()
        if not input_grad:
            return None
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.max_pool_backward(ctx, grad_output)
        # the gradient in the input's dtype, as PyTorch
        go = F.float_array(grad_output, "MaxPool2d.backward", "grad_output")
        go = go.astype(ctx.get("dtype", go.dtype), copy=False)
        code = ctx.get("code")
        if code is None:
            return F.max_pool2d_backward(go, ctx["idx"], ctx["shape"])
        F.check_grad_shape("MaxPool2d.backward", go, ctx["out"])
        shape = ctx["shape"]
        return pool.maxpool2x2_bwd(go.reshape(code.shape), code, shape[-2:]).reshape(shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (as ``torch.nn.AvgPool2d``).

    Parameters
    ----------
    kernel_size : int or tuple
    stride : int or tuple, default ``kernel_size``
    padding : int or tuple, default 0
    ceil_mode : bool, default False
    count_include_pad : bool, default True
    divisor_override : int, optional

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.AvgPool2d(2)
    >>> pool
    AvgPool2d(kernel_size=2, stride=2, padding=0)
    >>> pool(np.ones((1, 1, 4, 4), np.float32)).shape
    (1, 1, 2, 2)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if (stride is not None and stride != ()) else kernel_size
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override
        F._avg_args("AvgPool2d", (1, 1, 1 << 20, 1 << 20), kernel_size, self.stride, padding,
                    ceil_mode, divisor_override)

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            return _cuda.avg_pool_forward(self, x)
        a = F.float_array(x, "AvgPool2d")
        y = F.avg_pool2d(a, *self._args())
        self._keep(shape=a.shape, dtype=a.dtype)
        return y

    def backward(self, grad_output, input_grad=True):
        ctx = self._take()
        shape = ctx["shape"]
        if not input_grad:
            return None
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.avg_pool_backward(self, grad_output, shape)
        go = F.float_array(grad_output, "AvgPool2d.backward", "grad_output")
        go = go.astype(ctx.get("dtype", go.dtype), copy=False)
        return F.avg_pool2d_backward(go, shape, *self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Dropout(Module):
    """Zero each element with probability ``p`` in train mode, scaling the rest by
    ``1 / (1 - p)`` (as ``torch.nn.Dropout``); the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
    inplace : bool, default False
    rng : None, int or numpy.random.Generator
        Source of the masks (default: the global generator, :func:`fastconv.nn.manual_seed`).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> drop = nn.Dropout(0.5, rng=0)
    >>> y = drop(np.ones(1000, np.float32))
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    >>> bool((drop.backward(np.ones(1000, np.float32)) == y).all())
    True
    >>> drop.eval()(np.ones(3, np.float32)).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, p=0.5, inplace=False, *, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)
        self._rng = None if rng is None else as_generator(rng, "Dropout")

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            gen = self._rng if self._rng is not None else as_generator(None)
            return _cuda.dropout_forward(self, x, gen)
        a = F.float_array(x, "Dropout")
        if not self.training or self.p == 0:
            self._keep(scale=None)
            return a
        gen = self._rng if self._rng is not None else as_generator(None)
        if self.p < 1:
            keep = gen.random(a.shape, dtype=a.dtype) >= self.p
            scale = keep * a.dtype.type(1.0 / (1.0 - self.p))
        else:
            scale = np.zeros(a.shape, a.dtype)
        self._keep(scale=scale)
        if self.inplace and a is x:
            a *= scale
            return a
        return a * scale

    def backward(self, grad_output, input_grad=True):
        # in eval mode (or p = 0) dropout is the identity, and so is its gradient
        scale = self._ctx.get("scale") if not self.training else self._take()["scale"]
        if not input_grad:
            return None
        if scale is None:
            return grad_output
        F.check_grad_shape("Dropout.backward", grad_output, scale.shape)
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.dropout_backward(grad_output, scale)
        return np.asarray(grad_output) * scale

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` into one (as ``torch.nn.Flatten``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> flat = nn.Flatten()
    >>> flat(np.zeros((64, 20, 4, 4))).shape, flat.backward(np.zeros((64, 320))).shape
    ((64, 320), (64, 20, 4, 4))
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x):
        gpu = on_gpu(x)
        a = x if gpu else np.asarray(x)
        nd = max(a.ndim, 1)
        s, e = self.start_dim % nd, self.end_dim % nd
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim}, end_dim={self.end_dim} "
                             f"do not fit an input of shape {a.shape}")
        if gpu and a.ndim:
            from . import _cuda
            y, shape = _cuda.flatten(a, s, e)
            self._keep(shape=shape, out=tuple(y.shape))
            return y
        out = a.shape[:s] + (math.prod(a.shape[s:e + 1]),) + a.shape[e + 1:] if a.ndim else (1,)
        self._keep(shape=a.shape, out=out)
        return a.reshape(out)

    def backward(self, grad_output, input_grad=True):
        ctx = self._take()
        shape = ctx["shape"]
        if not input_grad:
            return None
        if "out" in ctx:
            F.check_grad_shape("Flatten.backward", grad_output, ctx["out"])
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.reshape(grad_output, shape)
        return np.asarray(grad_output).reshape(shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class LogSoftmax(_OutputLayer):
    """``log(softmax(x))`` along ``dim`` (as ``torch.nn.LogSoftmax``; a numba kernel).

    Parameters
    ----------
    dim : int
        The class axis, e.g. 1 for (N, C) scores. None picks PyTorch's legacy default
        (0 for 0-, 1- and 3-D input, else 1).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> ls = nn.LogSoftmax(dim=1)
    >>> y = ls(np.zeros((2, 4), np.float32))
    >>> np.allclose(y, np.log(0.25)), ls.backward(np.zeros_like(y)).shape
    (True, (2, 4))
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def _dim(self, ndim):
        if self.dim is not None:
            return self.dim
        return 0 if ndim in (0, 1, 3) else 1

    def forward(self, x):
        if on_gpu(x):
            from . import _cuda
            return _cuda.log_softmax_forward(self, x)
        a = F.float_array(x, "LogSoftmax")
        return self._output(F.log_softmax(a, self._dim(a.ndim)))

    def _grad(self, grad_output, y):
        if on_gpu(grad_output):
            from . import _cuda
            return _cuda.log_softmax_backward(grad_output, y)
        return F.log_softmax_backward(grad_output, y, self._dim(y.ndim))

    def extra_repr(self):
        return f"dim={self.dim}"


class Identity(Module):
    """Returns its input (a placeholder, as ``torch.nn.Identity``).

    Examples
    --------
    >>> from fastconv import nn
    >>> nn.Identity()(3)
    3
    """

    def forward(self, x):
        return x

    def backward(self, grad_output, input_grad=True):
        return grad_output if input_grad else None
