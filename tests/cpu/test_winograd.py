"""Winograd F(2x2,3x3) and F(4x4,3x3) (cpu/winograd.py): the Cook-Toom derivation, the
generated transforms, and the forward and input gradient against the naive oracle over
shapes, ragged edge tiles, padding modes, groups and dtypes, with the registry's tolerance."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import dispatch
from fastconv.cpu import winograd
import naive
from conftest import PADDING_MODES, PROPERTY, SHAPED_ALGORITHMS, assert_close

WINOGRAD = tuple(a for a in SHAPED_ALGORITHMS if a.startswith("winograd"))


def _rtol(algorithm, dtype):
    return dispatch.REGISTRY[algorithm].rtol["cpu"][np.dtype(dtype).name]


def _assert(got, want, algorithm):
    """Within the algorithm's documented tolerance, relative to max(1, max|want|)."""
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(np.asarray(got, np.float64) - want).max()) if want.size else 0.0
    assert got.shape == want.shape
    assert err <= _rtol(algorithm, got.dtype) * scale, (algorithm, got.dtype, err, scale)


# --- the algorithm -----------------------------------------------------------------------
@pytest.mark.parametrize("m,points", [(2, None), (4, None), (4, winograd.TEXTBOOK_POINTS[4]),
                                      (3, (0.0, 1.0, -1.0, 0.5)), (6, (0, 1, -1, 2, -2, .5, -.5))])
def test_cook_toom_reproduces_a_1d_correlation_in_float64(m, points):
    AT, G, BT = winograd.cook_toom(m, 3, winograd.POINTS[m] if points is None else points)
    assert AT.shape == (m, m + 2) and G.shape == (m + 2, 3) and BT.shape == (m + 2, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(20):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        want = np.array([g @ d[i:i + 3] for i in range(m)])
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), want, rtol=0, atol=1e-12)
    # as matrices: the bilinear form equals the correlation for every basis pair
    for i in range(m + 2):
        for k in range(3):
            d, g = np.eye(m + 2)[i], np.eye(3)[k]
            want = np.array([g @ d[j:j + 3] for j in range(m)])
            np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), want, atol=1e-12)


def test_cook_toom_rejects_bad_points():
    with pytest.raises(ValueError, match="distinct"):
        winograd.cook_toom(4, 3, (0.0, 1.0, 1.0, 2.0, -2.0))
    with pytest.raises(ValueError, match="5 distinct"):
        winograd.cook_toom(4, 3, (0.0, 1.0))


def test_generated_transforms_are_current():
    assert winograd.GENERATED.read_text() == winograd.generate_source(), (
        "regenerate: python -c 'from fastconv.cpu import winograd; winograd.write_generated()'")


