"""Gradients: fastconv.grad.conv{1,2,3}d_input/_weight and conv_transpose2d.

Oracles: the pinned worked example, tests/naive.py, finite differences of the forward,
the adjoint identity <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>, and PyTorch."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc
import naive
from conftest import (ALGORITHMS, CONV, PADDING_MODES, PROPERTY, RTOL, assert_close, conv_configs,
                      conv_kwargs, make_arrays)

GRAD_INPUT = {1: fc.grad.conv1d_input, 2: fc.grad.conv2d_input, 3: fc.grad.conv3d_input}
GRAD_WEIGHT = {1: fc.grad.conv1d_weight, 2: fc.grad.conv2d_weight, 3: fc.grad.conv3d_weight}

# the pinned worked example
X = np.arange(1.0, 10.0).reshape(3, 3)
K = np.array([[1.0, 0.0], [0.0, 1.0]])
GY = np.array([[1.0, 2.0], [3.0, 4.0]])
DK = [[37.0, 47.0], [67.0, 77.0]]
DX = [[1.0, 2.0, 0.0], [3.0, 5.0, 2.0], [0.0, 3.0, 4.0]]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pinned_worked_example(algorithm, dtype):
    x, k, gy = (a.astype(dtype)[None, None] for a in (X, K, GY))
    gk = fc.grad.conv2d_weight(x, (1, 1, 2, 2), gy, algorithm=algorithm)
    gx = fc.grad.conv2d_input((1, 1, 3, 3), k, gy, algorithm=algorithm)
    assert gk.shape == (1, 1, 2, 2) and gx.shape == (1, 1, 3, 3)
    assert gk.dtype == dtype and gx.dtype == dtype
    assert_close(gk[0, 0], DK, dtype)
    assert_close(gx[0, 0], DX, dtype)
    # the transposed convolution is the same adjoint
    assert_close(fc.conv_transpose2d(gy, k, algorithm=algorithm)[0, 0], DX, dtype)
    # unbatched
    assert_close(fc.grad.conv2d_input((1, 3, 3), k, gy[0], algorithm=algorithm)[0], DX, dtype)
    assert_close(fc.grad.conv2d_weight(x[0], (1, 1, 2, 2), gy[0], algorithm=algorithm)[0, 0], DK,
                 dtype)
    # and the naive reference agrees
    assert_close(naive.conv_weight_grad(x, (1, 1, 2, 2), gy)[0, 0], DK)
    assert_close(naive.conv_input_grad((1, 1, 3, 3), k, gy)[0, 0], DX)


def test_pinned_example_vs_torch():
    torch = pytest.importorskip("torch")
    gx = torch.nn.grad.conv2d_input((1, 1, 3, 3), torch.tensor(K)[None, None], torch.tensor(GY)[None, None])
    gk = torch.nn.grad.conv2d_weight(torch.tensor(X)[None, None], (1, 1, 2, 2), torch.tensor(GY)[None, None])
    assert_close(gx.numpy()[0, 0], DX)
    assert_close(gk.numpy()[0, 0], DK)


# --- property tests against the naive gradients ---------------------------------------------------
def _grad_output(cfg, x, w):
    shape = naive.conv(x, w, None, **conv_kwargs(cfg)).shape
    rng = np.random.default_rng(cfg["seed"] + 1)
    return rng.uniform(-1, 1, shape).astype(cfg["dtype"])


def _grad_scale(want, cfg, w_or_x, gy):
    # gradients sum many products: compare relative to the sum of their magnitudes
    return max(1.0, float(np.abs(want).max()), float(np.abs(gy).sum() * np.abs(w_or_x).max()) / 10)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_input_grad_matches_naive(nd, algorithm, data):
    cfg = data.draw(conv_configs(nd))
    x, w, _ = make_arrays(cfg)
    gy = _grad_output(cfg, x, w)
    want = naive.conv_input_grad(x.shape, w, gy, **conv_kwargs(cfg))
    got = GRAD_INPUT[nd](x.shape, w, gy, **conv_kwargs(cfg), algorithm=algorithm)
    assert got.shape == x.shape and got.dtype == cfg["dtype"]
    assert_close(got, want, cfg["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_weight_grad_matches_naive(nd, algorithm, data):
    cfg = data.draw(conv_configs(nd))
    x, w, _ = make_arrays(cfg)
    gy = _grad_output(cfg, x, w)
    want = naive.conv_weight_grad(x, w.shape, gy, **conv_kwargs(cfg))
    got = GRAD_WEIGHT[nd](x, w.shape, gy, **conv_kwargs(cfg), algorithm=algorithm)
    assert got.shape == w.shape and got.dtype == cfg["dtype"]
    assert_close(got, want, cfg["dtype"])


def test_naive_grads_match_torch_autograd(rng):
    """The naive gradients themselves, against torch autograd (every padding mode)."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    for mode in PADDING_MODES:
        m = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                            padding_mode=mode).double()
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        y = m(xt)
        gy = rng.standard_normal(tuple(y.shape))
        y.backward(torch.from_numpy(gy))
        kw = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode=mode)
        assert_close(naive.conv_input_grad(x.shape, w, gy, **kw), xt.grad.numpy())
        assert_close(naive.conv_weight_grad(x, w.shape, gy, **kw), m.weight.grad.numpy())
        assert_close(naive.conv_bias_grad(gy, 2), m.bias.grad.numpy())
        for algorithm in ALGORITHMS:
            assert_close(fc.grad.conv2d_input(x.shape, w, gy, **kw, algorithm=algorithm),
                         xt.grad.numpy())
            assert_close(fc.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm=algorithm),
                         m.weight.grad.numpy())


