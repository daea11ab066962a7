"""The GPU engine: runs one algorithm's kernel for one op on prepared device arrays.

The GPU twin of :mod:`fastconv.cpu.engine` (5-D, C-contiguous, already padded arrays;
an algorithm's kernels are a :class:`~fastconv.cpu.engine.Kernels` triple that the
registry in :mod:`fastconv.dispatch` names). ``forward`` allocates device arrays;
``backward_input`` / ``backward_weight`` are the CPU engine's (they only pick the
triple's kernel). The structure per algorithm:

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

import functools

from .._spec import out_size
from ..cpu.engine import Kernels, backward_input, backward_weight  # noqa: F401 (the same dispatch)
from . import array_kernel, direct_kernel, fft_kernel, gemm_kernel
from . import runtime


def zero_bias(n, dtype):
    return runtime.const(("zero_bias", int(n), np.dtype(dtype).str), lambda: np.zeros(int(n), dtype))


def forward(xp, w, bias, stride, dilation, groups, kernels: Kernels, out=None):
    """Valid cross-correlation of padded ``xp`` (N, C, D, H, W) with ``w`` (O, C/g, kD, kH, kW)."""
    N = xp.shape[0]
    O = w.shape[0]
    shape = (N, O) + out_size(xp.shape[2:], w.shape[2:], stride, dilation)
    if out is None:
        out = runtime.empty(shape, xp.dtype)
    if bias is None:
        bias = zero_bias(O, xp.dtype)
    if N == 0 or out.size == 0:
        return out
    return kernels.forward(xp, w, bias, tuple(stride), tuple(dilation), groups, out)


def input_grad_by_forward(fwd, go, w, padded_size, stride, dilation, groups):
    """The adjoint: the forward kernel ``fwd`` over the zero-upsampled, fully padded
    gradient with the flipped, transposed weight (stride 1)."""
    N, O = go.shape[:2]
    Og = O // groups
    C = w.shape[1] * groups
    kernel = tuple(w.shape[2:])
    ke = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    up = tuple(p + e - 1 for p, e in zip(padded_size, ke))
    gxp = runtime.empty((N, C) + tuple(padded_size), go.dtype)
    if N == 0:
        return gxp
    u = runtime.workspace("bwd_input_up", (N, O) + up, go.dtype)
    maps = tuple(array_kernel.upsample_map(o, n, e - 1, s)
                 for o, n, e, s in zip(go.shape[2:], up, ke, stride))
    array_kernel.gather5(u, go, maps)
    wt = runtime.workspace("bwd_input_wt", (C, Og) + kernel, go.dtype)
    array_kernel.transpose_flip(wt, w, groups)
    return forward(u, wt, None, (1, 1, 1), dilation, groups, Kernels(fwd, None, None), gxp)


def weight_grad_by_forward(fwd, xp, go, kernel, stride, dilation, groups):
    """gw[o, c, k] = sum_{n,p} xp[n, c, p*s + k*d] go[n, o, p] as a forward correlation
    (kernel ``fwd``) with batch = input channels, channels = images, kernel = grad_out,
    stride = dilation and dilation = stride."""
    O = go.shape[1]
    N, C = xp.shape[:2]
    Cg, Og = C // groups, O // groups
    gw = runtime.empty((O, Cg) + tuple(kernel), xp.dtype)
    S = int(np.prod(xp.shape[2:]))
    P = int(np.prod(go.shape[2:]))
    xs = runtime.workspace("bwd_weight_xs", (Cg, N) + tuple(xp.shape[2:]), xp.dtype)
    gs = runtime.workspace("bwd_weight_gs", (Og, N) + tuple(go.shape[2:]), xp.dtype)
    xst = _inner_strides(xp.shape[2:])
    gst = _inner_strides(go.shape[2:])
    for g in range(groups):
        array_kernel.copy5(xs, runtime.sub(xp, g * Cg * S, xs.shape, (S, C * S) + xst))
        array_kernel.copy5(gs, runtime.sub(go, g * Og * P, gs.shape, (P, O * P) + gst))
        r = forward(xs, gs, None, dilation, stride, 1, Kernels(fwd, None, None))  # (Cg, Og, k'...)
        rk = r.shape[2:]
        rst = _inner_strides(rk)
        R = int(np.prod(rk))
        view = runtime.sub(r, 0, (Og, Cg) + tuple(kernel), (R, Og * R) + rst)
        array_kernel.copy5(gw[g * Og:(g + 1) * Og], view)
    return gw


def _inner_strides(shape):
    D, H, W = shape
    return (H * W, W, 1)


# On a GPU the direct weight gradient *is* the split-K implicit-GEMM reduction.
DIRECT = Kernels(direct_kernel.direct_fwd,
                 functools.partial(input_grad_by_forward, direct_kernel.direct_fwd),
                 gemm_kernel.im2col_bwd_weight)
IM2COL = Kernels(gemm_kernel.im2col_fwd,
                 functools.partial(input_grad_by_forward, gemm_kernel.im2col_fwd),
                 gemm_kernel.im2col_bwd_weight)
FFT = Kernels(fft_kernel.fft_fwd, functools.partial(input_grad_by_forward, fft_kernel.fft_fwd),
              functools.partial(weight_grad_by_forward, fft_kernel.fft_fwd))
