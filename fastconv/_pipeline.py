"""The in-memory CPU pipeline after validation: pad, plan, run, unpad.

One path for the public functions, the nn layers (which keep the (padded) input between
forward and backward, so they call the ``*5`` steps) and the Dask chunks. Every step
takes a validated :class:`~fastconv._spec.ConvSpec`; :func:`fastconv.dispatch.plan`
chooses the algorithm (also for autotuning and the non-finite rule) and
:mod:`fastconv.cpu.engine` runs its kernel. Zero padding of float inputs is left to the
engine (``unpadded``: it pads, or the kernel reads the padding in place).
"""
from __future__ import annotations

import numpy as np

from . import dispatch
from ._pad import pad, pad_adjoint
from ._spec import ConvSpec, lift5
from .cpu import engine
from .cpu._common import workspace
from .cpu.fft import all_finite


def _finite(*arrays):
    # one pass per operand, no boolean temporary (cpu/fft.all_finite)
    return lambda: all(all_finite(a) for a in arrays)


# --- on padded 5-D arrays -------------------------------------------------------------------
def pad5(spec: ConvSpec, x) -> np.ndarray:
    """The padded, C-contiguous 5-D input of ``spec`` for batched ``x``."""
    return lift5(pad(x, spec.padding, spec.padding_mode, spec.dtype), spec.nd)


def unpadded5(spec: ConvSpec, x) -> np.ndarray:
    """The C-contiguous 5-D input of ``spec`` for batched ``x``, before its padding."""
    return lift5(np.ascontiguousarray(x, dtype=spec.dtype), spec.nd)


def pad5_scratch(spec: ConvSpec, x) -> np.ndarray:
    """Like pad5, for a padded input used only during the call: zero padding goes into
    this thread's workspace (one parallel pass, see _pad.pad), instead of a fresh array
    whose pages fault in on every call."""
    return lift5(pad(x, spec.padding, spec.padding_mode, spec.dtype,
                     lambda shape, dtype: workspace("pad_x", shape, dtype)), spec.nd)


def unpadded_route(spec: ConvSpec, x) -> bool:
    """Whether the input goes to the engine before its padding (zero padding of floats:
    engine.forward / backward_weight pad it, or the kernel reads the padding in place);
    for a C-contiguous ``x`` of the compute dtype (else padding copies it once, not twice)."""
    return (spec.padding_mode == "zeros" and spec.dtype in (np.float32, np.float64)
            and x.dtype == spec.dtype and x.flags.c_contiguous)


def _input5(spec: ConvSpec, x, unpadded: bool) -> np.ndarray:
    """The call's 5-D input: before its padding (``unpadded``) or padded in the workspace."""
    return unpadded5(spec, x) if unpadded else pad5_scratch(spec, x)


def _window(spec: ConvSpec):
    """(origin, padded size) of the unpadded input in the padded one, 3-D."""
    return tuple(b for b, _ in spec.padding3), spec.lift(spec.padded_size)


def forward5(spec: ConvSpec, xp5, w5, b, algorithm="auto", out5=None, precision=None,
             unpadded=False):
    """The 5-D forward result (``out5`` when given) in the compute dtype; ``unpadded``:
    ``xp5`` is the input before its zero padding (engine.forward pads it, or the kernel
    reads the padding in place)."""
    window = _window(spec) if unpadded else (None, None)

    def run(entry, out=None):
        return engine.forward(xp5, w5, b, spec.stride3, spec.dilation3, spec.groups,
                              entry.cpu_kernels, out, *window)

    entry = dispatch.plan(spec, "forward", algorithm, "cpu", run, _finite(xp5, w5), precision)
    return run(entry, out5)


def input_grad5(spec: ConvSpec, go5, w5, algorithm="auto", precision=None, window=None):
    """dL/d(padded input), 5-D (over ``window`` of it when given, see engine.backward_input)."""
    def run(entry):
        return engine.backward_input(go5, w5, spec.lift(spec.padded_size), spec.stride3,
                                     spec.dilation3, spec.groups, entry.cpu_kernels, window)

    return run(dispatch.plan(spec, "input_grad", algorithm, "cpu", run, _finite(go5, w5),
                             precision))