# --- finite differences (float64) -----------------------------------------------------------
def _loss(x, w, b, gy, cfg, algorithm):
    return float(np.sum(fc.conv2d(x, w, b, **conv_kwargs(cfg), algorithm=algorithm) * gy))


def _fd_check(f, a, grad, rng, scale, h=0.5, n_coords=8, n_dirs=3):
    """Central differences of the scalar f at a, along random coordinates and directions.
    f is linear in a, so the differences are exact up to rounding (``scale`` bounds the
    magnitude of the summed terms)."""
    flat = a.reshape(-1)
    coords = rng.choice(flat.size, size=min(n_coords, flat.size), replace=False)
    for i in coords:
        e = np.zeros_like(a)
        e.reshape(-1)[i] = h
        fd = (f(a + e) - f(a - e)) / (2 * h)
        assert abs(fd - grad.reshape(-1)[i]) <= 1e-9 * scale, (i, fd, grad.reshape(-1)[i])
    for _ in range(n_dirs):
        v = rng.standard_normal(a.shape)
        fd = (f(a + h * v) - f(a - h * v)) / (2 * h)
        assert abs(fd - np.sum(grad * v)) <= 1e-9 * scale * (1 + np.abs(v).sum()), (fd, np.sum(grad * v))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_conv2d_grads_finite_differences(algorithm, data):
    cfg = data.draw(conv_configs(2, dtypes=(np.float64,), max_batch=2))
    x, w, b = make_arrays(cfg)
    gy = _grad_output(cfg, x, w)
    rng = np.random.default_rng(cfg["seed"])
    kw = conv_kwargs(cfg)
    gx = fc.grad.conv2d_input(x.shape, w, gy, **kw, algorithm=algorithm)
    gw = fc.grad.conv2d_weight(x, w.shape, gy, **kw, algorithm=algorithm)
    # bound on the sum of |terms| of the loss <conv2d(x, w) + b, gy>
    scale = 1.0 + gy.size * np.abs(gy).max() * (w[0].size * np.abs(x).max() * np.abs(w).max() + 1)
    _fd_check(lambda a: _loss(a, w, b, gy, cfg, algorithm), x, gx, rng, scale)
    _fd_check(lambda a: _loss(x, a, b, gy, cfg, algorithm), w, gw, rng, scale)
    if b is not None:
        # the bias gradient is the sum of grad_output over the batch and spatial axes
        gb = gy.sum(axis=(0, 2, 3)) if gy.ndim == 4 else gy.sum(axis=(1, 2))
        assert_close(gb, naive.conv_bias_grad(gy, 2))
        _fd_check(lambda a: _loss(x, w, a, gy, cfg, algorithm), b, gb, rng, scale)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bias_grad_is_sum_of_grad_output(nd, algorithm, rng):
    torch = None
    x = rng.standard_normal((2, 3) + (5,) * nd)
    w = rng.standard_normal((4, 3) + (2,) * nd)
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 4) + (4,) * nd)
    gb = gy.sum(axis=(0,) + tuple(range(2, nd + 2)))
    f = lambda bb: float(np.sum(CONV[nd](x, w, bb, algorithm=algorithm) * gy))  # noqa: E731
    for o in range(4):
        e = np.zeros(4)
        e[o] = 1.0
        assert abs((f(b + e) - f(b - e)) / 2 - gb[o]) <= 1e-9 * max(1.0, abs(f(b)))
    try:
        import torch
    except ImportError:
        pass
    if torch is not None:
        bt = torch.from_numpy(b.copy()).requires_grad_(True)
        conv = getattr(torch.nn.functional, f"conv{nd}d")
        conv(torch.from_numpy(x), torch.from_numpy(w), bt).backward(torch.from_numpy(gy))
        assert_close(gb, bt.grad.numpy())


