"""Reliability of the FFT algorithm (issue 13): the same result as the direct sum on
non-finite data (NaN/inf in the same places, with the same signs) and on magnitudes near
each dtype's limits (no overflow where the direct sum is finite, no digits lost to
subnormals), for the forward and both gradients.

Oracle: ``algorithm="direct"`` (the definition) and, for finite data, a float64 sum."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis import settings, HealthCheck

import fastconv as fc
from fastconv import signal
from fastconv.cpu import fft as cpu_fft

#: few, small examples (numba compiles once per dtype); no example database in the tree
PROPERTY = settings(max_examples=40, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
#: FFT error relative to the largest finite magnitude of the result
FFT_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
NONFINITE = (np.nan, np.inf, -np.inf)


# --- helpers ----------------------------------------------------------------------------
def assert_same_as_direct(got, want, rtol, atol=0.0, scale=0.0):
    """NaN where ``want`` has NaN, +inf/-inf where it has them, finite values within
    ``rtol`` of the largest finite |want| or ``scale`` if larger (plus ``atol``)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    for name, pred in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        diff = np.flatnonzero(pred(got) != pred(want))
        assert diff.size == 0, (f"{name} placement differs at {diff.size} outputs, first flat "
                                f"index {diff[0]}: got {got.ravel()[diff[0]]!r}, "
                                f"want {want.ravel()[diff[0]]!r}")
    fin = np.isfinite(want)
    if fin.any():
        g, wv = got[fin].astype(np.float64), want[fin].astype(np.float64)
        scale = max(scale, float(np.abs(wv).max()))
        err = float(np.abs(g - wv).max())
        assert err <= rtol * scale + atol, (f"max error {err:.3g} > {rtol:g} * {scale:.3g} "
                                            f"+ {atol:.3g}")


@st.composite
def conv_problems(draw):
    """A small 2-D convolution: (x, w, bias, grad_output, kwargs), float32 or float64."""
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    groups = draw(st.integers(1, 2))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    ke = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
    hw = [draw(st.integers(max(1, e - 2 * pp), e + 7)) for e, pp in zip(ke, p)]
    out = [(h + 2 * pp - e) // ss + 1 for h, pp, e, ss in zip(hw, p, ke, s)]
    assume(all(o >= 1 for o in out))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.standard_normal((n, cg * groups, *hw)).astype(dtype)
    w = rng.standard_normal((og * groups, cg, *k)).astype(dtype)
    b = rng.standard_normal(og * groups).astype(dtype)
    gy = rng.standard_normal((n, og * groups, *out)).astype(dtype)
    kw = dict(stride=s, padding=p, dilation=d, groups=groups)
    return x, w, b, gy, kw


def sprinkle(draw, a, max_count):
    """``a`` with up to ``max_count`` entries set to NaN, +inf or -inf (some may be zeros)."""
    a = a.copy()
    for _ in range(draw(st.integers(0, max_count))):
        i = draw(st.integers(0, a.size - 1))
        a.reshape(-1)[i] = draw(st.sampled_from(NONFINITE + (0.0,)))
    return a


def three_ops(x, w, b, gy, kw, algorithm):
    return (fc.conv2d(x, w, b, algorithm=algorithm, **kw),
            fc.grad.conv2d_input(x.shape, w, gy, algorithm=algorithm, **kw),
            fc.grad.conv2d_weight(x, w.shape, gy, algorithm=algorithm, **kw))


# --- (A1) NaN / inf ---------------------------------------------------------------------
@PROPERTY
@given(conv_problems(), st.data())
def test_nonfinite_lands_where_direct_puts_it(problem, data):
    x, w, b, gy, kw = problem
    x = sprinkle(data.draw, x, 3)
    w = sprinkle(data.draw, w, 2)
    gy = sprinkle(data.draw, gy, 3)
    if data.draw(st.booleans(), label="bias inf"):
        b = b.copy()
        b[0] = np.inf
    rtol = FFT_RTOL[x.dtype]
    with np.errstate(all="ignore"):
        for got, want in zip(three_ops(x, w, b, gy, kw, "fft"),
                             three_ops(x, w, b, gy, kw, "direct")):
            assert_same_as_direct(got, want, rtol, atol=rtol)    # unit-scale data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_typical_fft_shape(dtype):
    # one NaN, one inf (window meets a zero weight tap: NaN), one -inf in a larger problem
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 70, 64)).astype(dtype)
    w = rng.standard_normal((4, 3, 9, 7)).astype(dtype)
    w[1, 2, 3, 3] = 0
    x[0, 1, 5, 60] = np.nan
    x[1, 2, 33, 20] = np.inf
    x[1, 0, 69, 0] = -np.inf
    for kw in ({}, dict(stride=2, padding=3), dict(dilation=(2, 3), padding=(1, 0))):
        got = fc.conv2d(x, w, algorithm="fft", **kw)
        want = fc.conv2d(x, w, algorithm="direct", **kw)
        assert_same_as_direct(got, want, FFT_RTOL[np.dtype(dtype)])
        assert np.isfinite(want).mean() > 0.8          # the defect: everything was NaN


