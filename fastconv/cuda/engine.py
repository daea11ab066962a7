"""Run a prepared convolution on the GPU: 5-D, C-contiguous, already padded device arrays.

The GPU twin of :mod:`fastconv._engine`, with the same three entry points and the same
structure per algorithm:

- forward: ``direct`` (shared-memory tiles), ``im2col`` (implicit GEMM), ``fft``;
- backward_input: a stride-1 correlation of the zero-upsampled, fully padded gradient
  with the flipped, transposed kernel, run by the chosen algorithm's forward kernel;
- backward_weight: ``im2col`` and ``direct`` use the split-K implicit-GEMM reduction
  (on a GPU the direct weight gradient *is* that reduction: one tile of (o, c, k) per
  block over all images and positions); ``fft`` swaps roles as on the CPU (batch = input
  channels, channels = images, kernel = the output gradient).
"""
from __future__ import annotations

import numpy as np

from . import direct_kernel, fft_kernel, gemm_kernel, pad_kernel
from . import runtime as rt

ALGORITHMS = ("direct", "im2col", "fft")
_FWD = {"direct": direct_kernel.direct_fwd, "im2col": gemm_kernel.conv_fwd,
        "fft": fft_kernel.fft_fwd}


def out_size(padded, kernel, stride, dilation):
    return tuple((p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation))


def zero_bias(n, dtype):
    return rt.const(("zero_bias", int(n), np.dtype(dtype).str), lambda: np.zeros(int(n), dtype))


def forward(xp, w, bias, stride, dilation, groups, algorithm, out=None):
    """Valid cross-correlation of padded ``xp`` (N, C, D, H, W) with ``w`` (O, C/g, kD, kH, kW)."""
    N = xp.shape[0]
    O = w.shape[0]
    shape = (N, O) + out_size(xp.shape[2:], w.shape[2:], stride, dilation)
    if out is None:
        out = rt.empty(shape, xp.dtype)
    if bias is None:
        bias = zero_bias(O, xp.dtype)
    if N == 0 or out.size == 0:
        return out
    return _FWD[algorithm](xp, w, bias, tuple(stride), tuple(dilation), groups, out)


def backward_input(go, w, padded_size, stride, dilation, groups, algorithm):
    """Gradient of ``forward`` with respect to the padded input; shape (N, C) + padded_size."""
    N, O = go.shape[:2]
    Og = O // groups
    C = w.shape[1] * groups
    kernel = tuple(w.shape[2:])
    ke = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    up = tuple(p + e - 1 for p, e in zip(padded_size, ke))
    gxp = rt.empty((N, C) + tuple(padded_size), go.dtype)
    if N == 0:
        return gxp
    u = rt.workspace("bwd_input_up", (N, O) + up, go.dtype)
    maps = tuple(pad_kernel.upsample_map(o, n, e - 1, s)
                 for o, n, e, s in zip(go.shape[2:], up, ke, stride))
    pad_kernel.gather5(u, go, maps)
    wt = rt.workspace("bwd_input_wt", (C, Og) + kernel, go.dtype)
    pad_kernel.transpose_flip(wt, w, groups)
    return forward(u, wt, None, (1, 1, 1), dilation, groups, algorithm, gxp)


def backward_weight(xp, go, kernel, stride, dilation, groups, algorithm):
    """Gradient of ``forward`` with respect to the weight; shape (O, C/g) + kernel."""
    O = go.shape[1]
    N, C = xp.shape[:2]
    Cg, Og = C // groups, O // groups
    if N == 0:
        return rt.zeros((O, Cg) + tuple(kernel), xp.dtype)
    if algorithm != "fft":
        return gemm_kernel.conv_bwd_weight(xp, go, tuple(kernel), stride, dilation, groups)
    # fft: gw[o, c, k] = sum_{n,p} xp[n, c, p*s + k*d] go[n, o, p] is a forward correlation
    # with batch = input channels, channels = images, kernel = grad_out, stride = dilation
    # and dilation = stride.
    gw = rt.empty((O, Cg) + tuple(kernel), xp.dtype)
    S = int(np.prod(xp.shape[2:]))
    P = int(np.prod(go.shape[2:]))
    xs = rt.workspace("bwd_weight_xs", (Cg, N) + tuple(xp.shape[2:]), xp.dtype)
    gs = rt.workspace("bwd_weight_gs", (Og, N) + tuple(go.shape[2:]), xp.dtype)
    xst = _inner_strides(xp.shape[2:])
    gst = _inner_strides(go.shape[2:])
    for g in range(groups):
        pad_kernel.copy5(xs, rt.sub(xp, g * Cg * S, xs.shape, (S, C * S) + xst))
        pad_kernel.copy5(gs, rt.sub(go, g * Og * P, gs.shape, (P, O * P) + gst))
        r = forward(xs, gs, None, dilation, stride, 1, "fft")         # (Cg, Og, k'...)
        rk = r.shape[2:]
        rst = _inner_strides(rk)
        R = int(np.prod(rk))
        view = rt.sub(r, 0, (Og, Cg) + tuple(kernel), (R, Og * R) + rst)
        pad_kernel.copy5(gw[g * Og:(g + 1) * Og], view)
    return gw


def _inner_strides(shape):
    D, H, W = shape
    return (H * W, W, 1)