# --- forward and input gradient ----------------------------------------------------------
CASES = [  # x_shape, w_shape, kwargs
    ((2, 3, 9, 11), (5, 3, 3, 3), {}),
    ((1, 4, 7, 6), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ((2, 8, 13, 17), (9, 8, 3, 3), dict(padding=(2, 0))),
    ((1, 2, 3, 3), (1, 2, 3, 3), {}),                         # one output, one ragged tile
    ((1, 1, 1, 1), (1, 1, 3, 3), dict(padding=1)),
    ((3, 6, 5, 30), (6, 1, 3, 3), dict(groups=6, padding="same")),     # depthwise
    ((1, 16, 20, 21), (10, 16, 3, 3), dict(padding=((0, 2), (1, 0)))),
    ((2, 5, 12, 60), (7, 5, 3, 3), dict(padding=1)),          # runs longer than a panel
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,w_shape,kw", CASES)
@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_forward_and_input_grad_match_the_oracle(algorithm, x_shape, w_shape, kw, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = fc.conv2d(x, w, b, algorithm=algorithm, **kw)
    assert y.dtype == dtype
    _assert(y, naive.conv(x, w, b, **kw), algorithm)
    go = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.grad.conv2d_input(x.shape, w, go, algorithm=algorithm, **kw)
    _assert(gx, naive.conv_input_grad(x.shape, w, go, **kw), algorithm)
    gw = fc.grad.conv2d_weight(x, w.shape, go, algorithm=algorithm, **kw)    # im2col's kernel
    _assert(gw, naive.conv_weight_grad(x, w.shape, go, **kw), algorithm)


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_conv3d_with_a_1x3x3_kernel_and_transpose(algorithm, rng):
    x = rng.standard_normal((2, 3, 4, 9, 7))
    w = rng.standard_normal((4, 3, 1, 3, 3))
    _assert(fc.conv3d(x, w, padding=(1, 1, 1), algorithm=algorithm),
            naive.conv(x, w, padding=(1, 1, 1)), algorithm)
    y = rng.standard_normal((2, 4, 6, 5))
    w2 = rng.standard_normal((4, 3, 3, 3))
    _assert(fc.conv_transpose2d(y, w2, algorithm=algorithm),
            naive.conv_transpose(y, w2), algorithm)


@st.composite
def winograd_problems(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    N = draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    mode = draw(st.sampled_from(PADDING_MODES))
    lim = {"reflect": (H - 1, W - 1), "circular": (H, W)}.get(mode, (3, 3))
    ph = draw(st.integers(0, max(0, min(2, lim[0]))))
    pw = draw(st.integers(0, max(0, min(2, lim[1]))))
    if H + 2 * ph < 3 or W + 2 * pw < 3:
        ph, pw, mode = 2, 2, "zeros"
    return dict(x_shape=(N, groups * cg, H, W), w_shape=(groups * og, cg, 3, 3),
                kw=dict(padding=(ph, pw), groups=groups, padding_mode=mode),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31)),
                algorithm=draw(st.sampled_from(WINOGRAD)))


@PROPERTY
@given(winograd_problems())
def test_sweep_against_the_oracle(p):
    rng = np.random.default_rng(p["seed"])
    x = rng.uniform(-1, 1, p["x_shape"]).astype(p["dtype"])
    w = rng.uniform(-1, 1, p["w_shape"]).astype(p["dtype"])
    b = rng.uniform(-1, 1, p["w_shape"][0]).astype(p["dtype"]) if p["bias"] else None
    kw, algo = p["kw"], p["algorithm"]
    y = fc.conv2d(x, w, b, algorithm=algo, **kw)
    _assert(y, naive.conv(x, w, b, **kw), algo)
    go = rng.uniform(-1, 1, y.shape).astype(p["dtype"])
    _assert(fc.grad.conv2d_input(x.shape, w, go, algorithm=algo, **kw),
            naive.conv_input_grad(x.shape, w, go, **kw), algo)


# --- constraints and the filter cache ----------------------------------------------------
@pytest.mark.parametrize("w_shape,kw,conv", [
    ((2, 3, 5, 5), {}, fc.conv2d), ((2, 3, 3, 3), dict(stride=2), fc.conv2d),
    ((2, 3, 3, 3), dict(dilation=2), fc.conv2d), ((2, 3, 3, 1), {}, fc.conv2d),
    ((2, 3, 3), {}, fc.conv1d), ((2, 3, 3, 3, 3), {}, fc.conv3d)])
@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_unsupported_shapes_raise_saying_what_winograd_supports(algorithm, w_shape, kw, conv):
    x = np.ones((1, 3) + (8,) * (len(w_shape) - 2))
    with pytest.raises(ValueError, match=r"winograd supports 3x3 kernels .* stride 1 and "
                                         r"dilation 1; got"):
        conv(x, np.ones(w_shape), algorithm=algorithm, **kw)
    with pytest.raises(ValueError, match="winograd supports"):
        fc.grad.conv2d_input((1, 3, 8, 8), np.ones((2, 3, 5, 5)), np.ones((1, 2, 4, 4)),
                             algorithm=algorithm)


def test_gpu_is_refused_with_a_clear_error():
    from fastconv import _validate
    from fastconv._arrays import proxy
    spec = _validate.conv_spec("t", 2, proxy((1, 2, 8, 8), np.float32),
                               proxy((2, 2, 3, 3), np.float32), None, 1, 1, 1, 1, "zeros")[0]
    with pytest.raises(ValueError, match="runs on cpu only"):
        dispatch.plan(spec, "forward", "winograd", "cuda")


def test_weight_changed_in_place_is_seen(rng):
    x = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    y1 = fc.conv2d(x, w, padding=1, algorithm="winograd")
    w[0, 0, 1, 1] += 1.0                          # what an optimiser step does
    y2 = fc.conv2d(x, w, padding=1, algorithm="winograd")
    _assert(y2, naive.conv(x, w, padding=1), "winograd")
    assert not np.allclose(y1, y2)
    # the transpose (input gradient) of the same weight is cached separately
    go = rng.standard_normal(y2.shape).astype(np.float32)
    _assert(fc.grad.conv2d_input(x.shape, w, go, padding=1, algorithm="winograd"),
            naive.conv_input_grad(x.shape, w, go, padding=1), "winograd")


def test_nan_stays_within_the_tiles_that_read_it_and_auto_avoids_spreading(rng):
    x = rng.standard_normal((1, 2, 12, 12)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    x[0, 1, 5, 6] = np.nan
    want = fc.conv2d(x, w, padding=1, algorithm="direct")
    got = fc.conv2d(x, w, padding=1, algorithm="winograd")
    assert np.isnan(got[np.isnan(want)]).all()            # never hides one
    auto = fc.conv2d(x, w, padding=1)                      # auto: placement as direct
    np.testing.assert_array_equal(np.isnan(auto), np.isnan(want))
