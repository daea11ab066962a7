"""Classification losses. ``loss_fn(out, target)`` returns the loss (a float with the
default ``reduction='mean'``); ``loss_fn.backward()`` then returns dL/d out."""
from __future__ import annotations

import numpy as np

from . import functional as F
from .module import Module, on_gpu

__all__ = ["NLLLoss", "CrossEntropyLoss"]


class _Loss(Module):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__()
        if reduction not in F.REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {F.REDUCTIONS}, "
                             f"got {reduction!r}")
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = int(ignore_index)
        self.reduction = reduction

    def backward(self, grad=None):
        """dL/d input of the last call. ``grad``: dL/d loss (default 1; with
        ``reduction='none'`` an array of the loss's shape)."""
        ctx = self._ctx.get("loss")
        if ctx is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call the loss on a batch first "
                               f"(backward runs once per call)")
        self._ctx.clear()
        if type(ctx) is dict:                     # the GPU path's (see fastconv.nn._cuda)
            from . import _cuda
            return _cuda.loss_backward(ctx, grad)
        return self._backward(ctx, grad)



class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (as ``torch.nn.NLLLoss``).

    Parameters
    ----------
    weight : array_like, shape (C,), optional
        Per-class weights; the mean divides by the sum of the targets' weights.
    ignore_index : int, default -100
        Targets equal to it contribute nothing.
    reduction : {'mean', 'sum', 'none'}

    Notes
    -----
    ``input`` (N, C) (or (C,), or (N, C, d1, ...)) holds log-probabilities, e.g. a
    :class:`LogSoftmax` output; ``target`` (N,) holds class indices (any integer dtype).

    On a GPU array input (N, C) the loss is computed on the device and returned as a float
    (one scalar copied back); ``backward()`` returns a device array. ``target`` may be a
    host array or a GPU array (int64 avoids a conversion; GPU targets are not
    range-checked). Class weights, ``reduction='none'`` and ``ignore_index`` targets are
    CPU only (``NotImplementedError`` on the GPU).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss_fn = nn.NLLLoss()
    >>> logp = np.log(np.array([[0.5, 0.5], [0.25, 0.75]], np.float32))
    >>> round(loss_fn(logp, np.array([0, 1], np.uint8)), 4)
    0.4904
    >>> loss_fn.backward()
    array([[-0.5,  0. ],
           [ 0. , -0.5]], dtype=float32)
    """

    def forward(self, input, target):
        if on_gpu(input):
            from . import _cuda
            return _cuda.loss_forward(self, input, target, "NLLLoss", log_softmax=False)
        logp = F.float_array(input, "NLLLoss")
        loss, ctx = F._nll("NLLLoss", logp, target, self.weight, self.ignore_index,
                           self.reduction)
        self._ctx["loss"] = ctx
        return loss

    def _backward(self, ctx, grad):
        g, back = F._nll_grad(ctx, grad)
        return back(g)


class CrossEntropyLoss(_Loss):
    """Log-softmax over the class axis followed by :class:`NLLLoss` (as
    ``torch.nn.CrossEntropyLoss`` with class-index targets).

    Parameters
    ----------
    weight, ignore_index, reduction :
        As for :class:`NLLLoss` (and so is the GPU path).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss_fn = nn.CrossEntropyLoss()
    >>> round(loss_fn(np.zeros((2, 2), np.float32), np.array([0, 1])), 4)   # log(2)
    0.6931
    >>> loss_fn.backward()
    array([[-0.25,  0.25],
           [ 0.25, -0.25]], dtype=float32)
    """

    def forward(self, input, target):
        if on_gpu(input):
            from . import _cuda
            return _cuda.loss_forward(self, input, target, "CrossEntropyLoss", log_softmax=True)
        x = F.float_array(input, "CrossEntropyLoss")
        dim = 0 if x.ndim == 1 else 1
        logp = F.log_softmax(x, dim)
        loss, ctx = F._nll("CrossEntropyLoss", logp, target, self.weight, self.ignore_index,
                           self.reduction)
        self._ctx["loss"] = (ctx, logp, dim)
        return loss

    def _backward(self, ctx, grad):
        nll_ctx, logp, dim = ctx
        g, back = F._nll_grad(nll_ctx, grad)
        return F.log_softmax_backward(back(g), logp, dim)
