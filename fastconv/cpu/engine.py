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
import itertools
import math
from typing import Callable, NamedTuple, Optional

import numpy as np

from .._spec import out_size
from ._common import workspace
from .direct import (direct_bwd_weight, direct_fwd, direct_fwd_window, padded_copy,
                     runs_lanes)
from .fft import abs_max, fft_fwd
from .im2col import im2col_bwd_input, im2col_bwd_weight, im2col_fwd
from . import depthwise, minor, winograd


class Kernels(NamedTuple):
    """One algorithm's kernels, by op (outputs first where they take one)."""

    forward: Callable        # (xp, w, bias, stride, dilation, groups, out) -> out
    input_grad: Callable     # (go, w, padded_size, stride, dilation, groups) -> gxp
    weight_grad: Callable    # (xp, go, kernel, stride, dilation, groups) -> gw
    #: optional: (go, w, padded_size, window, stride, dilation, groups) -> the input
    #: gradient over a window ((start, size) per axis) of the padded input, or None where
    #: it cannot (then the full gradient is cropped)
    input_grad_window: Optional[Callable] = None
    #: optional: (x, w, bias, stride, dilation, groups, out, origin, padded) -> out, the
    #: forward of a zero input of spatial size ``padded`` holding x at ``origin``, its
    #: padding read in place (without it, x is first copied into a padded array)
    forward_window: Optional[Callable] = None
    #: optional: (x, go, kernel, stride, dilation, groups, origin, padded) -> the weight
    #: gradient for such an input (as forward_window)
    weight_grad_window: Optional[Callable] = None


def forward(xp, w, bias, stride, dilation, groups, kernels: Kernels, out=None, origin=None,
            padded=None):
    """Valid cross-correlation of padded ``xp`` (N, C, D, H, W) with ``w`` (O, C/g, kD, kH,
    kW); with ``origin`` and ``padded``, of a zero input of spatial size ``padded``
    holding ``xp`` at ``origin`` (zero padding, padded by the kernel or here)."""
    N = xp.shape[0]
    O = w.shape[0]
    shape = (N, O) + out_size(xp.shape[2:] if padded is None else padded, w.shape[2:],
                              stride, dilation)
    if out is None:
        out = np.empty(shape, dtype=xp.dtype)
    if bias is None:
        bias = np.zeros(O, dtype=xp.dtype)
    if N == 0:
        return out
    args = (tuple(stride), tuple(dilation), groups, out)
    if padded is not None and tuple(padded) != xp.shape[2:]:
        if kernels.forward_window is not None:
            return kernels.forward_window(xp, w, bias, *args, tuple(origin), tuple(padded))
        xp = padded_copy(xp, origin, padded)
    return kernels.forward(xp, w, bias, *args)


def backward_input(go, w, padded_size, stride, dilation, groups, kernels: Kernels,
                   window=None):
    """Gradient of ``forward`` with respect to the padded input; shape (N, C) + padded_size,
    or only over ``window`` ((start, size) per axis: the unpadded input of a zero-padded
    convolution, whose padding's gradient is dropped), C-contiguous."""
    args = (tuple(stride), tuple(dilation), groups)
    if window is not None:
        if kernels.input_grad_window is not None:
            g = kernels.input_grad_window(go, w, tuple(padded_size), tuple(window), *args)
            if g is not None:
                return g
        full = kernels.input_grad(go, w, tuple(padded_size), *args)
        return np.ascontiguousarray(full[(slice(None), slice(None))
                                         + tuple(slice(a, a + n) for a, n in window)])
    return kernels.input_grad(go, w, tuple(padded_size), *args)


