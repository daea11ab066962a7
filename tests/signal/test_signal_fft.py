"""fastconv.signal's FFT method for zero padding (_core._fft_zero_padded: no padded copy,
transform lengths ``n + max(before, after)``, inverse transforms skipping unneeded rows)
against scipy.signal: every mode, kernels longer than the input, 1-D to 3-D,
fftconvolve's ``axes``, real and complex, float32 and float64."""
import warnings

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import signal
from fastconv.signal import _core as core

from test_signal import assert_like, make

DTYPES = ["float32", "float64", "complex64", "complex128", "int16"]


@st.composite
def fft_problems(draw):
    nd = draw(st.integers(1, 3))
    s1 = tuple(draw(st.sampled_from([1, 2, 3, 7, 16, 31, 40])) for _ in range(nd))
    s2 = tuple(draw(st.sampled_from([1, 2, 3, 5, 8, 33, 45])) for _ in range(nd))
    if np.prod(s1) * np.prod(s2) > 2e6:
        s2 = tuple(min(k, 5) for k in s2)
    d1, d2 = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return make(rng, s1, d1), make(rng, s2, d2)


@settings(max_examples=80, deadline=None, database=None)
@given(fft_problems(), st.sampled_from(["full", "same", "valid"]),
       st.sampled_from(["convolve", "correlate", "fftconvolve"]))
def test_sweep_fft_zero_padded(problem, mode, name):
    """Kernels shorter and longer than the input on each axis (where the transform is
    shorter than the kernel, its cropped taps only meet zeros)."""
    a, b = problem
    if name == "fftconvolve":
        fn = lambda m, x, y: getattr(m, name)(x, y, mode)              # noqa: E731
    else:
        fn = lambda m, x, y: getattr(m, name)(x, y, mode, method="fft")  # noqa: E731
    try:
        ref = fn(ss, a, b)
    except ValueError:
        with pytest.raises(ValueError):
            fn(signal, a, b)
        return
    assert_like(fn(signal, a, b), ref, scale=10 * max(1, b.size) ** 0.5, inputs=(a, b))


@settings(max_examples=30, deadline=None, database=None)
@given(st.sampled_from([(0,), (1,), (0, 2), (2,), (1, 2)]),
       st.sampled_from(["full", "same", "valid"]), st.sampled_from(DTYPES[:4]),
       st.integers(0, 2 ** 16))
def test_fft_axes(axes, mode, dtype, seed):
    """fftconvolve over some axes (the others batch or broadcast) on the lean path."""
    rng = np.random.default_rng(seed)
    sa = (6, 5, 33)
    sb = tuple((4, 3, 9)[i] if i in axes else (1 if i == 1 else sa[i]) for i in range(3))
    a, b = make(rng, sa, dtype), make(rng, sb, dtype)
    assert_like(signal.fftconvolve(a, b, mode, axes), ss.fftconvolve(a, b, mode, axes=axes),
                scale=10, inputs=(a, b))


def test_fft_lengths_are_shorter_for_same():
    """'same' needs n + max(before, after), not n + before + after; 'full' needs all."""
    plan = core.make_plan((1024, 1024), (63, 63), [core.window("same", 1024, 63)] * 2)
    assert core.fft_lengths(plan, False) == (1080, 1080)
    plan = core.make_plan((100,), (11,), [core.window("full", 100, 11)])
    assert core.fft_lengths(plan, False)[0] >= 110


def test_large_image_fft_and_nonfinite(rng):
    """The benchmark's shape on the FFT path; a NaN makes 'auto' fall back to direct
    (kept local) and an explicit 'fft' warn."""
    x = rng.standard_normal((300, 1024))
    h = rng.standard_normal((31, 33))
    assert_like(signal.convolve(x, h, "same", method="fft"),
                ss.fftconvolve(x, h, "same"), scale=40)
    assert signal.choose_conv_method(x, h, "same") == "fft"
    for bad in (np.nan, np.inf, -np.inf):       # every FFT output non-finite: 3 samples tell
        x[5, 7] = bad
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = signal.convolve2d(x, h, "same")
        ref = ss.convolve2d(x, h, "same")
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
        assert np.isfinite(out).sum() > 0.9 * out.size
        with pytest.warns(RuntimeWarning):
            signal.convolve(x, h, "same", method="fft")


def test_inplace_path_matches_and_never_returns_scratch(rng):
    """The scratch-array variant (scipy's pocketfft with output arrays) against the
    plain scipy.fft one, including 'full' mode where the crop can be whole rows: a
    result must survive the next call."""
    if core._pocketfft is None:
        pytest.skip("scipy.fft._pocketfft not available")
    for shp, k, mode in [((40, 61), (5, 4), "full"), ((64,), (17,), "full"),
                         ((30, 33), (7, 9), "same"), ((12, 9, 10), (3, 3, 4), "valid")]:
        x, h = rng.standard_normal(shp), rng.standard_normal(k)
        first = signal.convolve(x, h, mode, method="fft")
        keep = first.copy()
        signal.convolve(rng.standard_normal(shp), h, mode, method="fft")
        np.testing.assert_array_equal(first, keep)
        saved = core._pocketfft
        core._pocketfft = None
        try:
            plain = signal.convolve(x, h, mode, method="fft")
        finally:
            core._pocketfft = saved
        np.testing.assert_allclose(first, plain, rtol=1e-12, atol=1e-12)
