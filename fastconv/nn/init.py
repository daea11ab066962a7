"""Parameter initialisation (PyTorch's rules), drawing from a ``numpy.random.Generator``."""
from __future__ import annotations

import math

import numpy as np

from .module import Parameter, as_generator

__all__ = ["calculate_fan_in_and_fan_out", "calculate_gain", "uniform_", "kaiming_uniform_"]


def calculate_fan_in_and_fan_out(shape):
    """``(fan_in, fan_out)`` of a weight of this shape, as PyTorch computes them.

    Examples
    --------
    >>> from fastconv.nn import init
    >>> init.calculate_fan_in_and_fan_out((10, 1, 5, 5))
    (25, 250)
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"calculate_fan_in_and_fan_out: needs at least 2 dimensions, got "
                         f"shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gain for ``'linear'``, ``'conv2d'``, ``'relu'``, ``'leaky_relu'``,
    ``'tanh'``, ``'sigmoid'``.

    Examples
    --------
    >>> from fastconv.nn import init
    >>> round(init.calculate_gain("leaky_relu", 5 ** 0.5), 6)   # sqrt(1/3)
    0.57735
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _target(p):
    return p.data if isinstance(p, Parameter) else p


def uniform_(param, a=0.0, b=1.0, rng=None):
    """Fill ``param`` (a :class:`Parameter` or ndarray) in place from U(a, b).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import init
    >>> w = init.uniform_(np.empty(1000), -1, 1, rng=0)
    >>> bool(-1 <= w.min() and w.max() <= 1)
    True
    """
    arr = _target(param)
    gen = as_generator(rng, "uniform_")
    arr[...] = gen.uniform(a, b, size=arr.shape)
    return param


def kaiming_uniform_(param, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He initialisation: U(-bound, bound), ``bound = gain * sqrt(3 / fan)``.

    ``a=sqrt(5)`` (what Conv2d and Linear use) gives ``bound = 1 / sqrt(fan_in)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import init
    >>> w = init.kaiming_uniform_(np.empty((50, 320)), a=5 ** 0.5, rng=0)
    >>> bool(np.abs(w).max() <= 1 / np.sqrt(320))
    True
    """
    arr = _target(param)
    fan_in, fan_out = calculate_fan_in_and_fan_out(arr.shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        return param
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(param, -bound, bound, rng)