def backward_weight(xp, go, kernel, stride, dilation, groups, kernels: Kernels, origin=None,
                    padded=None):
    """Gradient of ``forward`` with respect to the weight; shape (O, C/g) + kernel (the
    caller answers an empty batch: no kernel runs on N == 0); with ``origin`` and
    ``padded``, ``xp`` is the input before its zero padding (as in :func:`forward`)."""
    args = (tuple(kernel), tuple(stride), tuple(dilation), groups)
    if padded is not None and tuple(padded) != xp.shape[2:]:
        if kernels.weight_grad_window is not None:
            return kernels.weight_grad_window(xp, go, *args, tuple(origin), tuple(padded))
        xp = padded_copy(xp, origin, padded)
    return kernels.weight_grad(xp, go, *args)


# --- kernels derived from a forward ------------------------------------------------------
def transpose_weight(w, groups):
    """(O, C/g, k...) -> (C, O/g, k...) flipped: the weight of the adjoint convolution."""
    O, Cg = w.shape[:2]
    k = w.shape[2:]
    wt = w.reshape((groups, O // groups, Cg) + k).swapaxes(1, 2).reshape((groups * Cg, O // groups) + k)
    return np.ascontiguousarray(wt[:, :, ::-1, ::-1, ::-1])


@functools.lru_cache(maxsize=1024)     # (tuples; asked on every call of a shape)
def polyphase(out_size, stride, dilation, kernel, padded_size):
    """The polyphase plan of the adjoint, per spatial axis: (P, U, dl, phases) where
    grad_out sits at [P, P + out) of a zero line of U, dl is the phases' dilation and
    each phase with taps is (r, first tap, tap step, J taps, a_last, M outputs): padded-
    input positions m*s + r, m < M, are the correlation's outputs P - a_last + m."""
    dims = []
    for o, s, d, k, ip in zip(out_size, stride, dilation, kernel, padded_size):
        P = (k - 1) * d // s
        step = s // math.gcd(s, d)
        dl = d // math.gcd(s, d)
        phases = []
        for r in range(s):
            ks = [t for t in range(k) if t * d % s == r]
            M = -(-(ip - r) // s) if ip > r else 0
            if ks and M:
                phases.append((r, ks[0], step, len(ks), ks[-1] * d // s, M))
        U = max([P + o] + [P - a + M + (J - 1) * dl for r, k0, st, J, a, M in phases])
        dims.append((P, U, dl, tuple(phases)))
    return tuple(dims)


def input_grad_by_forward(fwd, go, w, padded_size, stride, dilation, groups):
    """The adjoint (transposed convolution) run by the forward kernel ``fwd``, polyphase:
    the padded-input positions i = m*s + r of phase r receive only the taps k with
    k*d = a_k*s + r, so per phase it is a stride-1 correlation of grad_out (padded by
    max a_k in front) with those taps' weights flipped and transposed, at dilation
    d / gcd(s, d). Each tap is used by one phase: no work on inserted zeros (stride^nd
    of it otherwise) and no scatter-add. A non-finite weight takes direct_input_grad (the
    zeros around grad_out would turn it into NaN where no true term reaches)."""
    if not math.isfinite(abs_max(w)):
        return direct_input_grad(go, w, padded_size, stride, dilation, groups)
    N, O = go.shape[:2]
    C = w.shape[1] * groups
    dims = polyphase(go.shape[2:], stride, dilation, w.shape[2:], padded_size)
    u = workspace("igrad_u", (N, O) + tuple(U for _, U, _, _ in dims), go.dtype)
    u[...] = 0
    u[(slice(None), slice(None)) + tuple(slice(P, P + o) for (P, _, _, _), o
                                         in zip(dims, go.shape[2:]))] = go
    wt = transpose_weight(w, groups)[:, :, ::-1, ::-1, ::-1]    # unflipped (C, O/g, k...)
    full = all(len(ph) == s for (_, _, _, ph), s in zip(dims, stride))
    gxp = (np.empty if full else np.zeros)((N, C) + tuple(padded_size), dtype=go.dtype)
    dl = tuple(dl for _, _, dl, _ in dims)
    for pd, ph, pw in itertools.product(*(ph for _, _, _, ph in dims)):
        sub = np.ascontiguousarray(wt[:, :, pd[1]::pd[2], ph[1]::ph[2], pw[1]::pw[2]]
                                   [:, :, :pd[3], :ph[3], :pw[3]][:, :, ::-1, ::-1, ::-1])
        res = forward(u, sub, None, (1, 1, 1), dl, groups, Kernels(fwd, None, None))
        win = tuple(slice(P - p[4], P - p[4] + p[5]) for (P, _, _, _), p
                    in zip(dims, (pd, ph, pw)))
        src = res[(slice(None), slice(None)) + win]
        if stride == (1, 1, 1) and src.shape == res.shape:
            return res
        gxp[(slice(None), slice(None)) + tuple(slice(p[0], None, s) for p, s
                                               in zip((pd, ph, pw), stride))] = src
    return gxp


def direct_input_grad(go, w, padded_size, stride, dilation, groups):
    """The adjoint by the direct forward kernel, polyphase (see input_grad_by_forward),
    each phase on the grid of its own outputs: grad_out sits in rows and columns of that
    width, shifted by the phase's last tap, so that the forward's line (cpu/direct.py)
    reads the zeros of the row gaps where a wider padded grid would need extra columns,
    and every position of the line is an output (no wrap-around columns to drop).
    A non-finite weight takes cpu/minor.py's kernel, which sums only the taps that reach
    grad_out: on the zero-padded lines inf or NaN times 0 would be NaN where no true term
    is (im2col's GEMM and the definition have none). Depthwise layers where
    direct.runs_lanes says so run cpu/depthwise.input_grad first (the definition's terms
    only, whatever the weight holds)."""
    N, O = go.shape[:2]
    C = w.shape[1] * groups
    if N == 0:
        return np.zeros((N, C) + tuple(padded_size), dtype=go.dtype)
    lanes = direct_input_grad_window(go, w, padded_size, None, stride, dilation, groups)
    if lanes is not None:
        return lanes
    dims = polyphase(go.shape[2:], stride, dilation, w.shape[2:], padded_size)
    wt = transpose_weight(w, groups)[:, :, ::-1, ::-1, ::-1]    # unflipped (C, O/g, k...)
    full = all(len(ph) == s for (_, _, _, ph), s in zip(dims, stride))
    gxp = None
    zero = np.zeros(C, dtype=go.dtype)
    dl = tuple(d[2] for d in dims)
    exact = not math.isfinite(abs_max(w))
    for phase in itertools.product(*(ph for _, _, _, ph in dims)):
        # u: rows of the phase's output width M, grad_out at (a_last...) and, for the
        # line's reads past the last row, one zero row more
        M = tuple(p[5] for p in phase)
        ushape = (M[0] + (phase[0][3] - 1) * dl[0], M[1] + (phase[1][3] - 1) * dl[1] + 1, M[2])
        sub = np.ascontiguousarray(
            wt[:, :, phase[0][1]::phase[0][2], phase[1][1]::phase[1][2], phase[2][1]::phase[2][2]]
            [:, :, :phase[0][3], :phase[1][3], :phase[2][3]][:, :, ::-1, ::-1, ::-1])
        out = np.empty((N, C) + M, dtype=go.dtype)
        origin = tuple(p[4] for p in phase)
        if exact:
            minor.minor_fwd(go, sub, zero, (1, 1, 1), dl, groups, out, origin)
        else:
            direct_fwd(go, sub, zero, (1, 1, 1), dl, groups, out, origin, ushape)
        if stride == (1, 1, 1):
            return out
        if gxp is None:
            gxp = (np.empty if full else np.zeros)((N, C) + tuple(padded_size), dtype=go.dtype)
        gxp[(slice(None), slice(None)) + tuple(slice(p[0], None, s) for p, s
                                               in zip(phase, stride))] = out
    if gxp is None:
        gxp = np.zeros((N, C) + tuple(padded_size), dtype=go.dtype)
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


def direct_input_grad_window(go, w, padded_size, window, stride, dilation, groups):
    """Kernels.input_grad_window of the direct algorithm (over the whole padded input
    for ``window`` None): depthwise layers where direct.runs_lanes says so run
    cpu/depthwise.input_grad (the definition's terms, whatever the weight holds), which
    computes just the window; None elsewhere (the caller crops the full gradient)."""
    if go.shape[0] == 0 or not runs_lanes(groups, w.shape[1], w.shape[0] // groups,
                                          w.shape[2:], go.shape[2:], tuple(stride),
                                          tuple(dilation), tuple(padded_size), go.dtype):
        return None
    gx = depthwise.input_grad(go[:, :, 0], w[:, 0, 0], tuple(stride[1:]), tuple(dilation[1:]),
                              tuple(padded_size[1:]), None if window is None else
                              tuple(window[1:]))
    return gx[:, :, None]


def direct_weight_grad_window(x, go, kernel, stride, dilation, groups, origin, padded):
    """Kernels.weight_grad_window of the direct algorithm: depthwise layers where
    direct.runs_lanes says so read the zero padding in place (cpu/depthwise.weight_grad),
    the others run on a padded copy."""
    if runs_lanes(groups, x.shape[1] // groups, go.shape[1] // groups, kernel, go.shape[2:],
                  stride, dilation, padded, x.dtype):
        return _lanes_weight_grad(x, go, kernel, stride, dilation, origin, padded)
    return direct_weight_grad(padded_copy(x, origin, padded), go, kernel, stride, dilation,
                              groups)


def _lanes_weight_grad(x, go, kernel, stride, dilation, origin=(0, 0, 0), padded=None):
    gw = depthwise.weight_grad(x[:, :, 0], go[:, :, 0], kernel[1:], stride[1:], dilation[1:],
                               origin[1:], x.shape[3:] if padded is None else padded[1:])
    return gw.reshape(gw.shape[:1] + (1, 1) + gw.shape[1:])


def direct_weight_grad(xp, go, kernel, stride, dilation, groups):
    """The direct weight gradient. Its register tiles run along grad_out lines on the
    padded-width grid, whose wrap-around columns multiply zeros by inputs that no tap
    reads: with a NaN or inf in ``xp`` that would be inf * 0 = NaN where the sum has no
    such term, so non-finite inputs take im2col's GEMM (the same terms, no others).
    The check is on the (small) result: the kernel's terms include every true term, so
    a finite result means every term it summed was finite (the extra ones exactly 0)
    and it is the true sum; a non-finite one is recomputed by im2col."""
    if runs_lanes(groups, xp.shape[1] // groups, go.shape[1] // groups, tuple(kernel),
                  go.shape[2:], tuple(stride), tuple(dilation), xp.shape[2:], xp.dtype):
        # depthwise: cpu/depthwise.py, channels in the lanes (the definition's terms only)
        return _lanes_weight_grad(xp, go, kernel, stride, dilation)
    gw = direct_bwd_weight(xp, go, kernel, stride, dilation, groups)
    if not math.isfinite(abs_max(gw)):
        return im2col_bwd_weight(xp, go, kernel, stride, dilation, groups)
    return gw


DIRECT = Kernels(direct_fwd, direct_input_grad, direct_weight_grad, direct_input_grad_window,
                 direct_fwd_window, direct_weight_grad_window)
IM2COL = Kernels(im2col_fwd, im2col_bwd_input, im2col_bwd_weight)
FFT = Kernels(fft_fwd, functools.partial(input_grad_by_forward, fft_fwd),
              functools.partial(weight_grad_by_forward, fft_fwd))
# Winograd F(4x4,3x3) / F(2x2,3x3): forward and input gradient (the same correlation over
# the flipped, transposed weight), and the weight gradient in the transformed domain
WINOGRAD, WINOGRAD_F2 = (Kernels(functools.partial(winograd.forward, m),
                                 functools.partial(winograd.bwd_input, m, transpose_weight),
                                 functools.partial(winograd.bwd_weight, m),
                                 functools.partial(winograd.bwd_input_window, m,
                                                   transpose_weight)) for m in (4, 2))
