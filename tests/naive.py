"""A slow, obviously-correct reference for N-d convolution and its gradients.

Everything here is written from the definitions, in float64, with explicit loops over
output positions; nothing is shared with the library. It is the oracle for what SciPy
cannot express (stride, dilation, groups, padding modes) and for the gradients.

Conventions (as PyTorch): ``x`` is ``(N, C_in, *spatial)``, ``w`` is
``(C_out, C_in / groups, *kernel)``, and the forward is the cross-correlation

    y[n, o, p] = b[o] + sum_{c, k} w[o, c, k] * xpad[n, g(o) * Cg + c, p * stride + k * dilation]

where ``xpad`` is ``x`` padded on every spatial axis (``np.pad``) and ``g(o) = o // (C_out / groups)``.
"""
import itertools
import math

import numpy as np

#: fastconv padding_mode -> np.pad mode
NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# --- arguments ------------------------------------------------------------------------
def as_tuple(v, nd):
    """An int or a sequence of nd ints -> tuple of nd ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    return v * nd if len(v) == 1 else v


def same_pads(in_size, kernel, stride, dilation):
    """TensorFlow/JAX 'same': out = ceil(n / s), total = max((out - 1) * s + (k - 1) * d + 1 - n, 0),
    total // 2 before and the rest after."""
    pads = []
    for n, k, s, d in zip(in_size, kernel, stride, dilation):
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def pad_pairs(padding, nd, in_size, kernel, stride=1, dilation=1):
    """Every padding form -> ((before, after), ...) per spatial axis."""
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":
        return same_pads(in_size, kernel, stride, dilation)
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * nd
    padding = tuple(padding)
    if all(isinstance(p, (tuple, list)) for p in padding):
        return tuple((int(b), int(a)) for b, a in padding)
    return tuple((int(p), int(p)) for p in as_tuple(padding, nd))


def out_size(in_size, kernel, stride, pads, dilation):
    return tuple((n + b + a - (k - 1) * d - 1) // s + 1
                 for n, k, s, (b, a), d in zip(in_size, kernel, stride, pads, dilation))


def pad(x, pads, mode="zeros"):
    """Pad the spatial axes of a batched (N, C, *spatial) array with np.pad."""
    width = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
    return np.pad(x, width, mode=NP_PAD_MODE[mode])


def pad_adjoint(gxp, in_shape, pads, mode="zeros"):
    """Adjoint of :func:`pad`: padding is a gather, so its adjoint scatter-adds every padded
    position back onto the input position it was copied from (found by padding an array
    of flat indices the same way)."""
    N, C = in_shape[:2]
    spatial = tuple(in_shape[2:])
    idx = np.arange(int(np.prod(spatial))).reshape((1, 1) + spatial)
    if mode == "zeros":
        src = np.pad(idx, [(0, 0), (0, 0)] + [tuple(p) for p in pads], mode="constant",
                     constant_values=-1)
    else:
        src = pad(idx, pads, mode)
    src = src.reshape(-1)
    keep = src >= 0
    gx = np.zeros((N, C, int(np.prod(spatial))))
    flat = gxp.reshape(N, C, -1)
    for n in range(N):
        for c in range(C):
            np.add.at(gx[n, c], src[keep], flat[n, c][keep])
    return gx.reshape(tuple(in_shape))


def _window(pos, kernel, stride, dilation):
    """The strided slices of the padded input that output position ``pos`` reads."""
    return tuple(slice(p * s, p * s + (k - 1) * d + 1, d)
                 for p, k, s, d in zip(pos, kernel, stride, dilation))


def _normalise(x, w, stride, padding, dilation):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nd = w.ndim - 2
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    kernel = w.shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = pad_pairs(padding, nd, x.shape[2:], kernel, stride, dilation)
    return x, w, nd, batched, kernel, stride, pads, dilation


# --- forward --------------------------------------------------------------------------
def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """N-d cross-correlation (1-D, 2-D, 3-D) in float64, by the definition."""
    x, w, nd, batched, kernel, stride, pads, dilation = _normalise(x, w, stride, padding, dilation)
    N, C = x.shape[:2]
    O, Cg = w.shape[:2]
    Og = O // groups
    assert Cg * groups == C and Og * groups == O
    xp = pad(x, pads, padding_mode)
    osz = out_size(x.shape[2:], kernel, stride, pads, dilation)
    y = np.zeros((N, O) + osz)
    for pos in itertools.product(*(range(o) for o in osz)):
        win = _window(pos, kernel, stride, dilation)
        for n in range(N):
            for o in range(O):
                g = o // Og
                patch = xp[(n, slice(g * Cg, (g + 1) * Cg)) + win]      # (Cg, *kernel)
                y[(n, o) + pos] = np.sum(patch * w[o])
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape((1, O) + (1,) * nd)
    return y if batched else y[0]


