"""Argument checks and every user-facing error message, in one place.

Public wrappers call :func:`conv_spec` and receive a :class:`ConvSpec` plus
arrays already converted to the compute dtype; nothing below them validates.
"""
from __future__ import annotations

import numbers
from dataclasses import replace

import numpy as np

from ._spec import ConvSpec

ALGORITHMS = ("auto", "direct", "im2col", "fft")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_AXES = {1: "(L,)", 2: "(H, W)", 3: "(D, H, W)"}


def as_array(a, name: str, fn: str) -> np.ndarray:
    """Convert any array-like to an ndarray, with a clear TypeError on failure."""
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except (TypeError, ValueError, RuntimeError) as exc:   # RuntimeError: e.g. a torch
            # tensor that requires grad ("call .detach()")
            raise TypeError(f"{fn}: {name} must be array-like, got {type(a).__name__} ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf c".replace(" ", ""):
        raise TypeError(f"{fn}: {name} must be a numeric array, got dtype {arr.dtype} "
                        f"with shape {arr.shape}")
    return arr


def compute_dtypes(fn: str, *arrays) -> tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) per SPEC: float32/64 as is, ints/bool -> float64,
    float16 computed in float32 and returned as float16, complex -> TypeError."""
    rt = np.result_type(*arrays)
    if rt.kind == "c":
        names = ", ".join(str(a.dtype) for a in arrays)
        raise TypeError(f"{fn}: complex inputs are not supported (got dtypes {names}); "
                        "convolve the real and imaginary parts separately, or use fastconv.signal")
    if rt == np.float16:
        return np.dtype(np.float32), np.dtype(np.float16)
    if rt in (np.float32, np.float64):
        return rt, rt
    if rt.kind in "biu" or rt.kind == "f":          # ints, bool, longdouble
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{fn}: unsupported dtype {rt}")


def int_tuple(value, nd: int, name: str, fn: str, minimum: int) -> tuple:
    """An int or a tuple of ``nd`` ints, each >= minimum."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        vals = (int(value),) * nd
    elif isinstance(value, (tuple, list)) and all(
            isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in value):
        vals = tuple(int(v) for v in value)
        if len(vals) == 1 and nd > 1:
            vals = vals * nd
        if len(vals) != nd:
            raise ValueError(f"{fn}: {name} must be an int or a tuple of {nd} ints "
                             f"for {_AXES[nd]}, got {value!r}")
    else:
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {nd} ints, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{fn}: {name} must be >= {minimum} on every axis, got {value!r}")
    return vals


