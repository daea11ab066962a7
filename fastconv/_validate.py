"""Argument checks and every user-facing error message, in one place (functions,
layers, Dask and GPU paths alike).

Public wrappers call :func:`conv_spec` and receive a :class:`ConvSpec` plus
arrays already converted to the compute dtype; nothing below them validates.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import replace

import numpy as np

from ._spec import ConvSpec

OPS = ("forward", "input_grad", "weight_grad")
#: precision levels, strictest first (fastconv.set_precision)
PRECISIONS = ("highest", "high", "medium")
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


def compute_dtypes(fn: str, arrays: dict) -> tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) of ``arrays`` (parameter name -> array or None) per
    SPEC: float32/64 as is, ints/bool -> float64, float16 computed in float32 and returned
    as float16, complex -> TypeError naming the complex parameter(s)."""
    named = {k: a for k, a in arrays.items() if a is not None}
    result = np.result_type(*named.values())
    if result.kind == "c":
        bad = [k for k, a in named.items() if np.dtype(a.dtype).kind == "c"]
        dtypes = ", ".join(f"{k} {np.dtype(a.dtype)}" for k, a in named.items())
        raise TypeError(f"{fn}: {' and '.join(bad)} {'is' if len(bad) == 1 else 'are'} complex, "
                        f"which is not supported (dtypes: {dtypes}); convolve the real and "
                        "imaginary parts separately, or use fastconv.signal")
    if result == np.float16:
        return np.dtype(np.float32), np.dtype(np.float16)
    if result in (np.float32, np.float64):
        return result, result
    if result.kind in "biu" or result.kind == "f":          # ints, bool, longdouble
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{fn}: unsupported dtype {result}")


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


def check_padding(fn, padding, nd):
    """Every padding form checked without the input's size: 'valid' / 'same', or the
    ((before, after), ...) pairs of an int, a tuple or per-side pairs."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{fn}: padding string must be 'valid' or 'same', got {padding!r}")
        return padding
    if isinstance(padding, (tuple, list)) and padding and all(
            isinstance(p, (tuple, list)) for p in padding):
        if len(padding) != nd or any(len(p) != 2 for p in padding):
            raise ValueError(f"{fn}: per-side padding must be {nd} (before, after) pair(s) "
                             f"for {_AXES[nd]}, got {padding!r}")
        return tuple(int_tuple(p, 2, "padding", fn, 0) for p in padding)
    return tuple((p, p) for p in int_tuple(padding, nd, "padding", fn, 0))


def padding_pairs(padding, nd, fn, in_size, kernel, stride, dilation) -> tuple:
    """Normalise every padding form to ((before, after), ...) per spatial axis."""
    padding = check_padding(fn, padding, nd)
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
    return padding


def conv_spec(fn, nd, input, weight, bias, stride, padding, dilation, groups, padding_mode):
    """Validate a conv{nd}d call. Returns (spec, x, w, b): x batched and every array in the
    compute dtype (not yet padded, possibly non-contiguous views of the caller's data)."""
    x = as_array(input, "input", fn)
    w = as_array(weight, "weight", fn)
    b = None if bias is None else as_array(bias, "bias", fn)
    dtype, out_dtype = compute_dtypes(fn, {"input": x, "weight": w, "bias": b})
    args = (fn, nd, x.shape, w.shape, None if b is None else b.shape, dtype, out_dtype,
            stride, padding, dilation, groups, padding_mode)
    # the shapes' checks and spec, cached where the arguments are plain ints, strings and
    # tuples of them (so that True or 1.0 never hit the answer cached for 1)
    spec = (_shape_spec if all(_plain(a) for a in args[7:]) else _shape_spec.__wrapped__)(*args)
    xb = x if spec.batched else x[None]
    xb = xb.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    if b is not None:
        b = b.astype(dtype, copy=False)
    return spec, xb, w, b


def _plain(v):
    return type(v) is int or type(v) is str or (type(v) is tuple and all(map(_plain, v)))


@functools.lru_cache(maxsize=1024)
def _shape_spec(fn, nd, x_shape, w_shape, b_shape, dtype, out_dtype, stride, padding, dilation,
                groups, padding_mode):
    """conv_spec's checks of the shapes and parameters, and the ConvSpec."""
    x = _Shape(x_shape)
    w = _Shape(w_shape)
    b = None if b_shape is None else _Shape(b_shape)
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{fn}: input must be {nd + 2}-D (N, C_in, {_AXES[nd][1:-1]}) or "
                         f"{nd + 1}-D unbatched, got shape {x.shape}")
    if w.ndim != nd + 2:
        raise ValueError(f"{fn}: weight must be {nd + 2}-D (C_out, C_in/groups, "
                         f"{_AXES[nd][1:-1].replace('H', 'kH').replace('W', 'kW').replace('D', 'kD').replace('L', 'kL')}), "
                         f"got shape {w.shape}")
    batched = x.ndim == nd + 2
    xb_shape = x.shape if batched else (1,) + x.shape
    groups = check_int(fn, "groups", groups, 1)
    check_padding_mode(fn, padding_mode)

    N, C_in = xb_shape[:2]
    in_size = tuple(int(v) for v in xb_shape[2:])
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
    check_padding_size(fn, padding_mode, pads, in_size, x.shape)

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
    return spec


