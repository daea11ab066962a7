"""fastconv.signal's direct method on the one-channel stencil kernel (cpu/stencil.py):
images whose widths and heights sit just below / at / above its tiles, kernels up to
larger than the image, every mode and boundary, float32/float64/complex/integers,
against scipy.signal (integers bit for bit, floats within test_signal's tolerances)."""
from unittest import mock

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import signal
from fastconv.cpu import stencil
from fastconv.signal import _memory

from test_signal import assert_like, make

DTYPES = ["int64", "int16", "float32", "float64", "complex64", "complex128"]


def nt_everywhere(on):
    """Non-temporal stores at any size and kernel (off by default) when ``on``."""
    return mock.patch.multiple(stencil, NT_MIN_BYTES=0 if on else stencil.NT_MIN_BYTES,
                               NT_MAX_TAPS=10 ** 9 if on else stencil.NT_MAX_TAPS)


def edge_widths():
    """Output widths around the full and half tiles of float32 and float64."""
    ws = {1, 2, 3}
    for isz in (4, 8):
        tw = stencil.tile_width(isz)
        for t in (stencil.half_width(isz), tw, 2 * tw):
            ws |= {t - 1, t, t + 1}
    return sorted(ws)


@st.composite
def images(draw):
    W = draw(st.sampled_from(edge_widths()))
    H = draw(st.integers(1, 2 * stencil.ROWS + 2))
    kh = draw(st.sampled_from([1, 2, 3, 4, 5, 7, H, H + 2]))
    kw = draw(st.sampled_from([1, 2, 3, 5, 9, W, W + 3]))
    d1, d2 = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return make(rng, (H, W), d1), make(rng, (max(1, kh), max(1, kw)), d2)


@settings(max_examples=60, deadline=None, database=None)
@given(images(), st.sampled_from(["full", "same", "valid"]),
       st.sampled_from(["fill", "wrap", "symm"]), st.integers(-3, 3),
       st.sampled_from(["convolve2d", "correlate2d"]), st.booleans())
def test_sweep_stencil_2d(problem, mode, boundary, fillvalue, name, strips):
    """convolve2d/correlate2d forced onto the direct method (the stencil kernel reading
    the boundary's extension in place) against SciPy's; ``strips``: strips of one tile
    (a tiny L1 budget: edges in every task) and non-temporal stores at any size."""
    a, b = problem
    try:
        ref = getattr(ss, name)(a, b, mode, boundary, fillvalue)
    except ValueError:
        return
    before = a.copy()
    with mock.patch.object(_memory, "choose", lambda *args: "direct"), \
            mock.patch.object(stencil, "L1_BYTES", 1 if strips else stencil.L1_BYTES), \
            nt_everywhere(strips):
        ours = getattr(signal, name)(a, b, mode, boundary, fillvalue)
    np.testing.assert_array_equal(a, before)
    assert_like(ours, ref, scale=10 * max(1, b.size) ** 0.5, inputs=(a, b))


@settings(max_examples=60, deadline=None, database=None)
@given(images(), st.sampled_from(["full", "same", "valid"]),
       st.sampled_from(["convolve", "correlate"]), st.booleans())
def test_sweep_stencil_nd(problem, mode, name, one_d):
    """convolve/correlate(method='direct') in 2-D and (first row) 1-D against SciPy's
    direct method."""
    a, b = problem
    if one_d:
        a, b = a[0], b[0]
    try:
        ref = getattr(ss, name)(a, b, mode, method="direct")
    except ValueError:
        with pytest.raises(ValueError):
            getattr(signal, name)(a, b, mode, method="direct")
        return
    assert_like(getattr(signal, name)(a, b, mode, method="direct"), ref,
                scale=10 * max(1, b.size) ** 0.5, inputs=(a, b))


def test_large_image_all_paths(rng):
    """A 1024-wide image, kernels 3..31, float64 'same' with each boundary: the interior
    read in place, the edges from the kernel's small copies, as in the benchmark."""
    x = rng.standard_normal((300, 1024))
    for k in (3, 8, 15, 31):
        h = rng.standard_normal((k, k + 2))
        for boundary in ("fill", "wrap", "symm"):
            with mock.patch.object(_memory, "choose", lambda *args: "direct"):
                ours = signal.convolve2d(x, h, "same", boundary)
            assert_like(ours, ss.convolve2d(x, h, "same", boundary), scale=k)


