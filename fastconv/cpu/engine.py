"""The CPU engine: runs one algorithm's kernel for one op on prepared arrays.

Arrays are 5-D ``(N, C, D, H, W)``, C-contiguous, already padded and in the compute
dtype. An algorithm's CPU kernels are a :class:`Kernels` triple (forward, input gradient,
weight gradient); :mod:`fastconv.dispatch` holds them in its registry, so the entry
points below take the triple, never an algorithm name. Kernels that an algorithm has no
dedicated form for are derived from its forward: the input gradient as the forward over
the zero-upsampled gradient with the flipped, transposed weight, the weight gradient as
the forward with the roles of images and channels swapped.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from .._spec import out_size
from .direct import direct_bwd_weight, direct_fwd
from .fft import fft_fwd
from .im2col import im2col_bwd_input, im2col_bwd_weight, im2col_fwd
from . import winograd


class Kernels(NamedTuple):
    """One algorithm's kernels, by op (outputs first where they take one)."""

    forward: Callable        # (xp, w, bias, stride, dilation, groups, out) -> out
    input_grad: Callable     # (go, w, padded_size, stride, dilation, groups) -> gxp
    weight_grad: Callable    # (xp, go, kernel, stride, dilation, groups) -> gw


def forward(xp, w, bias, stride, dilation, groups, kernels: Kernels, out=None):
    """Valid cross-correlation of padded ``xp`` (N, C, D, H, W) with ``w`` (O, C/g, kD, kH, kW)."""
    N = xp.shape[0]
    O = w.shape[0]
    shape = (N, O) + out_size(xp.shape[2:], w.shape[2:], stride, dilation)
    if out is None:
        out = np.empty(shape, dtype=xp.dtype)
    if bias is None:
        bias = np.zeros(O, dtype=xp.dtype)
    if N == 0:
        return out
    return kernels.forward(xp, w, bias, tuple(stride), tuple(dilation), groups, out)


def backward_input(go, w, padded_size, stride, dilation, groups, kernels: Kernels):
    """Gradient of ``forward`` with respect to the padded input; shape (N, C) + padded_size."""
    return kernels.input_grad(go, w, tuple(padded_size), tuple(stride), tuple(dilation), groups)


def backward_weight(xp, go, kernel, stride, dilation, groups, kernels: Kernels):
    """Gradient of ``forward`` with respect to the weight; shape (O, C/g) + kernel (the
    caller answers an empty batch: no kernel runs on N == 0)."""
    return kernels.weight_grad(xp, go, tuple(kernel), tuple(stride), tuple(dilation), groups)


# --- kernels derived from a forward ------------------------------------------------------
def transpose_weight(w, groups):
    """(O, C/g, k...) -> (C, O/g, k...) flipped: the weight of the adjoint convolution."""
    O, Cg = w.shape[:2]
    k = w.shape[2:]
    wt = w.reshape((groups, O // groups, Cg) + k).swapaxes(1, 2).reshape((groups * Cg, O // groups) + k)
    return np.ascontiguousarray(wt[:, :, ::-1, ::-1, ::-1])


def input_grad_by_forward(fwd, go, w, padded_size, stride, dilation, groups):
    """The adjoint as a stride-1 correlation of the zero-upsampled, fully padded gradient
    with the flipped, transposed kernel, run by the forward kernel ``fwd``."""
    N, O = go.shape[:2]
    C = w.shape[1] * groups
    ke = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation)]
    up = [(o - 1) * s + 1 + 2 * (e - 1) for o, s, e in zip(go.shape[2:], stride, ke)]
    u = np.zeros((N, O) + tuple(up), dtype=go.dtype)
    sl = tuple(slice(e - 1, e - 1 + (o - 1) * s + 1, s) for o, s, e in zip(go.shape[2:], stride, ke))
    u[(slice(None), slice(None)) + sl] = go
    res = forward(u, transpose_weight(w, groups), None, (1, 1, 1), dilation, groups,
                  Kernels(fwd, None, None))
    if tuple(res.shape[2:]) == tuple(padded_size):
        return res
    gxp = np.zeros((N, C) + tuple(padded_size), dtype=go.dtype)
    gxp[(slice(None), slice(None)) + tuple(slice(0, r) for r in res.shape[2:])] = res
    return gxp


def weight_grad_by_forward(fwd, xp, go, kernel, stride, dilation, groups):
    """Roles swapped: gw[o, c, k] = sum_{n,p} xp[n, c, p*s + k*d] go[n, o, p] is a forward
    correlation with batch = input channels, channels = images, kernel = grad_out,
    stride = dilation and dilation = stride, run by the forward kernel ``fwd``."""
    O = go.shape[1]
    C = xp.shape[1]
    Cg, Og = C // groups, O // groups
    gw = np.empty((O, Cg) + tuple(kernel), dtype=xp.dtype)
    crop = (slice(None), slice(None)) + tuple(slice(0, k) for k in kernel)
    for g in range(groups):
        xs = np.ascontiguousarray(xp[:, g * Cg:(g + 1) * Cg].swapaxes(0, 1))
        ws = np.ascontiguousarray(go[:, g * Og:(g + 1) * Og].swapaxes(0, 1))
        r = forward(xs, ws, None, dilation, stride, 1, Kernels(fwd, None, None))  # (Cg, Og, k'...)
        gw[g * Og:(g + 1) * Og] = r[crop].swapaxes(0, 1)
    return gw


DIRECT = Kernels(direct_fwd, functools.partial(input_grad_by_forward, direct_fwd),
                 direct_bwd_weight)
IM2COL = Kernels(im2col_fwd, im2col_bwd_input, im2col_bwd_weight)
FFT = Kernels(fft_fwd, functools.partial(input_grad_by_forward, fft_fwd),
              functools.partial(weight_grad_by_forward, fft_fwd))
# Winograd F(4x4,3x3) / F(2x2,3x3): forward and input gradient (the same correlation over
# the flipped, transposed weight); the weight gradient is im2col's GEMM
WINOGRAD = Kernels(functools.partial(winograd.forward, 4),
                   functools.partial(winograd.bwd_input, 4, transpose_weight), im2col_bwd_weight)
WINOGRAD_F2 = Kernels(functools.partial(winograd.forward, 2),
                      functools.partial(winograd.bwd_input, 2, transpose_weight),
                      im2col_bwd_weight)
