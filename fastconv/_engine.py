"""Run a prepared convolution on a backend: 5-D, C-contiguous, already padded arrays.

``forward``, ``backward_input`` and ``backward_weight`` take the algorithm by name and
are shared by conv1d/2d/3d, conv_transpose2d, the gradient helpers, the nn layers and
fastconv.signal: there is one code path per algorithm.
"""
import numpy as np

from .cpu.direct import direct_bwd_weight, direct_fwd
from .cpu.fft import fft_fwd
from .cpu.im2col import im2col_bwd_input, im2col_bwd_weight, im2col_fwd

_FWD = {"direct": direct_fwd, "im2col": im2col_fwd, "fft": fft_fwd}


def out_size(padded, kernel, stride, dilation):
    return tuple((p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation))


def forward(xp, w, bias, stride, dilation, groups, algorithm, out=None):
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
    return _FWD[algorithm](xp, w, bias, tuple(stride), tuple(dilation), groups, out)


def transpose_weight(w, groups):
    """(O, C/g, k...) -> (C, O/g, k...) flipped: the weight of the adjoint convolution."""
    O, Cg = w.shape[:2]
    k = w.shape[2:]
    wt = w.reshape((groups, O // groups, Cg) + k).swapaxes(1, 2).reshape((groups * Cg, O // groups) + k)
    return np.ascontiguousarray(wt[:, :, ::-1, ::-1, ::-1])


def backward_input(go, w, padded_size, stride, dilation, groups, algorithm):
    """Gradient of ``forward`` with respect to the padded input; shape (N, C) + padded_size."""
    if algorithm == "im2col":
        return im2col_bwd_input(go, w, padded_size, stride, dilation, groups)
    # Adjoint as a stride-1 correlation of the zero-upsampled, fully padded gradient with the
    # flipped, transposed kernel (the same forward kernels).
    N, O = go.shape[:2]
    C = w.shape[1] * groups
    ke = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation)]
    up = [(o - 1) * s + 1 + 2 * (e - 1) for o, s, e in zip(go.shape[2:], stride, ke)]
    u = np.zeros((N, O) + tuple(up), dtype=go.dtype)
    sl = tuple(slice(e - 1, e - 1 + (o - 1) * s + 1, s) for o, s, e in zip(go.shape[2:], stride, ke))
    u[(slice(None), slice(None)) + sl] = go
    res = forward(u, transpose_weight(w, groups), None, (1, 1, 1), dilation, groups, algorithm)
    if tuple(res.shape[2:]) == tuple(padded_size):
        return res
    gxp = np.zeros((N, C) + tuple(padded_size), dtype=go.dtype)
    gxp[(slice(None), slice(None)) + tuple(slice(0, r) for r in res.shape[2:])] = res
    return gxp


def backward_weight(xp, go, kernel, stride, dilation, groups, algorithm):
    """Gradient of ``forward`` with respect to the weight; shape (O, C/g) + kernel."""
    if xp.shape[0] == 0:
        return np.zeros((go.shape[1], xp.shape[1] // groups) + tuple(kernel), dtype=xp.dtype)
    if algorithm == "im2col":
        return im2col_bwd_weight(xp, go, kernel, stride, dilation, groups)
    if algorithm == "direct":
        return direct_bwd_weight(xp, go, kernel, stride, dilation, groups)
    # fft: roles swapped. gw[o, c, k] = sum_{n,p} xp[n, c, p*s + k*d] go[n, o, p] is a forward
    # correlation with batch = input channels, channels = images, kernel = grad_out,
    # stride = dilation and dilation = stride.
    O = go.shape[1]
    C = xp.shape[1]
    Cg, Og = C // groups, O // groups
    gw = np.empty((O, Cg) + tuple(kernel), dtype=xp.dtype)
    crop = (slice(None), slice(None)) + tuple(slice(0, k) for k in kernel)
    for g in range(groups):
        xs = np.ascontiguousarray(xp[:, g * Cg:(g + 1) * Cg].swapaxes(0, 1))
        ws = np.ascontiguousarray(go[:, g * Og:(g + 1) * Og].swapaxes(0, 1))
        r = forward(xs, ws, None, dilation, stride, 1, algorithm)    # (Cg, Og, k'...)
        gw[g * Og:(g + 1) * Og] = r[crop].swapaxes(0, 1)
    return gw
