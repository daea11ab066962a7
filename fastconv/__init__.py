"""fastconv: Numba-accelerated convolution (direct, im2col and FFT behind one dispatch API).

>>> import numpy as np, fastconv as fc
>>> fc.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))).tolist()
[[[[4.0, 4.0], [4.0, 4.0]]]]
"""
from . import _config  # noqa: F401  (environment defaults first)
from ._version import __version__

from . import grad
from ._conv import conv1d, conv2d, conv3d, conv_transpose2d
from .dispatch import Choice, choose_algorithm, get_precision, set_autotune, set_precision
from ._show_config import show_config

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose2d", "grad", "choose_algorithm",
           "set_autotune", "set_precision", "get_precision", "Choice", "show_config", "signal", "nn", "optim", "datasets",
           "__version__"]


def __getattr__(name):
    # submodules with heavier imports load on first use
    if name in ("signal", "nn", "optim", "datasets"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")