def padding_pairs(padding, nd, fn, in_size, kernel, stride, dilation) -> tuple:
    """Normalise every padding form to ((before, after), ...) per spatial axis."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            pairs = []
            for n, k, s, d in zip(in_size, kernel, stride, dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"{fn}: padding string must be 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)) and padding and all(
            isinstance(p, (tuple, list)) for p in padding):
        if len(padding) != nd or any(len(p) != 2 for p in padding):
            raise ValueError(f"{fn}: per-side padding must be {nd} (before, after) pair(s) "
                             f"for {_AXES[nd]}, got {padding!r}")
        pairs = tuple((int(b), int(a)) for b, a in
                      (tuple(int_tuple(p, 2, "padding", fn, 0)) for p in padding))
        return pairs
    vals = int_tuple(padding, nd, "padding", fn, 0)
    return tuple((p, p) for p in vals)


def conv_spec(fn, nd, input, weight, bias, stride, padding, dilation, groups, padding_mode):
    """Validate a conv{nd}d call. Returns (spec, x, w, b): x batched and every array in the
    compute dtype (not yet padded, possibly non-contiguous views of the caller's data)."""
    x = as_array(input, "input", fn)
    w = as_array(weight, "weight", fn)
    b = None if bias is None else as_array(bias, "bias", fn)
    arrays = (x, w) if b is None else (x, w, b)
    dtype, out_dtype = compute_dtypes(fn, *arrays)

    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{fn}: input must be {nd + 2}-D (N, C_in, {_AXES[nd][1:-1]}) or "
                         f"{nd + 1}-D unbatched, got shape {x.shape}")
    if w.ndim != nd + 2:
        raise ValueError(f"{fn}: weight must be {nd + 2}-D (C_out, C_in/groups, "
                         f"{_AXES[nd][1:-1].replace('H', 'kH').replace('W', 'kW').replace('D', 'kD').replace('L', 'kL')}), "
                         f"got shape {w.shape}")
    batched = x.ndim == nd + 2
    xb = x if batched else x[None]
    if not isinstance(groups, (numbers.Integral, np.integer)) or isinstance(groups, bool):
        raise TypeError(f"{fn}: groups must be an int, got {groups!r}")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{fn}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")

    N, C_in = xb.shape[:2]
    in_size = tuple(int(v) for v in xb.shape[2:])
    C_out, C_per_group = w.shape[:2]
    kernel = tuple(int(v) for v in w.shape[2:])
    if C_in == 0:
        raise ValueError(f"{fn}: input has zero channels (shape {x.shape})")
    if any(v == 0 for v in in_size):
        raise ValueError(f"{fn}: input has a zero spatial size (shape {x.shape})")
    if C_out == 0 or C_per_group == 0 or any(k == 0 for k in kernel):
        raise ValueError(f"{fn}: weight is empty (shape {w.shape})")
    if C_in % groups:
        raise ValueError(f"{fn}: input channels ({C_in}, input shape {x.shape}) must be "
                         f"divisible by groups={groups}")
    if C_out % groups:
        raise ValueError(f"{fn}: output channels ({C_out}, weight shape {w.shape}) must be "
                         f"divisible by groups={groups}")
    if C_per_group * groups != C_in:
        raise ValueError(f"{fn}: weight has {C_per_group} input channels per group but input "
                         f"has {C_in} channels with groups={groups} (input shape {x.shape}, "
                         f"weight shape {w.shape}); expected weight.shape[1] == {C_in // groups}")
    if b is not None and b.shape != (C_out,):
        raise ValueError(f"{fn}: bias must have shape ({C_out},) to match weight shape "
                         f"{w.shape}, got {b.shape}")

    stride = int_tuple(stride, nd, "stride", fn, 1)
    dilation = int_tuple(dilation, nd, "dilation", fn, 1)
    pads = padding_pairs(padding, nd, fn, in_size, kernel, stride, dilation)
    check_padding_mode(fn, padding_mode, pads, in_size, x.shape)

    spec = ConvSpec(nd=nd, N=int(N), C_in=int(C_in), in_size=in_size, C_out=int(C_out),
                    kernel=kernel, stride=stride, padding=pads, dilation=dilation,
                    groups=groups, padding_mode=padding_mode, dtype=dtype,
                    out_dtype=out_dtype, batched=batched)
    for p, e, axis in zip(spec.padded_size, spec.effective_kernel, range(nd)):
        if p < e:
            raise ValueError(
                f"{fn}: the (dilated) kernel {spec.effective_kernel} is larger than the padded "
                f"input {spec.padded_size} on spatial axis {axis} (input shape {x.shape}, "
                f"weight shape {w.shape}, padding {pads}, dilation {dilation})")
    # a stride beyond the last kernel position gives one output, as a stride of exactly
    # that reach does: normalise it, so that no kernel sees an absurd stride (2**64) or
    # splits the input into stride**2 phases
    reach = tuple(min(s, p - e + 1) for s, p, e in
                  zip(stride, spec.padded_size, spec.effective_kernel))
    if reach != stride:
        spec = replace(spec, stride=reach)
    xb = xb.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    if b is not None:
        b = b.astype(dtype, copy=False)
    return spec, xb, w, b


def check_padding_mode(fn, mode, pads, in_size, shape):
    if mode == "reflect":
        for (bef, aft), n in zip(pads, in_size):
            if bef >= n or aft >= n:
                raise ValueError(f"{fn}: padding {pads} is too large for reflect padding of an "
                                 f"input of shape {shape}: each pad must be < the input size {in_size}")
    elif mode == "circular":
        for (bef, aft), n in zip(pads, in_size):
            if bef > n or aft > n:
                raise ValueError(f"{fn}: padding {pads} is too large for circular padding of an "
                                 f"input of shape {shape}: each pad must be <= the input size {in_size}")