@pytest.mark.parametrize("where", ["weight", "input", "both", "all"])
def test_nonfinite_weight_channels_and_dense_nans(where):
    # a non-finite weight makes its whole output channel non-finite (direct for that
    # channel); many NaNs make the whole call direct: both must still agree exactly
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 30, 30))
    w = rng.standard_normal((6, 2, 5, 5))
    if where in ("weight", "both"):
        w[4, 1, 2, 2] = -np.inf
        w[1, 0, 0, 0] = np.nan
    if where in ("input", "both"):
        x[1, 3, 10, 10] = np.inf
    if where == "all":
        x[:, :, ::3, ::4] = np.nan
    got = fc.conv2d(x, w, algorithm="fft", groups=2, padding=2)
    want = fc.conv2d(x, w, algorithm="direct", groups=2, padding=2)
    assert_same_as_direct(got, want, 1e-10)


def test_unread_nonfinite_input_does_not_spread():
    # the NaN sits in a row the strided windows never read
    x = np.ones((1, 1, 10, 10))
    x[0, 0, 9, 4] = np.nan
    got = fc.conv2d(x, np.ones((1, 1, 3, 3)), stride=3, algorithm="fft")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, 9.0)


def test_engine_kernel_keeps_a_nan_local():
    xp = np.ones((1, 1, 1, 8, 8))
    xp[0, 0, 0, 0, 0] = np.nan
    w = np.ones((1, 1, 1, 2, 2))
    out = np.empty((1, 1, 1, 7, 7))
    cpu_fft.fft_fwd(xp, w, np.zeros(1), (1, 1, 1), (1, 1, 1), 1, out)
    assert np.isnan(out).sum() == 1


def test_signal_fft_keeps_scipy_nan_spreading():
    import scipy.signal as ss
    a = np.arange(40.0)
    a[7] = np.nan
    k = np.ones(5)
    with np.errstate(all="ignore"):
        got = signal.fftconvolve(a, k)
    want = ss.fftconvolve(a, k)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


# --- (A2) magnitudes near the dtype's limits --------------------------------------------
#: (dtype, scale of x, scale of w): products near the largest/smallest normal numbers
MAGNITUDES = [(np.float32, 1e35, 1.0), (np.float32, 1.0, 1e35), (np.float32, 1e20, 1e16),
              (np.float32, 3e-30, 1e-7), (np.float32, 1e-38, 1e10), (np.float32, 1e-20, 1e-18),
              (np.float32, 1e-42, 1e12),         # x subnormal: ~3 significant bits, exact data
              (np.float64, 1e300, 1.0), (np.float64, 1e160, 1e145), (np.float64, 1e-300, 1e-5),
              (np.float64, 1e-310, 1e5), (np.float64, 1e-320, 1e30)]


def magnitude_problem(dtype, sx, sw, rng):
    x = (rng.standard_normal((2, 3, 40, 36)) * sx).astype(dtype)
    w = (rng.standard_normal((4, 3, 9, 9)) * sw).astype(dtype)
    return x, w


def float64_sum(x, w, sx, sw, **kw):
    # the exact-ish reference: the direct sum in float64 on unit-scale data, scaled back
    return fc.conv2d(x.astype(np.float64) / sx, w.astype(np.float64) / sw, algorithm="direct",
                     **kw) * (sx * sw)


def tolerance(dtype, ref, n_terms):
    """rtol relative to the largest |ref| plus the subnormal rounding of n_terms products."""
    fi = np.finfo(dtype)
    rtol = FFT_RTOL[np.dtype(dtype)]
    return rtol, n_terms * float(fi.smallest_subnormal) * 4


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("dtype, sx, sw", MAGNITUDES)
def test_extreme_magnitudes_forward(algorithm, dtype, sx, sw):
    rng = np.random.default_rng(3)
    x, w = magnitude_problem(dtype, sx, sw, rng)
    with np.errstate(all="ignore"):
        want = fc.conv2d(x, w, algorithm="direct", padding=2)
        got = fc.conv2d(x, w, algorithm=algorithm, padding=2)
        ref = float64_sum(x, w, sx, sw, padding=2)
    assume_finite = np.isfinite(want)
    assert assume_finite.all(), "the problem must be finite for the direct sum"
    assert np.isfinite(got).all(), f"{algorithm} overflowed where the direct sum is finite"
    rtol, atol = tolerance(dtype, ref, 3 * 81)
    assert_same_as_direct(got, want, rtol, atol)
    if np.isfinite(ref).all():
        assert_same_as_direct(got, ref.astype(dtype), rtol, atol)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("dtype, sx, sw", MAGNITUDES)