def weight_grad5(spec: ConvSpec, xp5, go5, algorithm="auto", precision=None, unpadded=False):
    """dL/dweight, (C_out, C_in/groups) + the 3-D kernel; ``unpadded`` as in forward5."""
    if spec.N == 0:                      # an empty batch contributes nothing
        return np.zeros((spec.C_out, spec.C_in // spec.groups) + spec.lift(spec.kernel),
                        dtype=spec.dtype)
    window = _window(spec) if unpadded else (None, None)

    def run(entry):
        return engine.backward_weight(xp5, go5, spec.lift(spec.kernel), spec.stride3,
                                      spec.dilation3, spec.groups, entry.cpu_kernels, *window)

    return run(dispatch.plan(spec, "weight_grad", algorithm, "cpu", run, _finite(xp5, go5),
                             precision))


def unpad_grad(spec: ConvSpec, gxp5):
    """Fold a gradient with respect to the padded input back onto the input: (N, C_in, *in_size)."""
    gxp = gxp5.reshape((spec.N, spec.C_in) + spec.padded_size)
    if not any(b or a for b, a in spec.padding):
        return gxp
    return pad_adjoint(gxp, spec.in_size, spec.padding, spec.padding_mode)


def grad_output5(spec: ConvSpec, go):
    """``grad_output`` as a C-contiguous 5-D array in the compute dtype."""
    return np.ascontiguousarray(go.reshape((spec.N, spec.C_out) + spec.lift(spec.out_size)),
                                dtype=spec.dtype)


# --- on the caller's (batched, compute-dtype) arrays -----------------------------------------
def forward(spec: ConvSpec, x, w, b, algorithm="auto", out5=None, precision=None):
    """Pad, lift to 5-D, plan and run; the 5-D result in the compute dtype."""
    b = None if b is None else np.ascontiguousarray(b)
    # zero padding left to engine.forward: the kernels that read it in place (the
    # depthwise channel-lane kernel) skip the padded copy
    unpadded = unpadded_route(spec, x)
    return forward5(spec, _input5(spec, x, unpadded), np.ascontiguousarray(lift5(w, spec.nd)),
                    b, algorithm, out5, precision, unpadded)


def input_grad(spec: ConvSpec, go, w, algorithm="auto", precision=None):
    """dL/dinput, (N, C_in, *in_size) in the compute dtype."""
    return input_grad_unpadded(spec, grad_output5(spec, go),
                               np.ascontiguousarray(lift5(w, spec.nd)), algorithm, precision)


def input_grad_unpadded(spec: ConvSpec, go5, w5, algorithm="auto", precision=None):
    """dL/dinput from 5-D operands, (N, C_in, *in_size): with zero padding only the
    input's window of the padded gradient is computed (kernels that can, compute just
    that), other modes fold the padding's gradient back (unpad_grad)."""
    if spec.padding_mode == "zeros":
        window = tuple((b, n) for (b, _), n in zip(spec.padding3, spec.lift(spec.in_size)))
        gx5 = input_grad5(spec, go5, w5, algorithm, precision, window)
        return gx5.reshape((spec.N, spec.C_in) + spec.in_size)
    return unpad_grad(spec, input_grad5(spec, go5, w5, algorithm, precision))


def weight_grad(spec: ConvSpec, x, go, algorithm="auto", precision=None):
    """dL/dweight, (C_out, C_in/groups, *kernel) in the compute dtype."""
    unpadded = unpadded_route(spec, x)
    gw = weight_grad5(spec, _input5(spec, x, unpadded), grad_output5(spec, go), algorithm,
                      precision, unpadded)
    return gw.reshape((spec.C_out, spec.C_in // spec.groups) + spec.kernel)