# --- the transposed convolution -------------------------------------------------------------------
@st.composite
def transpose_configs(draw, adjoint=True):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin_t = groups * draw(st.integers(1, max(1, 4 // groups)))     # channels of y (conv's C_out)
    og = draw(st.integers(1, max(1, 4 // groups)))                 # conv's C_in / groups
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    limit = [s if adjoint else max(s, d) for s, d in zip(stride, dilation)]
    output_padding = tuple(draw(st.integers(0, lim - 1)) for lim in limit)
    y_size = tuple(draw(st.integers(1, 5)) for _ in range(2))
    p = naive.as_tuple(padding, 2)
    size = [(i - 1) * s - 2 * pp + d * (k - 1) + o + 1
            for i, s, pp, d, k, o in zip(y_size, stride, p, dilation, kernel, output_padding)]
    assume(all(v > 0 for v in size))
    return dict(N=draw(st.integers(1, 2)), y_shape=(cin_t,) + y_size, w_shape=(cin_t, og) + kernel,
                x_size=tuple(size), stride=stride, padding=padding, dilation=dilation, groups=groups,
                output_padding=output_padding, bias=draw(st.booleans()),
                dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
                seed=draw(st.integers(0, 2**32 - 1)))


def _transpose_arrays(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dt = cfg["dtype"]
    y = rng.uniform(-1, 1, (cfg["N"],) + cfg["y_shape"]).astype(dt)
    w = rng.uniform(-1, 1, cfg["w_shape"]).astype(dt)
    b = rng.uniform(-1, 1, cfg["w_shape"][1] * cfg["groups"]).astype(dt) if cfg["bias"] else None
    return y, w, b


def _tkw(cfg):
    return dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
                groups=cfg["groups"], dilation=cfg["dilation"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(cfg=transpose_configs(adjoint=True))
def test_conv_transpose2d_is_adjoint_of_conv2d(algorithm, cfg):
    y, w, _ = _transpose_arrays(cfg)
    rng = np.random.default_rng(cfg["seed"] + 7)
    x = rng.uniform(-1, 1, (cfg["N"], cfg["w_shape"][1] * cfg["groups"]) + cfg["x_size"])
    x = x.astype(cfg["dtype"])
    fwd = fc.conv2d(x, w, stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                    groups=cfg["groups"], algorithm=algorithm)
    assert fwd.shape == y.shape
    tr = fc.conv_transpose2d(y, w, **_tkw(cfg), algorithm=algorithm)
    assert tr.shape == x.shape and tr.dtype == cfg["dtype"]
    lhs = np.sum(fwd.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * tr)
    scale = max(1.0, float(np.sum(np.abs(fwd.astype(np.float64) * y))))
    assert abs(lhs - rhs) <= RTOL[cfg["dtype"]] * scale, (lhs, rhs)
    # and it is the conv2d input gradient
    gx = fc.grad.conv2d_input(x.shape, w, y, stride=cfg["stride"], padding=cfg["padding"],
                              dilation=cfg["dilation"], groups=cfg["groups"], algorithm=algorithm)
    assert_close(tr, gx, cfg["dtype"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(cfg=transpose_configs(adjoint=False))
def test_conv_transpose2d_matches_naive(algorithm, cfg):
    y, w, b = _transpose_arrays(cfg)
    want = naive.conv_transpose(y, w, b, **_tkw(cfg))
    got = fc.conv_transpose2d(y, w, b, **_tkw(cfg), algorithm=algorithm)
    assert got.dtype == cfg["dtype"]
    assert_close(got, want, cfg["dtype"])
    # unbatched
    assert_close(fc.conv_transpose2d(y[0], w, b, **_tkw(cfg), algorithm=algorithm), want[0],
                 cfg["dtype"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(cfg=transpose_configs(adjoint=False))
def test_conv_transpose2d_matches_torch(algorithm, cfg):
    torch = pytest.importorskip("torch")
    y, w, b = _transpose_arrays(cfg)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(y.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
        None if b is None else torch.from_numpy(b.astype(np.float64)), **_tkw(cfg)).numpy()
    got = fc.conv_transpose2d(y, w, b, **_tkw(cfg), algorithm=algorithm)
    assert_close(got, want, cfg["dtype"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,dilation,output_padding", [
    (2, 1, 1), ((2, 3), (1, 1), (1, 2)),
    (1, 2, 1), ((1, 2), (2, 3), (1, 2)),     # output_padding >= stride but < dilation (torch allows)
])
def test_conv_transpose2d_output_padding(algorithm, stride, dilation, output_padding, rng):
    y = rng.standard_normal((2, 4, 3, 4))
    w = rng.standard_normal((4, 3, 2, 3))
    b = rng.standard_normal(6)
    kw = dict(stride=stride, padding=1, output_padding=output_padding, groups=2, dilation=dilation)
    want = naive.conv_transpose(y, w, b, **kw)
    got = fc.conv_transpose2d(y, w, b, **kw, algorithm=algorithm)
    assert_close(got, want)
    try:
        import torch
    except ImportError:
        return
    assert_close(got, torch.nn.functional.conv_transpose2d(
        torch.from_numpy(y), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy())


def test_naive_transpose_matches_torch(rng):
    torch = pytest.importorskip("torch")
    y = rng.standard_normal((2, 4, 3, 4))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    for op in [(0, 0), (1, 1), (1, 0)]:
        kw = dict(stride=(2, 1), padding=(1, 0), output_padding=op, groups=2, dilation=(1, 2))
        want = torch.nn.functional.conv_transpose2d(torch.tensor(y), torch.tensor(w),
                                                    torch.tensor(b), **kw).numpy()
        assert_close(naive.conv_transpose(y, w, b, **kw), want)


# --- vs torch.nn.grad ---------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY
@given(data=st.data())
def test_grads_match_torch(algorithm, data):
    torch = pytest.importorskip("torch")
    cfg = data.draw(conv_configs(2, same=False, modes=("zeros",), unbatched=False))
    assume(not (isinstance(cfg["padding"], tuple) and isinstance(cfg["padding"][0], tuple)))
    assume(cfg["padding"] != "valid")
    x, w, _ = make_arrays(cfg)
    gy = _grad_output(cfg, x, w)
    tkw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
               groups=cfg["groups"])
    x64, w64, gy64 = (torch.from_numpy(a.astype(np.float64)) for a in (x, w, gy))
    want_x = torch.nn.grad.conv2d_input(x.shape, w64, gy64, **tkw).numpy()
    want_w = torch.nn.grad.conv2d_weight(x64, w.shape, gy64, **tkw).numpy()
    assert_close(fc.grad.conv2d_input(x.shape, w, gy, **tkw, algorithm=algorithm), want_x,
                 cfg["dtype"])
    assert_close(fc.grad.conv2d_weight(x, w.shape, gy, **tkw, algorithm=algorithm), want_w,
                 cfg["dtype"])


# --- dtypes, shapes, errors -----------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grad_dtypes(algorithm, rng):
    x = rng.integers(-2, 3, (2, 2, 5, 5))
    w = rng.integers(-2, 3, (3, 2, 2, 2))
    gy = rng.integers(-2, 3, (2, 3, 4, 4))
    gx = fc.grad.conv2d_input(x.shape, w, gy, algorithm=algorithm)
    gw = fc.grad.conv2d_weight(x, w.shape, gy, algorithm=algorithm)
    assert gx.dtype == np.float64 and gw.dtype == np.float64
    assert_close(gx, naive.conv_input_grad(x.shape, w, gy))
    assert_close(gw, naive.conv_weight_grad(x, w.shape, gy))
    with pytest.raises(TypeError, match="complex"):
        fc.grad.conv2d_input(x.shape, w + 0j, gy, algorithm=algorithm)
    with pytest.raises(TypeError, match="complex"):
        fc.grad.conv2d_weight(x + 0j, w.shape, gy, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grad_float16_computed_in_float32_returned_float16(algorithm, rng):
    x = rng.integers(-2, 3, (2, 2, 5, 5))
    w = rng.integers(-2, 3, (3, 2, 2, 2))
    gy = rng.integers(-2, 3, (2, 3, 4, 4))
    gx16 = fc.grad.conv2d_input(x.shape, w.astype(np.float16), gy.astype(np.float16),
                                algorithm=algorithm)
    gw16 = fc.grad.conv2d_weight(x.astype(np.float16), w.shape, gy.astype(np.float16),
                                 algorithm=algorithm)
    assert gx16.dtype == np.float16 and gw16.dtype == np.float16
    assert_close(gx16, naive.conv_input_grad(x.shape, w, gy), np.float16)
    assert_close(gw16, naive.conv_weight_grad(x, w.shape, gy), np.float16)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grad_empty_batch(nd, algorithm):
    x = np.zeros((0, 4) + (5,) * nd)
    w = np.ones((2, 2) + (2,) * nd)
    gy = np.zeros((0, 2) + (4,) * nd)
    gx = GRAD_INPUT[nd](x.shape, w, gy, groups=2, algorithm=algorithm)
    gw = GRAD_WEIGHT[nd](x, w.shape, gy, groups=2, algorithm=algorithm)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert not gw.any()


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_grad_bad_input(nd):
    x = np.ones((1, 4) + (5,) * nd)
    w = np.ones((2, 4) + (3,) * nd)
    gy = np.ones((1, 2) + (3,) * nd)
    gi, gwf = GRAD_INPUT[nd], GRAD_WEIGHT[nd]
    bad_gy = np.ones((1, 2) + (4,) * nd)
    with pytest.raises(ValueError, match=r"grad_output.*" + str((1, 2) + (4,) * nd).replace("(", r"\(").replace(")", r"\)")):
        gi(x.shape, w, bad_gy)
    with pytest.raises(ValueError, match=r"grad_output"):
        gwf(x, w.shape, bad_gy)
    with pytest.raises(ValueError, match=r"input_size"):
        gi((4,) + (5,) * (nd - 1), w, gy) if nd > 1 else gi((5,) * 4, w, gy)
    with pytest.raises(ValueError, match=r"weight_size"):
        gwf(x, (2, 4), gy)
    for bad, exc in [(5.5, TypeError), (-5, ValueError), (True, TypeError)]:
        with pytest.raises(exc, match=r"input_size"):
            gi((1, 4, bad) + (5,) * (nd - 1), w, gy)
        with pytest.raises(exc, match=r"weight_size"):
            gwf(x, (2, 4, bad) + (3,) * (nd - 1), gy)
    with pytest.raises(TypeError, match=r"input_size.*got 5"):
        gi(5, w, gy)
    with pytest.raises(TypeError, match=r"weight_size.*got 3"):
        gwf(x, 3, gy)
    with pytest.raises(ValueError, match=r"weight has 3 input channels per group but (input|x) has 4"):
        gi(x.shape, np.ones((2, 3) + (3,) * nd), gy)
    with pytest.raises(ValueError, match=r"weight has 3 input channels per group but (input|x) has 4"):
        gwf(x, (2, 3) + (3,) * nd, gy)
    with pytest.raises(ValueError, match=r"stride"):
        gi(x.shape, w, gy, stride=0)
    with pytest.raises(ValueError, match=r"algorithm"):
        gwf(x, w.shape, gy, algorithm="nope")
    with pytest.raises(ValueError, match=r"padding.*" + str(x.shape).replace("(", r"\(").replace(")", r"\)")):
        gi(x.shape, w, gy, padding=5, padding_mode="reflect")


def test_conv_transpose2d_bad_input():
    y = np.ones((1, 4, 3, 3))
    w = np.ones((4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"output_padding"):
        fc.conv_transpose2d(y, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"padding.*'same'"):
        fc.conv_transpose2d(y, w, padding="same")
    with pytest.raises(ValueError, match=r"\(3, 2, 2, 2\).*\(1, 4, 3, 3\)"):
        fc.conv_transpose2d(y, np.ones((3, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"bias.*\(3,\)"):
        fc.conv_transpose2d(y, w, np.ones(3))
    with pytest.raises(ValueError, match=r"input.*\(3, 3\)"):
        fc.conv_transpose2d(np.ones((3, 3)), w)
    with pytest.raises(ValueError, match=r"weight.*\(4, 2, 2\)"):
        fc.conv_transpose2d(y, np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match=r"groups"):
        fc.conv_transpose2d(y, w, groups=3)
    with pytest.raises(ValueError, match=r"stride"):
        fc.conv_transpose2d(y, w, stride=0)
    with pytest.raises(ValueError, match=r"algorithm"):
        fc.conv_transpose2d(y, w, algorithm="nope")
    with pytest.raises(TypeError, match=r"complex"):
        fc.conv_transpose2d(y + 1j, w)
    # messages about the caller's arrays, not the matching forward problem
    with pytest.raises(ValueError, match=r"zero spatial size.*\(1, 4, 0, 3\)"):
        fc.conv_transpose2d(np.ones((1, 4, 0, 3)), w)
    with pytest.raises(ValueError, match=r"weight is empty.*\(4, 0, 2, 2\)"):
        fc.conv_transpose2d(y, np.ones((4, 0, 2, 2)))
    with pytest.raises(ValueError, match=r"input channels \(4, input shape \(1, 4, 3, 3\)\).*groups=3"):
        fc.conv_transpose2d(y, w, groups=3)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv_transpose2d_result_dtype_includes_the_bias(algorithm, rng):
    y = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(3)
    got = fc.conv_transpose2d(y, w, b, algorithm=algorithm)
    want = fc.conv_transpose2d(y.astype(np.float64), w.astype(np.float64), b, algorithm=algorithm)
    assert got.dtype == np.float64 == fc.conv2d(y, w.transpose(1, 0, 2, 3), b).dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert fc.conv_transpose2d(y, w, b.astype(np.float16), algorithm=algorithm).dtype == np.float32
