"""Choosing the algorithm: a fitted cost model, optional autotuning, and its disk cache.

The cost model estimates seconds per candidate from operation and byte counts times
constants fitted on a machine of our CI class (2 x86-64 cores). The constants live in
``cost_model.json`` next to this file; ``python bench/fit_cost_model.py`` re-times the
kernels on the current machine, refits them (non-negative least squares) and rewrites
that file.

Autotuning (``set_autotune(True)`` or ``FASTCONV_AUTOTUNE=1``) times every candidate the
first time a problem is seen and keeps the winner in memory and in
``$FASTCONV_CACHE_DIR/autotune.json`` (default ``~/.cache/fastconv``), keyed by CPU
model, numba version and fastconv version.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _config
from ._spec import ConvSpec, _prod
from .cpu import direct, im2col

CPU_ALGORITHMS = ("direct", "im2col", "fft")

_MODEL_FILE = Path(__file__).with_name("cost_model.json")
_DEFAULT_MODEL = {
    # seconds per unit; see bench/fit_cost_model.py for how these are measured
    "direct": {"overhead": 2.0e-5, "line": 1.0e-8, "flop": 1.0e-11},
    "im2col": {"overhead": 4.0e-5, "gather_byte": 1.0e-10, "flop": 1.2e-11, "out_byte": 1e-10},
    "fft": {"overhead": 1.0e-4, "fft_flop": 1.0e-10, "cmul": 1.0e-9},
}


@dataclass
class Choice:
    """The outcome of :func:`choose_algorithm`."""

    algorithm: str
    reason: str
    estimates: dict = field(default_factory=dict)

    def __repr__(self):
        est = ", ".join(f"{k}={v * 1e3:.3g} ms" for k, v in self.estimates.items())
        return f"Choice(algorithm={self.algorithm!r}, estimates: {est}; {self.reason})"


def _load_model() -> dict:
    try:
        with open(_MODEL_FILE) as fh:
            model = json.load(fh)
        return {k: dict(_DEFAULT_MODEL[k], **model.get(k, {})) for k in _DEFAULT_MODEL}
    except (OSError, ValueError):
        return _DEFAULT_MODEL


_MODEL = _load_model()


# --- features -------------------------------------------------------------------------
def features(spec: ConvSpec) -> dict:
    """Operation and byte counts per algorithm (the cost model's regressors)."""
    isz = spec.dtype.itemsize
    G = spec.groups
    Cg, Og = spec.C_in // G, spec.C_out // G
    kd, kh, kw = spec.lift(spec.kernel)
    od, oh, ow = spec.lift(spec.out_size)
    sd, sh, sw = spec.stride3
    wp = spec.lift(spec.padded_size)[2]
    # direct: what cpu/direct.py computes -- an output plane as one line on the padded-
    # width grid (of the phases, for strides > 1), output channels in blocks of 4 (a
    # partial block costs a whole one), register tiles of tile_width outputs along the
    # line running all Cg*kD*kH*kW taps; lines shorter than a tile interleave the images
    # (batch-minor: one line for the whole batch, paid for with two transposes); single
    # output channels (depthwise), and lines still shorter than a tile, take passes of
    # 8 taps over each channel's accumulators instead
    wq = -(-wp // sw)
    line = (oh - 1) * wq + ow
    minor = direct.batch_minor(spec.N, line, isz)
    if minor:
        line *= spec.N
    lines = (1 if minor else spec.N) * G * od
    T = Cg * kd * kh * kw
    tw = int(direct.tile_width(isz))
    tiled = passed = 0
    if Og == 1 or line < tw:                   # per channel: passes of 8, 4, then 1 taps
        passes = T // 8 + (T % 8) // 4 + T % 4
        passed = lines * Og * line * passes
    else:
        tiled = lines * -(-Og // 4) * 4 * -(-line // tw) * tw * T
    in_bytes = spec.N * spec.C_in * _prod(spec.lift(spec.padded_size)) * isz
    phase_bytes = in_bytes if sh * sw > 1 else 0
    minor_bytes = in_bytes + spec.N * spec.C_out * od * oh * ow * isz if minor else 0
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
    # fft: forward/inverse real FFTs plus the per-frequency channel contraction
    fsz = [_fast_len(p) for p in spec.lift(spec.padded_size)]
    F = _prod(fsz)
    Fh = F // max(fsz[-1], 1) * (fsz[-1] // 2 + 1)
    n_ffts = spec.N * spec.C_in + spec.N * spec.C_out + spec.C_out * Cg
    fft_flop = n_ffts * 2.5 * F * math.log2(max(F, 2))
    cmul = spec.N * spec.C_out * Cg * Fh
    return {"direct": {"overhead": 1.0, "line": lines, "tile_mac": tiled, "pass": passed,
                       "phase_byte": phase_bytes, "minor_byte": minor_bytes},
            "im2col": {"overhead": 1.0, "gather_byte": 0.0 if big else col_bytes,
                       "gather_byte_big": col_bytes if big else 0.0,
                       "flop": 0.0 if big else im2col_flop, "flop_big": im2col_flop if big else 0.0,
                       "out_byte": out_bytes},
            "fft": {"overhead": 1.0, "fft_flop": fft_flop, "cmul": cmul}}


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


def estimate(spec: ConvSpec) -> dict:
    feats = features(spec)
    return {a: float(sum(_MODEL[a].get(k, 0.0) * v for k, v in feats[a].items()))
            for a in CPU_ALGORITHMS}


# --- the public chooser ---------------------------------------------------------------
def _proxy(shape, dtype):
    """A zero-strided array of the given shape: validation without memory."""
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(int(s) for s in shape))


def choose_algorithm(x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                     dtype="float32", device="cpu") -> Choice:
    """Pick the fastest algorithm for a convolution and say why.

    Parameters
    ----------
    x_shape, weight_shape : tuple of int
        ``(N, C_in, *spatial)`` (or unbatched) and ``(C_out, C_in/groups, *kernel)``;
        the spatial rank (1, 2 or 3) is taken from ``weight_shape``.
    stride, padding, dilation, groups :
        As for :func:`fastconv.conv2d`.
    dtype : str or numpy dtype
    device : {"cpu", "cuda"}

    Returns
    -------
    Choice
        ``.algorithm`` (what ``algorithm="auto"`` runs), ``.reason`` (one sentence) and
        ``.estimates`` (estimated seconds per candidate).

    Examples
    --------
    >>> import fastconv as fc
    >>> c = fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    >>> c.algorithm in c.estimates
    True
    >>> sorted(c.estimates)
    ['direct', 'fft', 'im2col']
    """
    from ._validate import conv_spec, size_tuple
    fn = "choose_algorithm"
    weight_shape = size_tuple(fn, "weight_shape", weight_shape, (3, 4, 5),
                              "(C_out, C_in/groups, *kernel)")
    nd = len(weight_shape) - 2
    x_shape = size_tuple(fn, "x_shape", x_shape, (nd + 2, nd + 1),
                         "(N, C_in, *spatial), or (C_in, *spatial) unbatched")
    dtype = np.dtype(dtype)
    spec, _, _, _ = conv_spec("choose_algorithm", nd, _proxy(x_shape, dtype),
                              _proxy(weight_shape, dtype), None, stride, padding, dilation,
                              groups, "zeros")
    return choose(spec, device)


def choose(spec: ConvSpec, device: str = "cpu") -> Choice:
    if device == "cuda":
        from .cuda import cost as cuda_cost
        return cuda_cost.choose(spec)
    if device not in ("cpu", None):
        raise ValueError(f"choose_algorithm: device must be 'cpu' or 'cuda', got {device!r}")
    return choice_from(spec, estimate(spec), _REASONS)


def choice_from(spec: ConvSpec, est: dict, reasons: dict, where: str = "") -> Choice:
    """The Choice for cost estimates ``est``: the cheapest, and a sentence on why
    (``reasons[algorithm](spec)``); shared by the CPU model and the GPU table."""
    best = min(est, key=est.get)
    runner_up = min((a for a in est if a != best), key=est.get)
    ratio = est[runner_up] / est[best] if est[best] > 0 else float("inf")
    reason = (f"{where}{best} is estimated fastest ({est[best] * 1e3:.3g} ms, {ratio:.1f}x "
              f"ahead of {runner_up}): {reasons[best](spec)}.")
    return Choice(best, reason, est)


def _kernel_str(spec):
    return "x".join(map(str, spec.kernel))


_REASONS = {
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
}


# --- autotuning -----------------------------------------------------------------------
_lock = threading.Lock()
_memory: dict = {}          # spec key -> algorithm (autotuned)
_chosen: dict = {}          # (spec key, op) -> algorithm (cost model), a memo for hot loops
_disk_loaded = False


def set_autotune(enabled: bool = True) -> None:
    """Time the candidates on first use of each shape and keep the fastest.

    The winner is kept in memory and in ``$FASTCONV_CACHE_DIR/autotune.json``
    (default ``~/.cache/fastconv``). Also enabled by the environment variable
    ``FASTCONV_AUTOTUNE=1``.

    Examples
    --------
    >>> import fastconv as fc
    >>> fc.set_autotune(False)
    """
    _config.AUTOTUNE = bool(enabled)


def cache_path() -> Path:
    return _config.cache_dir() / "autotune.json"


def _machine_key() -> str:
    import numba
    from . import __version__
    return f"{_cpu_model()}|numba-{numba.__version__}|fastconv-{__version__}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _spec_key(spec: ConvSpec) -> str:
    return repr(spec.key())


def _read_disk() -> dict:
    path = cache_path()
    try:
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        entries = data.get(_machine_key(), {})
        if not isinstance(entries, dict):
            raise ValueError("bad entry")
        return {k: v for k, v in entries.items() if v in CPU_ALGORITHMS}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"fastconv: ignoring unreadable autotune cache {path}: {exc}", RuntimeWarning,
                      stacklevel=3)
        return {}


def _write_disk(key: str, algo: str) -> None:
    path = cache_path()
    try:
        data = {}
        try:
            with open(path) as fh:
                data = json.load(fh)
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        entries = data.get(_machine_key())
        if not isinstance(entries, dict):
            entries = data[_machine_key()] = {}
        entries[key] = algo
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"fastconv: could not write autotune cache {path}: {exc}", RuntimeWarning,
                      stacklevel=3)