# --- gradients ------------------------------------------------------------------------
def conv_input_grad(input_shape, w, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """dL/dx for L = <conv(x, w), grad_output>: every output position scatters
    ``grad_output * w`` back onto the window it read."""
    w = np.asarray(w, dtype=np.float64)
    nd = w.ndim - 2
    batched = len(input_shape) == nd + 2
    shape = tuple(input_shape) if batched else (1,) + tuple(input_shape)
    go = np.asarray(grad_output, dtype=np.float64)
    if not batched:
        go = go[None]
    kernel = w.shape[2:]
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = pad_pairs(padding, nd, shape[2:], kernel, stride, dilation)
    N, C = shape[:2]
    O, Cg = w.shape[:2]
    Og = O // groups
    padded = tuple(n + b + a for n, (b, a) in zip(shape[2:], pads))
    gxp = np.zeros((N, C) + padded)
    for pos in itertools.product(*(range(o) for o in go.shape[2:])):
        win = _window(pos, kernel, stride, dilation)
        for n in range(N):
            for o in range(O):
                g = o // Og
                gxp[(n, slice(g * Cg, (g + 1) * Cg)) + win] += go[(n, o) + pos] * w[o]
    gx = pad_adjoint(gxp, shape, pads, padding_mode)
    return gx if batched else gx[0]


def conv_weight_grad(x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros"):
    """dL/dw for L = <conv(x, w), grad_output>: every output position adds
    ``grad_output * window`` to the weight."""
    nd = len(weight_shape) - 2
    x = np.asarray(x, dtype=np.float64)
    go = np.asarray(grad_output, dtype=np.float64)
    if x.ndim == nd + 1:
        x, go = x[None], go[None]
    kernel = tuple(weight_shape[2:])
    stride, dilation = as_tuple(stride, nd), as_tuple(dilation, nd)
    pads = pad_pairs(padding, nd, x.shape[2:], kernel, stride, dilation)
    xp = pad(x, pads, padding_mode)
    N = x.shape[0]
    O, Cg = weight_shape[:2]
    Og = O // groups
    gw = np.zeros(tuple(weight_shape))
    for pos in itertools.product(*(range(o) for o in go.shape[2:])):
        win = _window(pos, kernel, stride, dilation)
        for n in range(N):
            for o in range(O):
                g = o // Og
                gw[o] += go[(n, o) + pos] * xp[(n, slice(g * Cg, (g + 1) * Cg)) + win]
    return gw


def conv_bias_grad(grad_output, nd):
    """dL/db: the sum of grad_output over the batch and every spatial axis."""
    go = np.asarray(grad_output, dtype=np.float64)
    if go.ndim == nd + 1:
        go = go[None]
    return go.sum(axis=(0,) + tuple(range(2, go.ndim)))


def conv_transpose(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed convolution (as torch.nn.functional.conv_transposeNd), by scattering:
    input position i of channel c adds x * w[c, o, k] to output position
    i * stride - padding + k * dilation (positions outside the output are dropped).

    w: (C_in, C_out / groups, *kernel)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nd = w.ndim - 2
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    N, C = x.shape[:2]
    Og = w.shape[1]
    Cg = C // groups
    O = Og * groups
    kernel = w.shape[2:]
    s, p, op, d = (as_tuple(v, nd) for v in (stride, padding, output_padding, dilation))
    size = tuple((i - 1) * si - 2 * pi + di * (k - 1) + oi + 1
                 for i, si, pi, di, k, oi in zip(x.shape[2:], s, p, d, kernel, op))
    y = np.zeros((N, O) + size)
    for n in range(N):
        for c in range(C):
            g = c // Cg
            for pos in itertools.product(*(range(i) for i in x.shape[2:])):
                for k in itertools.product(*(range(kk) for kk in kernel)):
                    q = tuple(pi * si - ppi + ki * di
                              for pi, si, ppi, ki, di in zip(pos, s, p, k, d))
                    if all(0 <= qi < zi for qi, zi in zip(q, size)):
                        for o in range(Og):
                            y[(n, g * Og + o) + q] += x[(n, c) + pos] * w[(c, o) + k]
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape((1, O) + (1,) * nd)
    return y if batched else y[0]
