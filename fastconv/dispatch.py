"""THE planner: the algorithm registry, the cost models, ``choose_algorithm(op=)`` and
autotuning, for every device and op.

Each algorithm is one :class:`Algorithm` entry in :data:`REGISTRY`: its kernels per op
and device, its cost (CPU features times fitted constants; the GPU table in
:mod:`fastconv.cuda.cost`), its constraints, its numerical error class and documented
tolerance, and whether a NaN or inf stays local. :func:`plan` is the one place an
algorithm is chosen, for the public functions, the layers, Dask chunks and the GPU:
the caller's choice, else the autotuned one, else the cheapest estimate for that op;
then the one non-finite rule (``auto`` never runs an algorithm that would spread a NaN
or inf over operands that hold one). Tests, benchmarks and ``choose_algorithm`` read the
registry, so adding an algorithm is adding an entry.

The CPU constants live in ``cost_model.json`` next to this file, one section per host
class (``avx512``, ``avx2``: the vector width the kernels are built for, which moves every
algorithm's speed and so the crossovers); ``python bench/fit_cost_model.py`` re-times the
kernels, refits them (non-negative least squares) and rewrites this host's section. Autotuning (``set_autotune(True)`` or
``FASTCONV_AUTOTUNE=1``) times every candidate the first time a problem is seen and
keeps the winner in memory and in ``$FASTCONV_CACHE_DIR/autotune.json``, keyed by the
device (CPU model or GPU name), numba version and fastconv version.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import platform
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import _config
from ._arrays import proxy
from ._fileio import atomic_write
from ._spec import ConvSpec, _prod
from ._validate import PRECISIONS, check_device, check_op, check_precision, conv_spec, size_tuple
from ._version import __version__
from .cpu import depthwise, direct, im2col, minor, stencil, winograd
from .cpu import engine as cpu_engine
from .cpu._common import reuse
from .cpu._simd import HOST_CLASS
from .cuda import cost as cuda_cost

OPS = ("forward", "input_grad", "weight_grad")
DEVICES = ("cpu", "cuda")

_MODEL_FILE = Path(__file__).with_name("cost_model.json")
_FORWARD_DEFAULTS = {
    # seconds per unit; see bench/fit_cost_model.py for how these are measured
    "direct": {"overhead": 2.0e-5, "line": 1.0e-8, "tile_mac": 1.4e-11, "pass": 2.3e-10,
               "phase_byte": 3.4e-10, "minor_byte": 4.1e-10,
               # cpu/minor.py (images in the lanes): multiply-adds in line-tile units,
               # output rows, bytes transposed in and out
               "lanes_mac": 7.5e-12, "lanes_row": 2e-8, "lanes_byte": 1.5e-10,
               # cpu/stencil.py (depthwise): vector multiply-adds (1024x1024 k=7 signal
               # kernel, float32 and float64), per plane, the definition's scalar ones, the
               # padded input; fitted to 24 depthwise layers on the AVX2 host (N 1-32, C
               # 32-512, 7x7 to 224x224, 3x3 and 5x5, float32/64: within 0.5-1.5x)
               "stencil_mac": 1.1e-10, "stencil_plane": 2.0e-7, "stencil_scalar_mac": 1.3e-9,
               "stencil_byte": 1.0e-10,
               # cpu/depthwise.py (channels in the lanes): vector multiply-adds of its
               # tiles, bytes transposed in and out, tasks; from the kernel alone on the
               # AVX2 host (N=8, C=32-256, 7x7 to 112x112, 3x3 and 5x5, float32/64)
               "dwlane_mac": 1.2e-10, "dwlane_byte": 2.5e-11, "dwlane_task": 1.5e-7},
    "im2col": {"overhead": 4.0e-5, "gather_byte": 1.0e-10, "gather_byte_big": 1.2e-11,
               "flop": 1.2e-11, "flop_big": 1.2e-11, "out_byte": 1e-10},
    "fft": {"overhead": 1.0e-4, "fft_flop": 1.0e-10, "cmul": 1.0e-9},
    # group_panel: fitted over the fitted sections' other constants to 20 depthwise
    # layers on the AVX2 host (the other constants came from layers of many channels per
    # group, where this term is ~1 %); alone they had put depthwise Winograd at 0.2-0.5x
    # its time, and auto picked it over a stencil 2-3x faster
    "winograd": {"overhead": 1.0e-4, "in_tile": 2.5e-8, "out_tile": 1.5e-8,
                 "gemm_mac": 1.5e-11, "group_panel": 7e-8},
    "winograd_f2": {"overhead": 1.0e-4, "in_tile": 0.8e-8, "out_tile": 0.5e-8,
                    "gemm_mac": 1.5e-11, "group_panel": 4.5e-8},
}
_DEFAULT_MODEL = {
    "direct": {"forward": _FORWARD_DEFAULTS["direct"],
               "input_grad": dict(_FORWARD_DEFAULTS["direct"], pad_byte=2e-10),
               "weight_grad": {"overhead": 2.0e-5, "tile_step": 1.0e-10, "tile_call": 2.0e-8,
                               "copy_byte": 2.0e-10,
                               # cpu/depthwise.weight_grad: as its forward's
                               "dwlane_mac": 1.2e-10, "dwlane_byte": 2.5e-11,
                               "dwlane_task": 1.5e-7}},
    "im2col": {"forward": _FORWARD_DEFAULTS["im2col"],
               "input_grad": {"overhead": 4.0e-5, "flop": 1.2e-11, "col_byte": 5e-10,
                              "col_byte_strided": 1e-9, "out_byte": 1e-10},
               "weight_grad": {"overhead": 4.0e-5, "gather_byte": 1.0e-10, "flop": 1.2e-11,
                               "gather_byte_big": 1.2e-11, "flop_big": 1.2e-11,
                               "out_byte": 1e-10}},
    "fft": {op: _FORWARD_DEFAULTS["fft"] for op in OPS},
    # the input gradient runs the forward's kernel; the weight gradient is im2col's
    "winograd": {op: _FORWARD_DEFAULTS["winograd"] for op in OPS},
    "winograd_f2": {op: _FORWARD_DEFAULTS["winograd_f2"] for op in OPS},
}


# the cost model's section for this CPU is HOST_CLASS's (cpu/_simd.py: hosts without
# AVX-512 run the 32-byte-vector kernels, the avx2 section); when it has none, these,
# nearest first
_NEAREST = {"avx512": ("avx2",), "avx2": ("avx512",)}


def _model_section(data) -> tuple:
    """(host class, constants) of a cost_model.json's content: the section fitted for
    this host's class (``data["hosts"][HOST_CLASS]``), else the other class's (the nearest
    measurement there is, _NEAREST); (None, {}) when there is none (empty sections
    count as none)."""
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if isinstance(hosts, dict):
        for cls in (HOST_CLASS,) + _NEAREST.get(HOST_CLASS, ()):
            if isinstance(hosts.get(cls), dict) and hosts[cls]:
                return cls, hosts[cls]
    return None, {}


def _load_model() -> dict:
    """{algorithm: {op: {feature: seconds per unit}}}: the fitted constants of this
    host's class (:func:`_model_section`) over the defaults (a file without per-op
    entries fits the forward only)."""
    try:
        with open(_MODEL_FILE) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = {}
    _, model = _model_section(data)
    out = {}
    for name, ops in _DEFAULT_MODEL.items():
        fitted = model.get(name, {})
        if not isinstance(fitted, dict):
            fitted = {}
        if fitted and not any(op in fitted for op in OPS):
            fitted = {"forward": fitted}
        out[name] = {op: dict(ops[op], **{k: float(v) for k, v in fitted.get(op, {}).items()})
                     for op in OPS}
    return out


_MODEL = _load_model()


# --- cost features per algorithm (CPU) ---------------------------------------------------
def _dims(spec: ConvSpec):
    G = spec.groups
    return (spec.dtype.itemsize, G, spec.C_in // G, spec.C_out // G, spec.lift(spec.kernel),
            spec.lift(spec.out_size))


def lanes_weight_grad(spec: ConvSpec) -> bool:
    """Whether direct's weight gradient of ``spec`` runs cpu/minor.py's images-in-lanes
    kernel (direct.minor_wgrad_pays): what its cost features count, and whether a layer
    whose forward ran the lanes kernel keeps the input's transpose for its backward
    (cpu/_common.reuse; wasted in the rare case that the plan picks another algorithm).
    Not for depthwise layers that run the channel-lane kernel (direct.runs_lanes, asked
    first by the engine)."""
    _, G, Cg, Og, k3, o3 = _dims(spec)
    padded = spec.lift(spec.padded_size)
    if direct.runs_lanes(G, Cg, Og, k3, o3, spec.stride3, spec.dilation3, padded, spec.dtype):
        return False
    return direct.minor_wgrad_pays(spec.N, G, Cg, Og, o3, k3, spec.stride3, padded, spec.dtype)


def _direct_counts(isz, N, G, Cg, Og, kernel, out, wq, in_bytes, phase_bytes):
    """Counts of one cpu/direct.py forward: N images, G groups of Cg -> Og channels, a
    3-D kernel and output, rows of wq columns (of the phases for strides > 1)."""
    (kd, kh, kw), (od, oh, ow) = kernel, out
    # an output plane as one line on the padded-width grid, output channels in blocks of
    # 4 (a partial block costs a whole one), register tiles of tile_width outputs along
    # the line running all Cg*kD*kH*kW taps; lines shorter than a tile interleave the
    # images (batch-minor: one line for the whole batch, paid for with two transposes);
    # single output channels (strided depthwise: unit strides run the stencil, see
    # _stencil_counts), and lines still shorter than a tile, take passes of 8 taps over
    # each channel's accumulators instead
    line = (oh - 1) * wq + ow
    minor = direct.batch_minor(N, line, isz)
    if minor:
        line *= N
    lines = (1 if minor else N) * G * od
    T = Cg * kd * kh * kw
    tw = int(direct.tile_width(isz))
    tiled = passed = 0
    if Og == 1 or line < tw:                   # per channel: passes of 8, 4, then 1 taps
        passes = T // 8 + (T % 8) // 4 + T % 4
        passed = lines * Og * line * passes
    else:
        tiled = lines * -(-Og // 4) * 4 * -(-line // tw) * tw * T
    minor_bytes = in_bytes + N * G * Og * od * oh * ow * isz if minor else 0
    return {"overhead": 1.0, "line": lines, "tile_mac": tiled, "pass": passed,
            "phase_byte": phase_bytes, "minor_byte": minor_bytes}


def _direct_fwd_counts(spec, Cg, Og, kernel, out, stride, dilation, padded, window,
                       in_bytes, phase_bytes):
    """Counts of one cpu/direct.direct_fwd, asking what it asks in its order: the
    channel-lane depthwise kernel where direct.runs_lanes says it runs (its tiles' vector
    multiply-adds, bytes transposed, tasks: cpu/depthwise.work); cpu/minor.py's position
    tiles where direct.minor_pays says so (their multiply-adds in line-tile units, the
    images transposed in and out); the stencil (_stencil_counts); else the line kernels
    (_direct_counts)."""
    isz, N, G = spec.dtype.itemsize, spec.N, spec.groups
    if direct.runs_lanes(G, Cg, Og, kernel, out, tuple(stride), tuple(dilation),
                         tuple(padded), spec.dtype):
        return _dwlane_counts(depthwise.work(N, G, out[1:], kernel[1:], stride[1:],
                                             padded[1:], isz))
    if direct.minor_pays(N, G, Cg, Og, out, kernel, stride, dilation, padded, window,
                         spec.dtype):
        return {"overhead": 1.0, "lanes_row": G * -(-Og // minor.rows(Og)) * out[0] * out[1],
                "lanes_mac": direct.minor_macs(N, G, Cg, Og, out, kernel, stride, dilation,
                                               padded, window, spec.dtype),
                "lanes_byte": (N * G * Cg * _prod(n for _, n in window or zip(padded, padded))
                               + N * G * Og * _prod(out)) * isz}
    if direct.runs_stencil(G, Cg, Og, kernel, out, tuple(stride), tuple(dilation),
                           tuple(padded), spec.dtype):
        return _stencil_counts(isz, N * G, kernel, out, in_bytes)
    return _direct_counts(isz, N, G, Cg, Og, kernel, out,
                          -(-padded[2] // stride[2]), in_bytes, phase_bytes)


def _dwlane_counts(work):
    """Counts of cpu/depthwise.py's kernels from one of its (vector multiply-adds, bytes,
    tasks) work tallies."""
    macs, moved, tasks = work
    return {"overhead": 1.0, "dwlane_mac": macs, "dwlane_byte": moved, "dwlane_task": tasks}


def _stencil_counts(isz, planes, kernel, out, in_bytes):
    """Counts of cpu/stencil.py on ``planes`` one-channel planes (direct.direct_fwd runs
    it where each output channel reads one input channel at unit stride: depthwise
    layers): its vector multiply-adds (outputs narrower than a half tile: the scalar
    definition's), a cost per plane (a task's set-up and edges) and the padded input it
    reads. Planes narrower than a half tile that stencil.whole_planes runs whole take
    half tiles instead of the definition."""
    (_, kh, kw), (_, oh, ow) = kernel, out
    L = stencil.lanes(isz)
    hw = stencil.half_width(isz)
    # (direct_fwd pads first: the planes reach the stencil unpadded)
    scalar = ow < hw and not stencil.whole_planes(planes, oh, ow, kh, kw, isz, False)
    return {"overhead": 1.0, "stencil_plane": planes,
            "stencil_mac": 0 if scalar else planes * oh * -(-max(ow, hw) // L) * kh * kw,
            "stencil_scalar_mac": planes * oh * ow * kh * kw if scalar else 0,
            "stencil_byte": in_bytes}


def direct_features(spec: ConvSpec, op: str = "forward") -> dict:
    """Counts of what cpu/direct.py runs for ``op`` (the regressors of its fitted
    constants)."""
    isz, G, Cg, Og, k3, o3 = _dims(spec)
    sd, sh, sw = spec.stride3
    padded = spec.lift(spec.padded_size)
    in_bytes = spec.N * spec.C_in * _prod(padded) * isz
    if op == "forward":
        return _direct_fwd_counts(spec, Cg, Og, k3, o3, spec.stride3, spec.dilation3, padded,
                                  None, in_bytes, in_bytes if sh * sw > 1 else 0)
    if op == "input_grad" and direct.runs_lanes(G, Cg, Og, k3, o3, spec.stride3,
                                                spec.dilation3, padded, spec.dtype):
        # depthwise (cpu/depthwise.input_grad): grad_out's vectors scattered into the
        # (window of the) gradient, channels in the lanes, no phases
        window = spec.lift(spec.in_size if spec.padding_mode == "zeros" else spec.padded_size)
        return _dwlane_counts(depthwise.input_grad_work(spec.N, G, o3[1:], k3[1:], window[1:],
                                                        isz))
    if op == "input_grad":
        # polyphase (cpu/engine.direct_input_grad): per phase a forward of grad_out, padded
        # on the grid of the phase's outputs, with the phase's taps; the phases' results
        # copied into place
        dims = cpu_engine.polyphase(o3, spec.stride3, spec.dilation3, k3, padded)
        strided = spec.stride3 != (1, 1, 1)
        total = {"pad_byte": in_bytes * spec.C_out / spec.C_in if strided else 0.0}
        for phase in itertools.product(*(d[3] for d in dims)):
            J = tuple(p[3] for p in phase)
            M = tuple(p[5] for p in phase)
            U = (M[0] + (J[0] - 1) * dims[0][2], M[1] + (J[1] - 1) * dims[1][2] + 1, M[2])
            go_bytes = spec.N * spec.C_out * _prod(U) * isz
            window = tuple((p[4], o) for p, o in zip(phase, o3))
            c = _direct_fwd_counts(spec, Og, Cg, J, M, (1, 1, 1), tuple(d[2] for d in dims),
                                   U, window, go_bytes, 0)
            # (the lanes kernels read grad_out unpadded)
            c["pad_byte"] = 0.0 if "lanes_mac" in c or "dwlane_mac" in c else 2.0 * go_bytes
            for k, v in c.items():
                total[k] = total.get(k, 0.0) + v
        return total
    # weight_grad (cpu/direct.direct_bwd_weight): grad_tile steps of R x TB vector FMAs
    # (the host's tile shape whose tiles cost least, direct.grad_alt) along lines of the
    # (phases') padded-width grid, one call per segment and tap block, grad_out's lines
    # laid out per segment
    kd, kh, kw = k3
    od, oh, ow = o3
    V = direct.vector_width(isz)
    T = Cg * kd * kh * kw
    R, TB = direct.grad_shape(direct.grad_alt(Og, T))
    nob, ntb = -(-Og // R), -(-T // TB)
    if direct.runs_lanes(G, Cg, Og, k3, o3, spec.stride3, spec.dilation3, padded, spec.dtype):
        # depthwise (cpu/depthwise.weight_grad): channels in the lanes
        return _dwlane_counts(depthwise.grad_work(spec.N, G, o3[1:], k3[1:], padded[1:], isz))
    if lanes_weight_grad(spec):
        # cpu/minor.py: the same tile steps along output rows of the batch's vectors
        # (lanes rounded up), after transposing the input and grad_out
        blocks = G * nob * ntb
        nv = -(-spec.N // V)
        return {"overhead": 1.0, "tile_step": blocks * od * oh * ow * nv,
                "tile_call": blocks * od * oh,
                "copy_byte": in_bytes + G * nob * R * od * oh * ow * nv * V * isz}
    wq = -(-padded[2] // sw)
    Lp = -(-((oh - 1) * wq + ow) // V) * V
    seg = max(V, direct.GRAD_SEG_BYTES // isz // V * V)
    blocks = spec.N * od * G * nob * ntb
    return {"overhead": 1.0, "tile_step": blocks * (Lp // V), "tile_call": blocks * -(-Lp // seg),
            "copy_byte": in_bytes + spec.N * od * G * nob * R * Lp * isz}


def im2col_features(spec: ConvSpec, op: str = "forward") -> dict:
    """Counts of what cpu/im2col.py runs for ``op``."""
    isz, G, Cg, Og, (kd, kh, kw), (od, oh, ow) = _dims(spec)
    # im2col: gather the column matrix, one GEMM (less efficient when small), scatter
    R = Cg * kd * kh * kw
    P = od * oh * ow
    col_bytes = spec.N * G * R * P * isz
    # large images (cpu/im2col.py: column matrix >= 1 MB) take another path: tiles of
    # whole output rows, each gathered and multiplied by a single-threaded GEMM
    big = G * R * P * isz >= im2col.BATCH_BELOW_BYTES
    rows = od * oh
    cols = (max(1, min(rows, im2col.CHUNK_BYTES // max(G * R * ow * isz, 1))) * ow if big
            else spec.N * P)
    gemm_eff = min(1.0, min(Og, R, cols) / 64.0)
    im2col_flop = spec.flops / max(gemm_eff, 1 / 64)
    out_bytes = spec.N * spec.C_out * P * isz
    if op != "forward":
        # gradients: one GEMM per block of images (W^T @ grad_out, then the col2im
        # scatter-add into a zeroed input gradient; or grad_out @ col^T after a gather)
        flop = spec.flops / max(min(1.0, min(Og, R, spec.N * P) / 64.0), 1 / 64)
        in_bytes = spec.N * spec.C_in * _prod(spec.lift(spec.padded_size)) * isz
        if op == "input_grad":             # (the scatter-add is scalar at strides > 1)
            strided = _prod(spec.stride) > 1
            return {"overhead": 1.0, "flop": flop, "col_byte": 0.0 if strided else col_bytes,
                    "col_byte_strided": col_bytes if strided else 0.0, "out_byte": in_bytes}
        # (large images: the forward's tiles per thread, each GEMM into a partial sum)
        return {"overhead": 1.0, "gather_byte": 0.0 if big else col_bytes,
                "gather_byte_big": col_bytes if big else 0.0,
                "flop": 0.0 if big else flop, "flop_big": im2col_flop if big else 0.0,
                "out_byte": out_bytes}
    return {"overhead": 1.0, "gather_byte": 0.0 if big else col_bytes,
            "gather_byte_big": col_bytes if big else 0.0,
            "flop": 0.0 if big else im2col_flop, "flop_big": im2col_flop if big else 0.0,
            "out_byte": out_bytes}


def fft_features(spec: ConvSpec, op: str = "forward") -> dict:
    """Counts of what cpu/fft.py runs (the gradients: the same transforms and
    contraction, with constants of their own)."""
    isz, G, Cg, Og, _, _ = _dims(spec)
    # fft: forward/inverse real FFTs plus the per-frequency channel contraction
    fsz = [_fast_len(p) for p in spec.lift(spec.padded_size)]
    F = _prod(fsz)
    Fh = F // max(fsz[-1], 1) * (fsz[-1] // 2 + 1)
    n_ffts = spec.N * spec.C_in + spec.N * spec.C_out + spec.C_out * Cg
    fft_flop = n_ffts * 2.5 * F * math.log2(max(F, 2))
    cmul = spec.N * spec.C_out * Cg * Fh
    return {"overhead": 1.0, "fft_flop": fft_flop, "cmul": cmul}


def _winograd_counts(spec: ConvSpec, m: int, op: str = "forward") -> dict:
    isz, G, Cg, Og, _, (od, oh, ow) = _dims(spec)
    tiles = spec.N * od * -(-oh // m) * -(-ow // m)
    padded = -(-tiles // winograd.PANEL) * winograd.PANEL
    # the weight gradient transforms the input once per chunk of output channels
    chunks = winograd.wgrad_chunks(m, Cg, Og, isz)[1] if op == "weight_grad" else 1
    return {"overhead": 1.0, "in_tile": tiles * spec.C_in * chunks,
            "out_tile": tiles * spec.C_out,
            "gemm_mac": (m + 2) ** 2 * padded * G * Cg * -(-Og // winograd.GEMM_ROWS)
            * winograd.GEMM_ROWS,
            # a task per group and panel runs alpha^2 GEMMs: their set-up and the
            # transforms' per-group passes, which few channels per group do not amortise
            # (depthwise layers: 2-4x the other terms)
            "group_panel": G * (padded // winograd.PANEL) * (m + 2) ** 2}


def winograd_features(spec: ConvSpec, op: str = "forward", m: int = 4) -> dict:
    """Counts of what cpu/winograd.py runs for F(m x m, 3x3): per tile and channel an
    input transform, per tile and output channel an output transform, and the alpha^2
    GEMMs over panels of PANEL tiles (output channels in blocks of GEMM_ROWS). The input
    gradient is the same 3x3 correlation over the fully padded grad_output
    (``adjoint_spec``); the weight gradient has the same counts (transforms of the input's
    and grad_output's tiles, GEMMs over the tiles), with constants of its own."""
    return _winograd_counts(adjoint_spec(spec) if op == "input_grad" else spec, m, op)


def winograd_f2_features(spec: ConvSpec, op: str = "forward") -> dict:
    """As :func:`winograd_features`, for F(2x2, 3x3)."""
    return winograd_features(spec, op, 2)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (scipy.fft.next_fast_len(n, real=True)), without
    importing scipy.fft on the dispatch path."""
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


# --- GPU gradients ---------------------------------------------------------------------
# (the CPU has features and constants per op above.) A gradient that a GPU algorithm
# computes by running its forward kernel on another problem costs that problem's
# forward: every input gradient is a stride-1 correlation of the zero-upsampled, fully
# padded grad_output with the flipped weight; fft's weight gradient swaps the roles of
# images and channels; the direct weight gradient is im2col's split-K GEMM.
def adjoint_spec(spec: ConvSpec) -> ConvSpec:
    """The forward problem that computes ``spec``'s input gradient (on the GPU)."""
    up = tuple((o - 1) * s + 1 + 2 * (e - 1) for o, s, e in
               zip(spec.out_size, spec.stride, spec.effective_kernel))
    return replace(spec, C_in=spec.C_out, C_out=spec.C_in, in_size=up,
                   stride=(1,) * spec.nd, padding=((0, 0),) * spec.nd, batched=True)


def swapped_spec(spec: ConvSpec) -> ConvSpec:
    """The forward problem (one per group) that computes ``spec``'s weight gradient by FFT."""
    G = spec.groups
    return replace(spec, N=spec.C_in // G, C_in=spec.N, C_out=spec.C_out // G,
                   in_size=spec.padded_size, kernel=spec.out_size, stride=spec.dilation,
                   dilation=spec.stride, padding=((0, 0),) * spec.nd, groups=1, batched=True)


def _direct_gpu_cost(spec, op):
    if op == "input_grad":
        return cuda_cost.direct(adjoint_spec(spec))
    return cuda_cost.im2col(spec) if op == "weight_grad" else cuda_cost.direct(spec)


def _im2col_gpu_cost(spec, op):
    return cuda_cost.im2col(adjoint_spec(spec) if op == "input_grad" else spec)


def _fft_gpu_cost(spec, op):
    if op == "input_grad":
        return cuda_cost.fft(adjoint_spec(spec))
    if op == "weight_grad":
        return spec.groups * cuda_cost.fft(swapped_spec(spec))
    return cuda_cost.fft(spec)


# --- reasons -----------------------------------------------------------------------------
def _kernel_str(spec):
    return "x".join(map(str, spec.kernel))


_CPU_REASONS = {
    "direct": lambda s: (f"it sums the {_kernel_str(s)} kernel over {s.C_in // s.groups} "
                         f"input channel(s) per group in place, with no column matrix "
                         f"({_prod(s.kernel)}x the input) to build and no FFTs to run, costs "
                         f"that the other algorithms do not earn back on this shape"),
    "im2col": lambda s: (f"{s.C_in // s.groups * _prod(s.kernel)}-deep patches and "
                         f"{s.C_out // s.groups} output channels per group make one large "
                         f"BLAS GEMM the most efficient"),
    "fft": lambda s: (f"the {_kernel_str(s)} kernel is large relative to the "
                      f"{'x'.join(map(str, s.in_size))} input, so O(n log n) FFTs beat "
                      f"direct summation"),
    "winograd": lambda s: (f"F(4x4,3x3) spends 36 multiplications per 4x4 output tile and "
                           f"channel pair instead of 144, and {s.C_in // s.groups} input and "
                           f"{s.C_out // s.groups} output channels per group amortise its "
                           f"transforms"),
    "winograd_f2": lambda s: (f"F(2x2,3x3) spends 16 multiplications per 2x2 output tile and "
                              f"channel pair instead of 36, with cheaper transforms and less "
                              f"edge waste than F(4x4,3x3) on the "
                              f"{'x'.join(map(str, s.out_size))} output"),
}


_GPU_REASONS = {
    "direct": lambda s: (f"{s.C_in // s.groups} input channel(s) per group with a "
                         f"{_kernel_str(s)} kernel is too little reduction to fill "
                         f"GEMM tiles; shared-memory output tiles do less wasted work"),
    "im2col": lambda s: (f"{s.C_in // s.groups * _prod(s.kernel)}-deep patches and "
                         f"{s.C_out // s.groups} output channels per group fill the implicit "
                         f"GEMM's register-blocked tiles"),
    "fft": lambda s: (f"the {_kernel_str(s)} kernel is large relative to the "
                      f"{'x'.join(map(str, s.in_size))} input, so the FFTs' O(n log n) traffic "
                      f"beats direct summation"),
}



# --- the registry ------------------------------------------------------------------------
def _any_shape(spec: ConvSpec) -> Optional[str]:
    return None


def _winograd_shapes(spec: ConvSpec) -> Optional[str]:
    """Winograd's constraints: a 3x3 kernel (2-D, or 3-D with a 1x3x3 kernel), stride 1,
    dilation 1 (any padding, padding_mode, groups, bias, batch)."""
    kd, kh, kw = spec.lift(spec.kernel)
    ok = ((kd, kh, kw) == (1, 3, 3) and spec.nd >= 2 and spec.stride3 == (1, 1, 1)
          and spec.dilation3[1:] == (1, 1))
    if ok:
        return None
    return (f"winograd supports 3x3 kernels (conv2d, or conv3d with a 1x3x3 kernel) with "
            f"stride 1 and dilation 1; got a {_kernel_str(spec)} kernel, stride "
            f"{spec.stride} and dilation {spec.dilation} (conv{spec.nd}d). Use "
            f"algorithm='auto', 'direct', 'im2col' or 'fft' for this convolution")


@dataclass(frozen=True)
class Algorithm:
    """One convolution algorithm: everything dispatch, autotune, tests and benchmarks need."""

    name: str
    summary: str
    error_class: str               # "direct sum" (rounding of one sum per output) | "fft"
    #: documented bound on |result - exact| / max(1, max|exact|) per device and compute
    #: dtype name (float16 is computed in float32 and rounded): what the tests assert
    rtol: dict
    cpu_kernels: cpu_engine.Kernels
    cuda_kernels: str              # the name of its Kernels in fastconv.cuda.engine
    cpu_features: Callable         # (spec, op) -> {feature: count}, times _MODEL[name][op]
    cuda_estimate: Callable        # (spec, op) -> seconds on the GPU (fastconv.cuda.cost)
    reasons: dict                  # device -> (spec -> why it is fastest)
    #: devices on which one NaN or inf spreads beyond the outputs whose window holds it
    spreads_nonfinite: tuple = ()
    supports: Callable = _any_shape   # spec -> None, or why the algorithm cannot run it
    devices: tuple = DEVICES
    #: the strictest precision level (see :func:`set_precision`) that admits it
    precision: str = "highest"
    #: measured max |error| / max|exact| per compute dtype name (docs/precision_table.py,
    #: resnet/vgg layers, C up to 512): what ``Choice.errors`` reports
    error_estimate: dict = field(default_factory=dict)
    #: ops whose kernel is another entry's (op -> that entry's name): costed as that entry
    delegate: dict = field(default_factory=dict)

    def kernels(self, device: str):
        """The op -> kernel triple on ``device`` (the GPU's loads numba.cuda)."""
        if device == "cpu":
            return self.cpu_kernels
        from .cuda import engine as cuda_engine
        return getattr(cuda_engine, self.cuda_kernels)

    def estimate(self, spec: ConvSpec, op: str = "forward", device: str = "cpu") -> float:
        """Estimated seconds for ``op`` on ``device``."""
        if op in self.delegate:
            return REGISTRY[self.delegate[op]].estimate(spec, op, device)
        if device == "cpu":
            model = _MODEL[self.name][op]
            return float(sum(model.get(k, 0.0) * v
                             for k, v in self.cpu_features(spec, op).items()))
        return float(self.cuda_estimate(spec, op))


_EXACT = {"cpu": {"float32": 1e-4, "float64": 1e-10},
          "cuda": {"float32": 2e-4, "float64": 1e-9}}
#: the documented bound of winograd (F(4x4,3x3), points {0, +-sqrt(2)/2, +-sqrt(2)}):
#: measured max 5e-6 (float32) / 7e-15 (float64) of max|y| (docs/precision_table.py, about
#: twice the direct sum's), within the exact algorithms' tolerance
_WINOGRAD = {"cpu": {"float32": 1e-4, "float64": 1e-10}}
REGISTRY = {a.name: a for a in (
    Algorithm("direct", "the definition, register-tiled (cpu/direct.py)", "direct sum", _EXACT,
              cpu_engine.DIRECT, "DIRECT", direct_features, _direct_gpu_cost,
              {"cpu": _CPU_REASONS["direct"], "cuda": _GPU_REASONS["direct"]},
              error_estimate={"float32": 2.6e-6, "float64": 6e-15}),
    Algorithm("im2col", "column matrix times weight, one BLAS GEMM (cpu/im2col.py)",
              "direct sum", _EXACT, cpu_engine.IM2COL, "IM2COL", im2col_features,
              _im2col_gpu_cost,
              {"cpu": _CPU_REASONS["im2col"], "cuda": _GPU_REASONS["im2col"]},
              error_estimate={"float32": 6.3e-7, "float64": 5.8e-15}),
    Algorithm("fft", "real FFTs and a per-frequency channel contraction (cpu/fft.py)", "fft",
              _EXACT, cpu_engine.FFT, "FFT", fft_features, _fft_gpu_cost,
              {"cpu": _CPU_REASONS["fft"], "cuda": _GPU_REASONS["fft"]},
              # cpu/fft.py sums the outputs that read a NaN/inf directly (the GPU's does not)
              spreads_nonfinite=("cuda",), precision="high",
              error_estimate={"float32": 5.4e-7, "float64": 6.4e-15}),
    # Winograd: forward, input and weight gradients by F(m x m, 3x3) (cpu/winograd.py).
    # A NaN/inf in one input tile reaches every output of the
    # tiles that read it (up to 6x6 outputs instead of 3x3 windows): spreads.
    Algorithm("winograd", "F(4x4,3x3) Winograd, fused cache-blocked transforms and GEMMs "
              "(cpu/winograd.py)", "winograd F(4x4,3x3)", _WINOGRAD, cpu_engine.WINOGRAD,
              "", winograd_features, None, {"cpu": _CPU_REASONS["winograd"]},
              spreads_nonfinite=("cpu",), supports=_winograd_shapes, devices=("cpu",),
              precision="high", error_estimate={"float32": 5.2e-6, "float64": 6.9e-15}),
    Algorithm("winograd_f2", "F(2x2,3x3) Winograd, near-exact (cpu/winograd.py)",
              "winograd F(2x2,3x3)", _WINOGRAD, cpu_engine.WINOGRAD_F2, "",
              winograd_f2_features, None,
              {"cpu": _CPU_REASONS["winograd_f2"]}, spreads_nonfinite=("cpu",),
              supports=_winograd_shapes, devices=("cpu",), precision="high",
              error_estimate={"float32": 9.4e-7, "float64": 5.5e-15}),
)}

#: what ``algorithm=`` accepts
ALGORITHM_NAMES = ("auto",) + tuple(REGISTRY)


def admits(level: str, entry: Algorithm) -> bool:
    """Whether precision ``level`` allows ``entry`` (levels: ``PRECISIONS``, strictest first)."""
    return PRECISIONS.index(entry.precision) <= PRECISIONS.index(level)


def candidates(spec: ConvSpec, device: str = "cpu", precision: Optional[str] = None) -> list:
    """The registry entries that can run ``spec`` on ``device`` at ``precision`` (None: every
    level)."""
    return [a for a in REGISTRY.values() if device in a.devices and a.supports(spec) is None
            and (precision is None or admits(precision, a))]


def estimate(spec: ConvSpec, op: str = "forward", device: str = "cpu",
             precision: Optional[str] = None) -> dict:
    """Estimated seconds per candidate algorithm (at ``precision``; None: all of them)."""
    return {a.name: a.estimate(spec, op, device) for a in candidates(spec, device, precision)}


# --- precision levels --------------------------------------------------------------------
def set_precision(precision: str = "high") -> None:
    """Set the precision level that ``algorithm="auto"`` respects (as
    ``torch.set_float32_matmul_precision``); the per-call ``precision=`` keyword overrides it.

    * ``"highest"``: only algorithms whose error is a direct sum's (direct, im2col).
    * ``"high"`` (default): also FFT and Winograd F(2x2,3x3) / F(4x4,3x3) with the
      points {0, +-sqrt(2)/2, +-sqrt(2)}: max error ~4x the direct sum's (README,
      "Algorithms and precision").
    * ``"medium"``: anything faster with a measured, documented error; at present no
      algorithm needs it, so ``"medium"`` chooses as ``"high"`` does.

    Also set by the environment variable ``FASTCONV_PRECISION``. An explicit
    ``algorithm=`` always runs that algorithm.

    Examples
    --------
    >>> import fastconv as fc
    >>> fc.set_precision("highest"); fc.get_precision()
    'highest'
    >>> fc.set_precision("high")
    """
    _config.PRECISION = check_precision("set_precision", precision, allow_none=False)


_scope = threading.local()


@contextlib.contextmanager
def precision_scope(precision: Optional[str]):
    """Within it, this thread's ``plan`` calls default to ``precision`` (None: no change):
    how a per-call ``precision=`` reaches the GPU paths."""
    old = getattr(_scope, "level", None)
    if precision is not None:
        _scope.level = precision
    try:
        yield
    finally:
        _scope.level = old


def _level(precision: Optional[str]) -> str:
    if precision is not None:
        return precision
    return getattr(_scope, "level", None) or _config.PRECISION


def get_precision() -> str:
    """The current precision level (see :func:`set_precision`).

    >>> import fastconv as fc
    >>> fc.get_precision() in ("highest", "high", "medium")
    True
    """
    return _config.PRECISION


# --- the public chooser ------------------------------------------------------------------
@dataclass
class Choice:
    """The outcome of :func:`choose_algorithm`."""

    algorithm: str
    reason: str
    estimates: dict = field(default_factory=dict)
    #: per candidate: (error class, measured max error relative to the largest output,
    #: for the dtype)
    errors: dict = field(default_factory=dict)
    #: the precision level the choice respected
    precision: str = "high"
    #: estimated seconds of the algorithms that the precision level excluded
    excluded: dict = field(default_factory=dict)

    def __repr__(self):
        est = ", ".join(f"{k}={v * 1e3:.3g} ms (error ~{self.errors[k][1]:.1g})"
                        if k in self.errors else f"{k}={v * 1e3:.3g} ms"
                        for k, v in self.estimates.items())
        return f"Choice(algorithm={self.algorithm!r}, estimates: {est}; {self.reason})"


def choose_algorithm(x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                     dtype="float32", device="cpu", *, op="forward",
                     precision=None) -> Choice:
    """Pick the fastest algorithm for a convolution (or one of its gradients) and say why.

    Parameters
    ----------
    x_shape, weight_shape : tuple of int
        ``(N, C_in, *spatial)`` (or unbatched) and ``(C_out, C_in/groups, *kernel)``;
        the spatial rank (1, 2 or 3) is taken from ``weight_shape``.
    stride, padding, dilation, groups :
        As for :func:`fastconv.conv2d`.
    dtype : str or numpy dtype
    device : {"cpu", "cuda"}
    op : {"forward", "input_grad", "weight_grad"}
        The operation to plan: the convolution, or the gradient with respect to its
        input (also ``conv_transpose2d``) or its weight.
    precision : {None, "highest", "high", "medium"}
        The precision level (see :func:`fastconv.set_precision`); None: the global one.

    Returns
    -------
    Choice
        ``.algorithm`` (what ``algorithm="auto"`` runs), ``.reason`` (one sentence),
        ``.estimates`` (estimated seconds per candidate the level admits), ``.errors``
        (per candidate: error class and documented relative error), ``.excluded``
        (estimated seconds of the faster-or-not candidates the level excluded).

    Examples
    --------
    >>> import fastconv as fc
    >>> c = fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    >>> c.algorithm in c.estimates
    True
    >>> sorted(c.estimates)
    ['direct', 'fft', 'im2col', 'winograd', 'winograd_f2']
    >>> sorted(fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1,
    ...                            precision="highest").estimates)
    ['direct', 'im2col']
    >>> fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1,
    ...                     op="weight_grad").reason.startswith("for the weight gradient")
    True
    """
    fn = "choose_algorithm"
    check_op(fn, op)
    precision = check_precision(fn, precision)
    device = check_device(fn, device)
    weight_shape = size_tuple(fn, "weight_shape", weight_shape, (3, 4, 5),
                              "(C_out, C_in/groups, *kernel)")
    nd = len(weight_shape) - 2
    x_shape = size_tuple(fn, "x_shape", x_shape, (nd + 2, nd + 1),
                         "(N, C_in, *spatial), or (C_in, *spatial) unbatched")
    dtype = np.dtype(dtype)
    spec, _, _, _ = conv_spec(fn, nd, proxy(x_shape, dtype), proxy(weight_shape, dtype), None,
                              stride, padding, dilation, groups, "zeros")
    return choose(spec, op, device, precision)


_OP_WORDS = {"forward": "", "input_grad": "for the input gradient, ",
             "weight_grad": "for the weight gradient, "}


def choose(spec: ConvSpec, op: str = "forward", device: str = "cpu",
           precision: Optional[str] = None) -> Choice:
    """The cost model's Choice for ``spec`` (validated) on ``device`` at ``precision``
    (None: the global level)."""
    level = _level(precision)
    every = estimate(spec, op, device)
    est = {k: v for k, v in every.items() if admits(level, REGISTRY[k])}
    excluded = {k: v for k, v in every.items() if k not in est}
    best = min(est, key=est.get)
    others = [a for a in est if a != best]
    where = _OP_WORDS[op] + ("on the GPU, " if device == "cuda" else "")
    if others:
        runner_up = min(others, key=est.get)
        ratio = est[runner_up] / est[best] if est[best] > 0 else float("inf")
        ahead = f", {ratio:.1f}x ahead of {runner_up}"
    else:
        ahead = ", the only candidate"
    reason = (f"{where}{best} is estimated fastest ({est[best] * 1e3:.3g} ms{ahead}): "
              f"{REGISTRY[best].reasons[device](spec)}.")
    faster = [k for k in excluded if excluded[k] < est[best]]
    if faster:
        lost = ", ".join(f"{k} ({excluded[k] * 1e3:.3g} ms, {REGISTRY[k].error_class} error)"
                         for k in sorted(faster, key=excluded.get))
        reason += (f" precision={level!r} excludes the faster {lost}: it admits only "
                   f"algorithms of precision class {_LEVEL_WORDS[level]}.")
    dt = "float32" if spec.dtype.itemsize <= 4 else "float64"
    errors = {k: (REGISTRY[k].error_class, REGISTRY[k].error_estimate.get(dt, float("nan")))
              for k in est}
    return Choice(best, reason, est, errors, level, excluded)


_LEVEL_WORDS = {"highest": "'highest' (a direct sum's rounding)",
                "high": "'highest' or 'high'", "medium": "'highest', 'high' or 'medium'"}


# --- planning ----------------------------------------------------------------------------
_lock = threading.Lock()
_memory: dict = {}          # autotuned: cache key -> algorithm name
_chosen: dict = {}          # modelled: (spec key, op, device) -> Algorithm, a memo for hot loops
_loaded: set = set()      # devices whose disk entries are in _memory


def plan(spec: ConvSpec, op: str = "forward", algorithm: str = "auto", device: str = "cpu",
         run: Callable = None, finite: Callable = None,
         precision: Optional[str] = None) -> Algorithm:
    """The one place an algorithm is chosen: the registry entry to run ``op`` of ``spec``.

    ``algorithm`` is the caller's (any name in the registry) or ``"auto"``: then the
    autotuned winner (when autotuning is on and ``run(entry)`` can time a candidate) or
    the cheapest estimate. ``finite()`` says whether the operands hold only finite values;
    it is asked only when ``auto`` picked an algorithm that would spread a NaN or inf on
    this device, and then the cheapest one that keeps them local runs instead.
    ``precision`` (None: the global level) limits what ``auto`` considers; an explicit
    ``algorithm`` runs whatever its precision class."""
    level = _level(precision)
    if algorithm != "auto":
        entry = REGISTRY[algorithm]
        if device not in entry.devices:
            raise ValueError(f"algorithm={algorithm!r} runs on {' and '.join(entry.devices)} "
                             f"only, not on {device!r}; use algorithm='auto' or one of "
                             f"{tuple(n for n, a in REGISTRY.items() if device in a.devices)}")
        why = entry.supports(spec)
        if why is not None:
            raise ValueError(f"algorithm={algorithm!r} cannot run this convolution: {why}")
        return entry
    if _config.AUTOTUNE and run is not None:
        entry = REGISTRY[_autotune(spec, op, device, run, level)]
    else:
        key = (spec.key(), op, device, level)
        entry = _chosen.get(key)
        if entry is None:
            entry = _chosen[key] = REGISTRY[choose(spec, op, device, level).algorithm]
    if device in entry.spreads_nonfinite and finite is not None and not finite():
        est = estimate(spec, op, device)
        entry = REGISTRY[min((a for a in est if device not in REGISTRY[a].spreads_nonfinite
                              and admits(level, REGISTRY[a])), key=est.get)]
    return entry


def set_autotune(enabled: bool = True) -> None:
    """Time the candidates on first use of each shape and keep the fastest.

    The winner is kept in memory and in ``$FASTCONV_CACHE_DIR/autotune.json``
    (default ``~/.cache/fastconv``), per device and op. Also enabled by the environment
    variable ``FASTCONV_AUTOTUNE=1``.

    Examples
    --------
    >>> import fastconv as fc
    >>> fc.set_autotune(False)
    """
    _config.AUTOTUNE = bool(enabled)


def cache_path() -> Path:
    return _config.cache_dir() / "autotune.json"


def _machine_key(device: str = "cpu") -> str:
    import numba
    return f"{_device_name(device)}|numba-{numba.__version__}|fastconv-{__version__}"


def _device_name(device: str) -> str:
    if device == "cuda":
        from .cuda import runtime
        return "cuda:" + runtime.device_name()
    return _cpu_model()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_key(spec: ConvSpec, op: str, precision: str = "high") -> str:
    key = repr(spec.key()) if op == "forward" else f"{op}:{spec.key()!r}"
    return key if precision == "high" else f"{precision}:{key}"


def _read_cache_file(path) -> dict:
    """The whole cache file as a dict; {} when absent. Raises ValueError when corrupt."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (RecursionError, UnicodeDecodeError) as exc:     # e.g. 100,000 nested '['
        raise ValueError(f"{type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _read_disk(device: str) -> dict:
    path = cache_path()
    try:
        entries = _read_cache_file(path).get(_machine_key(device), {})
        if not isinstance(entries, dict):
            raise ValueError("bad entry")
        return {k: v for k, v in entries.items() if v in REGISTRY}
    except (OSError, ValueError) as exc:
        warnings.warn(f"fastconv: ignoring unreadable autotune cache {path}: {exc}",
                      RuntimeWarning, stacklevel=4)
        return {}


def _write_disk(device: str, key: str, algo: str) -> None:
    path = cache_path()
    try:
        try:
            data = _read_cache_file(path)
        except (OSError, ValueError):
            data = {}                          # a corrupt cache is replaced
        entries = data.get(_machine_key(device))
        if not isinstance(entries, dict):
            entries = data[_machine_key(device)] = {}
        entries[key] = algo
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
    except OSError as exc:
        warnings.warn(f"fastconv: could not write autotune cache {path}: {exc}", RuntimeWarning,
                      stacklevel=4)


def _autotune(spec: ConvSpec, op: str, device: str, run: Callable,
              precision: str = "high") -> str:
    """Time every candidate that ``precision`` admits (``run(entry)`` runs ``op`` once and
    waits for it) and keep the fastest, per device, in memory and on disk."""
    key = _cache_key(spec, op, precision)
    with _lock:
        if device not in _loaded:
            _memory.update({(device, k): v for k, v in _read_disk(device).items()})
            _loaded.add(device)
        if (device, key) in _memory:
            return _memory[(device, key)]
    times = {}
    # (outside a layer's saved transforms, cpu/_common.reuse: the public calls, which
    # share this cache entry, pay for their transposes)
    with reuse({}, False):
        for entry in candidates(spec, device, precision):
            run(entry)                           # warm-up (compiles on first use)
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                run(entry)
                best = min(best, time.perf_counter() - t0)
            times[entry.name] = best
    winner = min(times, key=times.get)
    with _lock:
        _memory[(device, key)] = winner
        _write_disk(device, key, winner)
    return winner
