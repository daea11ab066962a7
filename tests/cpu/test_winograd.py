"""Winograd F(2x2,3x3) and F(4x4,3x3) (cpu/winograd.py): the Cook-Toom derivation, the
generated transforms, and the forward and both gradients against the naive oracle over
shapes, ragged edge tiles, padding modes, groups and dtypes, with the registry's tolerance."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
from fastconv import dispatch
from fastconv.cpu import winograd
import naive
from conftest import PADDING_MODES, PROPERTY, SHAPED_ALGORITHMS, run_on_emulated_avx2

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


# --- the vector transforms of tile runs (cpu/_wino_ir.py) ----------------------------------
LANES = {np.float32: winograd.VECTOR_BYTES // 4, np.float64: winograd.VECTOR_BYTES // 8}


def _run_lengths(dtype):
    L = LANES[dtype]           # around the block edges, up to a whole panel
    return sorted({1, 2, L - 1, L, L + 1, 2 * L - 1, 2 * L + 1, winograd.PANEL - 1,
                   winograd.PANEL} & set(range(1, winograd.PANEL + 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
def test_vector_input_runs_match_a_float64_transform(m, dtype, rng):
    """Every tile of a run gets B^T d B (float64 reference), and nothing outside the run's
    columns of V changes (the last block's stores are masked); the run reads up to the
    last element of its array (masked loads)."""
    AT, _, BT = winograd.matrices(m)
    alpha = m + 2
    for n in _run_lengths(dtype):
        Wx = m * n + 2 + 3
        xf = rng.standard_normal((alpha - 1) * Wx + m * n + 2).astype(dtype)   # ends at the run
        xs, vb = winograd.PANEL + 7, 3
        V = np.full(alpha * alpha * xs + 8, 7.0, dtype)
        winograd._in_run(m, V, vb, xs, xf, 0, Wx, n)
        x2 = np.lib.stride_tricks.as_strided(xf, (alpha, Wx), (Wx * xf.itemsize, xf.itemsize))
        for t in range(n):
            d = x2[:, m * t:m * t + alpha].astype(np.float64)
            want = (BT @ d @ BT.T).reshape(-1)
            got = V[vb + t + xs * np.arange(alpha * alpha)]
            assert np.abs(got - want).max() <= 50 * np.finfo(dtype).eps * max(1, np.abs(want).max())
        mask = np.ones(V.size, bool)
        mask[(vb + np.arange(n)[None, :] + xs * np.arange(alpha * alpha)[:, None]).ravel()] = False
        assert (V[mask] == 7.0).all(), n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
def test_vector_output_runs_match_a_float64_transform(m, dtype, rng):
    """Every tile of a run gets A^T M A + bias in its m x m output block; the output's other
    elements (beside the run, between its rows) keep their values."""
    AT, _, _ = winograd.matrices(m)
    alpha = m + 2
    for n in _run_lengths(dtype):
        xs, mb = winograd.PANEL + 5, 2
        M = rng.standard_normal(mb + n + (alpha * alpha - 1) * xs).astype(dtype)  # ends at the run
        Wy, yb = m * n + 3, 1
        y = np.full(yb + (m - 1) * Wy + m * n + 0, 9.0, dtype)       # ends at the run
        winograd._out_run(m, y, yb, Wy, M, mb, xs, n, dtype(0.25))
        written = np.zeros(y.size, bool)
        for t in range(n):
            mt = M[mb + t + xs * np.arange(alpha * alpha)].astype(np.float64).reshape(alpha, alpha)
            want = AT @ mt @ AT.T + 0.25
            rows = yb + np.arange(m)[:, None] * Wy + m * t + np.arange(m)[None, :]
            got = y[rows]
            assert np.abs(got - want).max() <= 50 * np.finfo(dtype).eps * max(1, np.abs(want).max())
            written[rows.ravel()] = True
        assert (y[~written] == 9.0).all(), n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,extent", [((2, 5, 1, 7, 9), (9, 12)), ((1, 37, 2, 5, 33), (5, 33)),
                                          ((3, 16, 1, 4, 16), (6, 18)), ((1, 1, 1, 1, 1), (3, 17))])
def test_channels_last_matches_numpy(shape, extent, dtype, rng):
    """The weight gradient's channels-last copy (register-transposed blocks, masked at
    every edge): numpy's transpose, zero-extended, nothing written outside."""
    src = rng.standard_normal(shape).astype(dtype)
    dst = np.full((shape[0], shape[2]) + extent + (shape[1],), 5.0, dtype)
    winograd._channels_last(dst, src)
    want = np.zeros_like(dst)
    want[:, :, :shape[3], :shape[4], :] = src.transpose(0, 2, 3, 4, 1)
    np.testing.assert_array_equal(dst, want)