def test_extreme_magnitudes_gradients(algorithm, dtype, sx, sw):
    rng = np.random.default_rng(4)
    x, w = magnitude_problem(dtype, sx, sw, rng)
    # grad_output of unit scale: the input gradient has w's scale, the weight gradient x's
    gy = rng.standard_normal((2, 4, 34, 30)).astype(dtype)
    kw = dict(stride=1, padding=1)
    with np.errstate(all="ignore"):
        for op, args in ((fc.grad.conv2d_input, (x.shape, w, gy)),
                         (fc.grad.conv2d_weight, (x, w.shape, gy))):
            want = op(*args, algorithm="direct", **kw)
            got = op(*args, algorithm=algorithm, **kw)
            assert np.isfinite(want).all()
            assert np.isfinite(got).all(), f"{op.__name__} {algorithm} overflowed"
            rtol, atol = tolerance(dtype, want, 2 * 34 * 30)
            assert_same_as_direct(got, want, rtol, atol)


def test_overflow_where_direct_overflows():
    # the true sum is beyond float32: every algorithm says inf, with the sign of the sum
    x = np.full((1, 1, 8, 8), 3e38, np.float32)
    w = np.full((1, 1, 3, 3), 2.0, np.float32)
    for algorithm in ("direct", "fft"):
        with np.errstate(all="ignore"):
            got = fc.conv2d(x, -w, algorithm=algorithm)
        assert np.isneginf(got).all(), algorithm


@PROPERTY
@given(conv_problems(), st.sampled_from([-120, -60, -30, 30, 60, 100]),
       st.sampled_from([-20, 0, 20]))
def test_power_of_two_scaling_is_exact_in_spirit(problem, ex, ew):
    # scaling the operands by powers of two scales the FFT result by the same power
    # (up to the FFT's rounding), whatever the magnitude, in both dtypes
    x, w, b, gy, kw = problem
    dt = x.dtype
    lim = np.finfo(dt).maxexp
    ex, ew = ex * lim // 128, ew * lim // 128
    xs, ws = np.ldexp(x, ex), np.ldexp(w, ew)
    with np.errstate(all="ignore"):
        want = fc.conv2d(xs, ws, algorithm="direct", **kw)
        got = fc.conv2d(xs, ws, algorithm="fft", **kw)
    assume(np.isfinite(want).all())
    assert np.isfinite(got).all()
    base = fc.conv2d(x, w, algorithm="direct", **kw)
    rtol, atol = FFT_RTOL[dt] * 10, float(np.finfo(dt).smallest_subnormal) * 4 * w[0].size
    # an FFT's error scales with its operands, not with the (possibly cancelling) result
    scale = float(np.abs(xs).max()) * float(np.abs(ws).max())
    assert_same_as_direct(got, want, rtol, atol, scale)
    if np.isfinite(np.ldexp(base, ex + ew)).all() and np.abs(want).max() > np.finfo(dt).tiny:
        assert_same_as_direct(np.ldexp(got, -(ex + ew)), base, rtol * 10, 0.0,
                              float(np.abs(x).max() * np.abs(w).max()))


def test_nn_conv2d_layer_fft_keeps_nan_local():
    # the layer runs the same engine: forward and both gradients agree with direct
    from fastconv import nn
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)
    x[1, 2, 4, 15] = np.nan
    gy = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    fft_layer, direct_layer = (nn.Conv2d(3, 4, 5, algorithm=a) for a in ("fft", "direct"))
    direct_layer.load_state_dict(fft_layer.state_dict())
    got, want = [], []
    for layer, res in ((fft_layer, got), (direct_layer, want)):
        res += [layer(x), layer.backward(gy), layer.weight.grad, layer.bias.grad]
    assert np.isfinite(got[0]).mean() > 0.8
    for g, w in zip(got, want):
        assert_same_as_direct(g, w, 1e-4, 1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, cpu_fft.ALL_FINITE_PARALLEL + 17])
def test_all_finite_finds_every_nonfinite_value(dtype, n):
    """The planner's finiteness check (one parallel pass on large arrays): a single NaN,
    +inf or -inf anywhere (first, last, chunk edges) is found; the largest finite values
    are finite; non-contiguous views take the fallback."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(dtype)
    assert cpu_fft.all_finite(a)
    for pos in {0, n - 1, n // 16, n // 16 - 1, n // 2}:
        for val in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[pos] = val
            assert not cpu_fft.all_finite(b), (pos, val)
            assert not cpu_fft.all_finite(b[::-1])
    a[n // 3] = np.finfo(dtype).max
    a[n // 5] = -np.finfo(dtype).max
    assert cpu_fft.all_finite(a)