def check_algorithm(fn, algorithm):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def size_tuple(fn, name, value, lengths, what):
    """A shape argument (``input_size``, ``weight_size``): a sequence of ints, >= 0 for the
    leading batch entry when ``lengths`` allows one, else >= 1."""
    try:
        vals = tuple(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a tuple of ints {what}, got {value!r}") from None
    if len(vals) not in lengths:
        raise ValueError(f"{fn}: {name} must have {' or '.join(map(str, lengths))} entries "
                         f"{what}, got {vals}")
    if not all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool)
               for v in vals):
        raise TypeError(f"{fn}: {name} must be a tuple of ints {what}, got {vals}")
    vals = tuple(int(v) for v in vals)
    if any(v < 0 for v in vals):
        raise ValueError(f"{fn}: {name} entries must be >= 0, got {vals}")
    return vals


def check_out(fn, out, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out has shape {out.shape} but the result has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{fn}: out has dtype {out.dtype} but the result has dtype {dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{fn}: out must be a writeable C-contiguous array (shape {out.shape})")


def transpose_args(fn, nd, x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """Validate conv_transpose{nd}d arguments (shapes only, so host and GPU share it).

    Returns (stride, padding, dilation, output_padding, batched, input_size of the
    matching forward convolution)."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) not in (nd + 1, nd + 2):
        raise ValueError(f"{fn}: input must be {nd + 2}-D or {nd + 1}-D unbatched, got shape {x_shape}")
    if len(w_shape) != nd + 2:
        raise ValueError(f"{fn}: weight must be {nd + 2}-D (C_in, C_out/groups, *kernel), got shape {w_shape}")
    if isinstance(padding, str):
        raise ValueError(f"{fn}: padding must be an int or a tuple of {nd} ints, got {padding!r}")
    s = int_tuple(stride, nd, "stride", fn, 1)
    p = int_tuple(padding, nd, "padding", fn, 0)
    d = int_tuple(dilation, nd, "dilation", fn, 1)
    op = int_tuple(output_padding, nd, "output_padding", fn, 0)
    for o, si, di in zip(op, s, d):
        if o >= si and o >= di:
            raise ValueError(f"{fn}: output_padding {op} must be smaller than either stride {s} "
                             f"or dilation {d}")
    if not isinstance(groups, (numbers.Integral, np.integer)) or isinstance(groups, bool):
        raise TypeError(f"{fn}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")
    batched = len(x_shape) == nd + 2
    xb = x_shape if batched else (1,) + x_shape
    if xb[1] == 0:
        raise ValueError(f"{fn}: input has zero channels (shape {x_shape})")
    if any(v == 0 for v in xb[2:]):
        raise ValueError(f"{fn}: input has a zero spatial size (shape {x_shape})")
    if any(v == 0 for v in w_shape):
        raise ValueError(f"{fn}: weight is empty (shape {w_shape})")
    if xb[1] != w_shape[0]:
        raise ValueError(f"{fn}: weight of shape {w_shape} expects {w_shape[0]} input channels "
                         f"but input of shape {x_shape} has {xb[1]}")
    if xb[1] % groups:
        raise ValueError(f"{fn}: input channels ({xb[1]}, input shape {x_shape}) must be "
                         f"divisible by groups={groups}")
    size = tuple((i - 1) * si - 2 * pi + di * (k - 1) + oi + 1
                 for i, si, pi, di, k, oi in zip(xb[2:], s, p, d, w_shape[2:], op))
    if any(v <= 0 for v in size):
        raise ValueError(f"{fn}: the output size {size} is not positive for input shape {x_shape}, "
                         f"weight shape {w_shape}, stride {s}, padding {p}, dilation {d}")
    return s, p, d, op, batched, (xb[0], w_shape[1] * int(groups)) + size