@st.composite
def wide_problems(draw):
    """Planes wide enough for several vector blocks per tile row, output channels around
    the GEMM tile's rows (1 to 2 tiles + 1)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return dict(x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(3, 9)),
                         draw(st.integers(60, 150))),
                O=draw(st.integers(1, 2 * winograd.GEMM_ROWS + 1)),
                padding=draw(st.sampled_from([0, 1, 2, (1, 0), (0, 2)])), dtype=dtype,
                seed=draw(st.integers(0, 2 ** 31)), algorithm=draw(st.sampled_from(WINOGRAD)))


@PROPERTY
@given(wide_problems())
def test_wide_planes_against_the_oracle(p):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal(p["x_shape"]).astype(p["dtype"])
    w = rng.standard_normal((p["O"], x.shape[1], 3, 3)).astype(p["dtype"])
    b = rng.standard_normal(p["O"]).astype(p["dtype"])
    kw = dict(padding=p["padding"])
    y = fc.conv2d(x, w, b, algorithm=p["algorithm"], **kw)
    _assert(y, naive.conv(x, w, b, **kw), p["algorithm"])
    go = rng.standard_normal(y.shape).astype(p["dtype"])
    _assert(fc.grad.conv2d_input(x.shape, w, go, algorithm=p["algorithm"], **kw),
            naive.conv_input_grad(x.shape, w, go, **kw), p["algorithm"])
    _assert(fc.grad.conv2d_weight(x, w.shape, go, algorithm=p["algorithm"], **kw),
            naive.conv_weight_grad(x, w.shape, go, **kw), p["algorithm"])


@st.composite
def channel_problems(draw):
    """Channel counts around the weight gradient's channel vectors and GEMM tiles (lanes
    L = 8 or 16, GEMM_ROWS = 4 or 8), groups, ragged planes."""
    groups = draw(st.sampled_from([1, 1, 2]))
    return dict(N=draw(st.integers(1, 2)), Cg=draw(st.integers(1, 40)), Og=draw(st.integers(1, 40)),
                H=draw(st.integers(3, 11)), W=draw(st.integers(3, 13)), groups=groups,
                padding=draw(st.sampled_from([0, 1, (2, 0)])),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                seed=draw(st.integers(0, 2 ** 31)), algorithm=draw(st.sampled_from(WINOGRAD)))


@PROPERTY
@given(channel_problems())
def test_weight_grad_channel_sweep_against_the_oracle(p):
    rng = np.random.default_rng(p["seed"])
    g = p["groups"]
    x = rng.standard_normal((p["N"], g * p["Cg"], p["H"], p["W"])).astype(p["dtype"])
    w_shape = (g * p["Og"], p["Cg"], 3, 3)
    kw = dict(padding=p["padding"], groups=g)
    go = rng.standard_normal(naive.conv(x, np.ones(w_shape), None, **kw).shape).astype(p["dtype"])
    _assert(fc.grad.conv2d_weight(x, w_shape, go, algorithm=p["algorithm"], **kw),
            naive.conv_weight_grad(x, w_shape, go, **kw), p["algorithm"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_weight_grad_in_output_channel_chunks(algorithm, dtype, monkeypatch, rng):
    """When dU's rows for all output channels exceed WGRAD_DU_BYTES, tasks take chunks of
    output channels (the last one short); the sum is the same."""
    monkeypatch.setattr(winograd, "WGRAD_DU_BYTES", 1)         # chunks of one vector
    x = rng.standard_normal((2, 6, 9, 10)).astype(dtype)
    w_shape = (2 * 19, 3, 3, 3)
    go = rng.standard_normal((2, 38, 9, 10)).astype(dtype)
    kw = dict(padding=1, groups=2)
    _assert(fc.grad.conv2d_weight(x, w_shape, go, algorithm=algorithm, **kw),
            naive.conv_weight_grad(x, w_shape, go, **kw), algorithm)


def test_avx2_host_in_a_subprocess(tmp_path):
    """A host without AVX-512 (emulated: LLVM told the CPU has none) gets 256-bit
    transforms and the 4-row GEMM tile; forward and both gradients stay right."""
    run_on_emulated_avx2("""
        import fastconv as fc, naive
        from fastconv.cpu import winograd
        assert winograd.GEMM_ROWS == 4 and winograd.VECTOR_BYTES == 32
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            x = rng.standard_normal((2, 3, 7, 75)).astype(dt)
            w = rng.standard_normal((6, 3, 3, 3)).astype(dt)
            for algo in ("winograd", "winograd_f2"):
                got = fc.conv2d(x, w, padding=1, algorithm=algo)
                want = naive.conv(x, w, None, padding=1)
                assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), algo
                gy = rng.standard_normal(got.shape).astype(dt)
                got = fc.grad.conv2d_input(x.shape, w, gy, padding=1, algorithm=algo)
                want = naive.conv_input_grad(x.shape, w, gy, padding=1)
                assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), algo
                got = fc.grad.conv2d_weight(x, w.shape, gy, padding=1, algorithm=algo)
                want = naive.conv_weight_grad(x, w.shape, gy, padding=1)
                assert np.abs(got - want).max() <= 1e-4 * max(1, np.abs(want).max()), algo
        print("ok")
    """, tmp_path)


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
    gw = fc.grad.conv2d_weight(x, w.shape, go, algorithm=algorithm, **kw)
    _assert(gw, naive.conv_weight_grad(x, w.shape, go, **kw), algorithm)


@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_conv3d_with_a_1x3x3_kernel_and_transpose(algorithm, rng):
    x = rng.standard_normal((2, 3, 4, 9, 7))
    w = rng.standard_normal((4, 3, 1, 3, 3))
    _assert(fc.conv3d(x, w, padding=(1, 1, 1), algorithm=algorithm),
            naive.conv(x, w, padding=(1, 1, 1)), algorithm)
    go = rng.standard_normal((2, 4, 6, 9, 7))
    _assert(fc.grad.conv3d_input(x.shape, w, go, padding=(1, 1, 1), algorithm=algorithm),
            naive.conv_input_grad(x.shape, w, go, padding=(1, 1, 1)), algorithm)
    _assert(fc.grad.conv3d_weight(x, w.shape, go, padding=(1, 1, 1), algorithm=algorithm),
            naive.conv_weight_grad(x, w.shape, go, padding=(1, 1, 1)), algorithm)
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
    _assert(fc.grad.conv2d_weight(x, w.shape, go, algorithm=algo, **kw),
            naive.conv_weight_grad(x, w.shape, go, **kw), algo)


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


@pytest.mark.parametrize("padding", [0, 1, 2, 3, ((0, 2), (2, 1)), ((3, 0), (1, 4))])
@pytest.mark.parametrize("algorithm", WINOGRAD)
def test_input_grad_on_the_unpadded_window(algorithm, padding, rng):
    """With zero padding the input gradient is computed on the input's window of the
    padded gradient only (bwd_input_window); a window starting beyond the kernel's reach
    (padding before > 2) gives None there and the engine crops the full gradient. Both
    against the oracle."""
    from fastconv.cpu import engine
    x = rng.standard_normal((2, 3, 11, 13))
    w = rng.standard_normal((5, 3, 3, 3))
    go = rng.standard_normal(naive.conv(x, w, None, padding=padding).shape)
    want = naive.conv_input_grad(x.shape, w, go, padding=padding)
    _assert(fc.grad.conv2d_input(x.shape, w, go, padding=padding, algorithm=algorithm),
            want, algorithm)
    pads = [(padding, padding)] * 2 if isinstance(padding, int) else list(padding)
    window = ((0, 1),) + tuple((b, n) for (b, _), n in zip(pads, x.shape[2:]))
    padded = (1,) + tuple(n + b + a for (b, a), n in zip(pads, x.shape[2:]))
    m = 4 if algorithm == "winograd" else 2
    got = winograd.bwd_input_window(m, engine.transpose_weight, go[:, :, None], w[:, :, None],
                                    padded, window, (1, 1, 1), (1, 1, 1), 1)
    if max(b for b, _ in pads) > 2:          # the window starts beyond the kernel's reach
        assert got is None
    else:
        _assert(got[:, :, 0], want, algorithm)