class _Shape:
    """What _shape_spec reads of an array: its shape and rank."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)


def check_int(fn, name, value, minimum):
    """An int (not a bool) >= minimum."""
    if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_padding_mode(fn, mode):
    if mode not in PADDING_MODES:
        raise ValueError(f"{fn}: padding_mode must be one of {PADDING_MODES}, got {mode!r}")


def check_padding_size(fn, mode, pads, in_size, shape):
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


def check_algorithm(fn, algorithm, names):
    """``algorithm`` is one of ``names`` (the registry's, with 'auto')."""
    if algorithm not in names:
        raise ValueError(f"{fn}: algorithm must be one of {tuple(names)}, got {algorithm!r}")


def check_precision(fn, precision, allow_none=True):
    """``precision`` is one of PRECISIONS (or None, the global level, where allowed)."""
    if precision is None and allow_none:
        return None
    if not isinstance(precision, str) or precision not in PRECISIONS:
        accepted = PRECISIONS + ((None,) if allow_none else ())
        raise ValueError(f"{fn}: precision must be one of {accepted}, got {precision!r}")
    return precision


def check_op(fn, op):
    if op not in OPS:
        raise ValueError(f"{fn}: op must be one of {OPS}, got {op!r}")


def check_device(fn, device):
    """'cpu' (also for None) or 'cuda'."""
    if device is None:
        return "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"{fn}: device must be 'cpu' or 'cuda', got {device!r}")
    return device


def check_groups_divide(fn, groups, **channels):
    """Each channel count (name -> count) is divisible by ``groups``."""
    for name, n in channels.items():
        if n % groups:
            raise ValueError(f"{fn}: {name} ({n}) must be divisible by groups ({groups})")


def input_size(fn, nd, value, go_shape=None):
    """The ``input_size`` of an input gradient: (N, C_in, *spatial) or unbatched, batched
    as ``grad_output`` (of shape ``go_shape``) is."""
    size = size_tuple(fn, "input_size", value, (nd + 2, nd + 1),
                      "(N, C_in, *spatial), or (C_in, *spatial) unbatched")
    if go_shape is not None and len(go_shape) in (nd + 1, nd + 2) and \
            (len(size) == nd + 2) != (len(go_shape) == nd + 2):
        want = (f"{nd + 2} entries (N, C_in, *spatial)" if len(go_shape) == nd + 2
                else f"{nd + 1} entries (C_in, *spatial)")
        raise ValueError(f"{fn}: input_size {size} has {len(size)} entries but grad_output "
                         f"of shape {tuple(go_shape)} is {'' if len(go_shape) == nd + 2 else 'un'}"
                         f"batched: expected {want}")
    return size


def weight_size(fn, nd, value):
    """The ``weight_size`` of a weight gradient: (C_out, C_in/groups, *kernel)."""
    return size_tuple(fn, "weight_size", value, (nd + 2,), "(C_out, C_in/groups, *kernel)")


def check_grad_output(fn, go_shape, spec):
    if tuple(go_shape) != tuple(spec.out_shape):
        raise ValueError(f"{fn}: grad_output has shape {tuple(go_shape)} but the forward "
                         f"convolution's output has shape {spec.out_shape}")


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


def check_out(fn, out, shape, dtype, gpu=None):
    """``out`` matches the result: a numpy.ndarray, or with ``gpu`` (a
    ``(kind_ok, dtype, contiguous)`` triple the GPU path reads off a device array) a
    C-contiguous GPU array of the result's shape and dtype."""
    if gpu is None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
        kind_ok, out_dtype = True, out.dtype
        contiguous = out.flags.c_contiguous and out.flags.writeable
    else:
        kind_ok, out_dtype, contiguous = gpu
        if not kind_ok:
            raise TypeError(f"{fn}: out must be a GPU array when the input is one, "
                            f"got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out has shape {tuple(out.shape)} but the result has shape "
                         f"{tuple(shape)}")
    if out_dtype != dtype:
        raise TypeError(f"{fn}: out has dtype {out_dtype} but the result has dtype {dtype}")
    if not contiguous:
        raise ValueError(f"{fn}: out must be a writeable C-contiguous array (shape "
                         f"{tuple(out.shape)})")


def transpose_args(fn, nd, x_shape, w_shape, b_shape, stride, padding, output_padding,
                   dilation, groups):
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
    groups = check_int(fn, "groups", groups, 1)
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
    C_out = w_shape[1] * groups
    if b_shape is not None and tuple(b_shape) != (C_out,):
        raise ValueError(f"{fn}: bias must have shape ({C_out},) to match weight shape "
                         f"{w_shape} and groups={groups}, got {tuple(b_shape)}")
    return s, p, d, op, batched, (xb[0], C_out) + size