@st.composite
def signals(draw):
    """1-D signals around the stencil kernel's strips (of a tiny L1 budget: one tile) and
    one-row tiles, kernels around their blocks of taps, up to longer than the signal."""
    lanes = stencil.lanes(8)
    sw = lanes * stencil.stream_vectors(8)
    n = draw(st.sampled_from(sorted({t + d for t in (1, sw, 3 * sw, 8 * sw, 1000)
                                     for d in (-1, 0, 1) if t + d > 0})))
    m = draw(st.sampled_from(sorted({1, 2, 3, lanes + 1, sw + 1, sw + lanes + 2, 101,
                                     n, n + 3})))
    d1, d2 = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return make(rng, (n,), d1), make(rng, (m,), d2)


@settings(max_examples=60, deadline=None, database=None)
@given(signals(), st.sampled_from(["full", "same", "valid"]),
       st.sampled_from(["convolve", "correlate"]), st.booleans())
def test_sweep_stencil_1d(problem, mode, name, strips):
    """convolve/correlate(method='direct') of 1-D signals (the zero padding read in
    place) against SciPy's direct method, with strips of one tile and non-temporal
    stores at any size or the defaults; the inputs are left as they were."""
    a, b = problem
    try:
        ref = getattr(ss, name)(a, b, mode, method="direct")
    except ValueError:
        return
    before = a.copy(), b.copy()
    with mock.patch.object(stencil, "L1_BYTES", 1 if strips else stencil.L1_BYTES), \
            mock.patch.object(stencil, "FIR_CHUNK_BYTES", 1 if strips else
                              stencil.FIR_CHUNK_BYTES), nt_everywhere(strips):
        ours = getattr(signal, name)(a, b, mode, method="direct")
    assert_like(ours, ref, scale=10 * max(1, b.size) ** 0.5, inputs=(a, b))
    np.testing.assert_array_equal(a, before[0])
    np.testing.assert_array_equal(b, before[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_1d_kernels_fast_fir_below_highest(dtype):
    """Long 1-D kernels: the direct method runs the stencil's fast FIR path at the
    "high" precision level (its result differs in rounding from the direct sums', within
    the tolerance against SciPy) and the direct sums at "highest" (bit for bit what the
    path switched off gives)."""
    import fastconv as fc
    rng = np.random.default_rng(5)
    x = make(rng, (20000,), dtype)
    h = make(rng, (121,), dtype)
    ref = ss.convolve(x, h, "same", method="direct")
    level = fc.get_precision()
    try:
        fc.set_precision("high")
        fast = signal.convolve(x, h, "same", method="direct")
        with mock.patch.object(stencil, "FIR_MIN_TAPS", 10 ** 9):
            sums = signal.convolve(x, h, "same", method="direct")
        fc.set_precision("highest")
        highest = signal.convolve(x, h, "same", method="direct")
    finally:
        fc.set_precision(level)
    assert_like(fast, ref, scale=10 * h.size ** 0.5, inputs=(x, h))
    assert not np.array_equal(fast, sums)
    np.testing.assert_array_equal(highest, sums)


def test_result_pool_recycles_dropped_results():
    """Direct results come from signal/_buffers: a dropped large result's memory serves
    the next one; a kept one (or a view of it) is never handed out again."""
    import gc

    from fastconv.signal import _buffers
    _buffers.clear()
    a = _buffers.empty((512, 1024), np.float64)
    assert type(a) is np.ndarray and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % _buffers.ALIGN == 0
    p = a.ctypes.data
    view = a[3:]
    del a
    gc.collect()
    b = _buffers.empty((512, 1024), np.float64)
    assert b.ctypes.data != p                      # the view still holds it
    del view
    gc.collect()
    c = _buffers.empty((512, 1024), np.float64)
    assert c.ctypes.data == p
    assert _buffers.empty((10,), np.float64).base is None
    del b, c
    assert _buffers._free_bytes <= _buffers.POOL_BYTES
    x = np.random.default_rng(0).standard_normal((600, 700))
    h = np.ones((3, 3))
    first = signal.convolve2d(x, h, "same")
    keep = first.copy()
    for _ in range(3):                             # later results never overwrite it
        signal.convolve2d(x + 1, h, "same")
    np.testing.assert_array_equal(first, keep)
    _buffers.clear()