def _autotune(spec: ConvSpec, run) -> str:
    global _disk_loaded
    key = _spec_key(spec)
    with _lock:
        if not _disk_loaded:
            _memory.update(_read_disk())
            _disk_loaded = True
        if key in _memory:
            return _memory[key]
    times = {}
    for algo in CPU_ALGORITHMS:
        run(algo)                               # warm-up (compiles on first use)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            run(algo)
            best = min(best, time.perf_counter() - t0)
        times[algo] = best
    winner = min(times, key=times.get)
    with _lock:
        _memory[key] = winner
        _write_disk(key, winner)
    return winner


# Gradients relative to the forward, per algorithm (measured on the MNIST layers, 2 cores):
# the direct weight gradient is a reduction that runs ~2.3x slower than its forward,
# and direct/FFT input gradients convolve a zero-upsampled grad_out (stride^nd more work);
# im2col's gradients are GEMMs of the same size as its forward.
def _grad_factor(spec: ConvSpec, op: str, algo: str) -> float:
    if op == "weight_grad":
        return 2.3 if algo == "direct" else 1.0
    if op == "input_grad" and algo != "im2col":
        return float(_prod(spec.stride))
    return 1.0


def select(spec: ConvSpec, algorithm: str, run=None, op: str = "forward") -> str:
    """The algorithm to run for ``spec``: the caller's, the autotuned or the modelled one.

    ``op`` is ``"forward"``, ``"input_grad"`` or ``"weight_grad"`` (the model weighs the
    algorithms' gradients differently); ``run(algo)`` executes the forward with one
    algorithm (used to autotune the forward)."""
    if algorithm != "auto":
        return algorithm
    key = (spec.key(), op)
    if _config.AUTOTUNE and run is not None and op == "forward":
        return _autotune(spec, run)
    algo = _chosen.get(key)
    if algo is None:
        if op == "forward":
            algo = choose(spec).algorithm
        else:
            est = estimate(spec)
            algo = min(est, key=lambda a: est[a] * _grad_factor(spec, op, a))
        _chosen[key] = algo
    return algo
